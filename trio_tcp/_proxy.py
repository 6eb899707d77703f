"""Sans-IO parser of the PROXY protocol header (HAProxy's spec, versions 1 and 2).

Theory of operation
-------------------
A load balancer that speaks the PROXY protocol opens its connection to us
with one header naming the real client, then relays the client's bytes
unchanged. The header is plaintext even in front of TLS: it comes before the
ClientHello. :class:`ProxyHeaderParser` takes the connection's first bytes in
whatever chunks they arrive and, once the header is complete, returns it with
the bytes that followed it in the same chunk: those are the start of the
application stream (or of the TLS handshake) and must be delivered, not lost.

The version is told from the first byte: ``P`` starts a version 1 text line
(``PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\\r\\n``), ``\\r`` the 12-byte
version 2 signature. Anything else is rejected at once, so a client that
connects directly (a ClientHello, an HTTP request) fails on its first byte
instead of waiting for a timeout.

Bounds: a version 1 line is at most 107 bytes (the spec's own limit). A
version 2 header announces its length in 16 bits, so it may be up to
16 + 65535 bytes, and the spec lets a sender fill that with TLVs; the parser
accepts every such header but never *stores* the TLVs: it keeps the fixed
part and the address block (:data:`MAX_BUFFERED` bytes at most), and counts
its way past the rest. So no peer can make one connection hold more than a
few hundred bytes of header, whatever it announces.

Nothing here performs I/O or imports trio.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ._errors import FramingError

__all__ = [
    "MAX_BUFFERED",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyInfo",
]

#: The spec's limit on a version 1 line, ``\r\n`` included: the longest valid
#: line (``PROXY UNKNOWN`` with two full IPv6 addresses and ports) fits.
V1_MAX_LENGTH = 107
_V1_PREFIX = b"PROXY "
#: The first 12 bytes of every version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# Signature, version/command, family/protocol, 2-byte length.
_V2_FIXED = 16
# Address block sizes by family/protocol byte (spec section 2.2): UNSPEC,
# TCP4, UDP4, TCP6, UDP6, UNIX stream, UNIX datagram. Other values are invalid.
_V2_ADDRESS_SIZES = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
#: The most header bytes the parser ever holds: a version 2 fixed part and its
#: largest address block (two 108-byte AF_UNIX paths). TLVs after it are
#: skipped without being stored, and a version 1 line is shorter.
MAX_BUFFERED = _V2_FIXED + max(_V2_ADDRESS_SIZES.values())
_LOCAL, _PROXY = 0x0, 0x1


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader:
    """What a PROXY header said about the connection it opened.

    Attributes:
        version: 1 (text) or 2 (binary).
        command: ``"PROXY"`` (a relayed client connection) or ``"LOCAL"`` (a
            version 2 connection of the load balancer's own, such as a health
            check).
        source: the real client's ``(host, port)``; ``None`` when the header
            gives no address (``PROXY UNKNOWN``, a version 2 ``LOCAL`` command
            such as a load balancer's health check, the ``UNSPEC`` family, or
            a datagram protocol), in which case the socket's own addresses
            stand. An AF_UNIX source is its path, with port 0.
        destination: the address the client connected to, as ``source``.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    command: str = "PROXY"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyInfo:
    """How a connection reached the listener through a load balancer: ``caller.proxy``.

    ``caller.remote_host`` / ``remote_port`` already give the real client's
    address from the header; this tells the rest, so a service can tell a
    load balancer's health check (``command == "LOCAL"``, or no payload at
    all) from a client, and log which balancer relayed a connection.

    Attributes:
        version: the PROXY protocol version of the header, 1 or 2.
        command: ``"PROXY"`` (a relayed client) or ``"LOCAL"`` (the load
            balancer's own connection, e.g. a health check; version 2 only).
        source: the client's ``(host, port)`` as the header gave it, or
            ``None`` when it gave none (``LOCAL``, ``PROXY UNKNOWN``).
        destination: the address the client connected to, or ``None``.
        proxy_host: the TCP peer of the connection: the load balancer.
        proxy_port: its port.
    """

    version: int
    command: str
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    proxy_host: str
    proxy_port: int


class ProxyHeaderParser:
    """Parses the PROXY header at the start of one connection; bytes in, header out.

    ::

        parser = ProxyHeaderParser()
        while (parsed := parser.feed(await stream.receive_some())) is None:
            ...  # (a real reader also stops at end of stream)
        header, rest = parsed   # rest: the first bytes of the application stream

    Buffers at most :data:`MAX_BUFFERED` bytes, whatever the header announces.
    """

    __slots__ = ("_buffer", "_header", "_skip")

    def __init__(self) -> None:
        self._buffer = bytearray()
        # While skipping a version 2 header's TLVs: the header, and bytes left to skip.
        self._header: ProxyHeader | None = None
        self._skip = 0

    def pending(self) -> int:
        """Return how many bytes of an unfinished header are held (at most :data:`MAX_BUFFERED`)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, bytes] | None:
        """Take the connection's next bytes; return ``(header, rest)`` once the header is complete.

        Returns:
            ``None`` while more bytes are needed; then the header and every
            byte that followed it in ``data`` (possibly ``b""``). The parser is
            then finished: feeding it again is a programming error.

        Raises:
            FramingError: the bytes are not a valid PROXY header; the message
                says what was wrong. The connection must be dropped.
            RuntimeError: the header was already returned.
        """
        data = bytes(data)
        if self._header is not None:
            if self._skip == 0:
                raise RuntimeError("the PROXY header was already parsed")
            return self._skipped(self._header, data)
        buffer = self._buffer
        taken = MAX_BUFFERED - len(buffer)
        buffer += data[:taken]
        later = data[taken:]
        parsed = self._v2() if buffer.startswith(V2_SIGNATURE[:1]) else self._v1()
        if parsed is None:
            # Incomplete, so the buffer cannot be full: a full buffer always
            # holds a whole version 1 line or version 2 address block.
            assert not later
            return None
        header, end = parsed
        if end <= len(buffer):
            rest = bytes(buffer[end:]) + later if end < len(buffer) else later
            self._finish(header, 0)
            return header, rest
        # A version 2 header longer than the buffer: its TLVs go on in `later`.
        self._finish(header, end - len(buffer))
        return self._skipped(header, later)

    def _finish(self, header: ProxyHeader, skip: int) -> None:
        self._header, self._skip = header, skip
        self._buffer = bytearray()  # free it: the parser is done with it

    def _skipped(self, header: ProxyHeader, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """Skip TLV bytes still due in ``data``; the header once they are all past."""
        if len(data) < self._skip:
            self._skip -= len(data)
            return None
        rest = data[self._skip :]
        self._skip = 0
        return header, rest

    # -- version 1: one text line ------------------------------------------------------

    def _v1(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        if not buffer.startswith(_V1_PREFIX[: len(buffer)]):
            raise FramingError(
                f"expected a PROXY protocol header, got {bytes(buffer[:16])!r}:"
                " the peer is not a load balancer speaking the PROXY protocol"
            )
        end = buffer.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if b"\n" in buffer[:V1_MAX_LENGTH]:
                raise FramingError("PROXY v1 header ends with \\n instead of \\r\\n")
            if len(buffer) >= V1_MAX_LENGTH:
                raise FramingError(
                    f"PROXY v1 header without \\r\\n in its first {V1_MAX_LENGTH} bytes"
                    " (the spec's limit)"
                )
            return None
        return _parse_v1(bytes(buffer[:end])), end + 2

    # -- version 2: binary ---------------------------------------------------------

    def _v2(self) -> tuple[ProxyHeader, int] | None:
        buffer = self._buffer
        if not buffer.startswith(V2_SIGNATURE[: len(buffer)]):
            raise FramingError(
                f"expected a PROXY protocol header, got {bytes(buffer[:16])!r}:"
                " neither a v1 line nor the v2 signature"
            )
        if len(buffer) < _V2_FIXED:
            return None
        version_command, family, length = (
            buffer[12],
            buffer[13],
            int.from_bytes(buffer[14:16], "big"),
        )
        if version_command >> 4 != 2:
            raise FramingError(f"PROXY v2 header with version {version_command >> 4}, not 2")
        command = version_command & 0x0F
        end = _V2_FIXED + length
        if command == _LOCAL:
            # A connection of the load balancer's own (a health check): the
            # spec says to use the real addresses and ignore the block.
            return ProxyHeader(version=2, source=None, destination=None, command="LOCAL"), end
        if command != _PROXY:
            raise FramingError(f"PROXY v2 header with unknown command {command:#x}")
        size = _V2_ADDRESS_SIZES.get(family)
        if size is None:
            raise FramingError(f"PROXY v2 header with unknown address family {family:#04x}")
        if length < size:
            raise FramingError(
                f"PROXY v2 header too short: {length} bytes for a {size}-byte address block"
                f" (family {family:#04x})"
            )
        if len(buffer) < _V2_FIXED + size:
            return None
        block = bytes(buffer[_V2_FIXED : _V2_FIXED + size])
        source, destination = _v2_addresses(family, block)
        return ProxyHeader(version=2, source=source, destination=destination), end


def _parse_v1(line: bytes) -> ProxyHeader:
    """Parse a version 1 line, ``\\r\\n`` excluded."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise FramingError(f"PROXY v1 header is not ASCII: {line!r}") from None
    parts = text.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        # The proxy could not tell (another protocol); the rest of the line is ignored.
        return ProxyHeader(version=1, source=None, destination=None)
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise FramingError(
            f"PROXY v1 header must be 'PROXY TCP4|TCP6 src dst sport dport'"
            f" or 'PROXY UNKNOWN', got {text!r}"
        )
    _, protocol, source, destination, source_port, destination_port = parts
    version = 4 if protocol == "TCP4" else 6
    return ProxyHeader(
        version=1,
        source=(_v1_host(source, version), _v1_port(source_port)),
        destination=(_v1_host(destination, version), _v1_port(destination_port)),
    )


def _v1_host(text: str, version: int) -> str:
    if "%" in text:  # an IPv6 zone ("fe80::1%eth0") names an interface of the sender
        raise FramingError(f"PROXY v1 header: {text!r} carries an IPv6 zone")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise FramingError(f"PROXY v1 header: {text!r} is not an IP address") from None
    if address.version != version:
        raise FramingError(f"PROXY v1 header: {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    # Not int() alone: it also takes "+80", " 80", "8_0" and non-ASCII digits.
    # The spec writes ports without leading zeros; "080" is malformed, not 80.
    well_formed = text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")
    if not (well_formed and len(text) <= 5 and int(text) <= 65535):
        raise FramingError(f"PROXY v1 header: {text!r} is not a port number (0-65535)")
    return int(text)


def _v2_addresses(
    family: int, block: bytes
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """Decode a version 2 address block for a PROXY command."""
    if family == 0x11:  # TCP over IPv4
        return (
            (str(ipaddress.IPv4Address(block[0:4])), int.from_bytes(block[8:10], "big")),
            (str(ipaddress.IPv4Address(block[4:8])), int.from_bytes(block[10:12], "big")),
        )
    if family == 0x21:  # TCP over IPv6
        return (
            (str(ipaddress.IPv6Address(block[0:16])), int.from_bytes(block[32:34], "big")),
            (str(ipaddress.IPv6Address(block[16:32])), int.from_bytes(block[34:36], "big")),
        )
    if family == 0x31:  # a UNIX stream socket: paths, no ports
        return (_unix_path(block[:108]), 0), (_unix_path(block[108:216]), 0)
    # UNSPEC, or a datagram protocol, which says nothing about this TCP
    # connection: keep the socket's addresses, as HAProxy does.
    return None, None


def _unix_path(raw: bytes) -> str:
    """An AF_UNIX address; an abstract one (leading NUL) is shown as ``@name``."""
    if raw[:1] == b"\0":
        return "@" + raw[1:].rstrip(b"\0").decode("utf-8", "backslashreplace")
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
