"""Reading a connection's PROXY header, in the connection's task, before anything else.

Theory of operation
-------------------
With ``Listener(..., proxy_protocol=True)`` every connection comes from a load
balancer, which first sends one PROXY header (parsed by :mod:`._proxy`) and
then relays the client's bytes. The header is plaintext even on a TLS port, so
it is read off the *transport*, under the TLS layer, before the handshake.

Reads are ordinary-sized, so the chunk that completes the header usually
carries the first bytes of the client's stream too (a ClientHello, a
request). Nothing of it may be lost: :class:`PrefixedStream` hands those bytes
out first and then reads on from the transport, and a TLS stream is rebuilt
over it (the listener's :class:`trio.SSLStream` has not done any I/O yet, so
nothing is lost by replacing it). When the header ends exactly at a chunk's
end, as it does with HAProxy, the streams are used as they are.

A header that is missing, malformed or late is the peer's fault: one INFO
line, the connection is dropped and counted in ``stats.errors``, and no
callback runs, exactly like a failed TLS handshake.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._config import PROXY_HEADER_TIMEOUT, RECEIVE_SIZE
from ._errors import STREAM_ERRORS, FramingError, stream_error
from ._proxy import ProxyHeader, ProxyHeaderParser
from ._streams import Bytes, Endpoints, endpoints, peer_name, ssl_stream_of

if TYPE_CHECKING:
    import socket

    from ._connection import Settings

__all__ = ["PrefixedStream", "Proxied", "receive_proxy_header"]

log = logging.getLogger("trio_tcp")


class PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read: they come out first, then the rest.

    Args:
        transport_stream: the stream to read on from, and to send to.
        prefix: the bytes to return before reading from ``transport_stream``.
    """

    __slots__ = ("_prefix", "transport_stream")

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport_stream = transport_stream
        self._prefix = prefix

    @property
    def socket(self) -> socket.socket | None:
        """The transport's socket, so :func:`~trio_tcp._streams.endpoints` still finds it."""
        sock: socket.socket | None = getattr(self.transport_stream, "socket", None)
        return sock

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return (part of) the prefix while any is left, then read from the transport."""
        prefix = self._prefix
        if not prefix:
            return await self.transport_stream.receive_some(max_bytes)
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        # Taken between a cancellation point and a shielded yield: a cancelled
        # receive loses nothing, and two receivers cannot both get the prefix.
        await checkpoint_if_cancelled()
        size = len(prefix) if max_bytes is None else max_bytes
        data, self._prefix = prefix[:size], prefix[size:]
        await cancel_shielded_checkpoint()
        return data

    async def send_all(self, data: Bytes) -> None:
        """Send to the transport."""
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait on the transport."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Close the transport; an unread prefix is dropped."""
        self._prefix = b""
        await self.transport_stream.aclose()


@dataclass(frozen=True, slots=True)
class Proxied:
    """A connection after its PROXY header: the stream to go on with, and who is on it."""

    stream: trio.abc.Stream
    endpoints: Endpoints
    header: ProxyHeader


async def receive_proxy_header(stream: trio.abc.Stream, settings: Settings) -> Proxied | None:
    """Read the PROXY header at the start of ``stream`` (under its TLS layer, if any).

    Waits ``settings.handshake_timeout`` on a TLS stream (``None``: for ever,
    as for the handshake), else :data:`~trio_tcp._config.PROXY_HEADER_TIMEOUT`.

    Returns:
        The stream to serve (its first bytes are those that followed the
        header) and the endpoints the header gave (the socket's own for
        ``LOCAL`` and ``UNKNOWN``); ``None`` if the connection must be dropped,
        which is logged and counted here. The caller closes ``stream`` then.

    Cancellation (a listener stop) propagates; nothing is logged for it.
    """
    tls = ssl_stream_of(stream)
    transport = stream if tls is None else tls.transport_stream
    timeout = PROXY_HEADER_TIMEOUT if tls is None else settings.handshake_timeout
    parser = ProxyHeaderParser()
    parsed = None
    problem = ""
    with trio.move_on_after(math.inf if timeout is None else timeout):
        try:
            while parsed is None:
                data = await transport.receive_some(RECEIVE_SIZE)
                if not data:
                    problem = "incomplete: the peer closed the connection"
                    break
                parsed = parser.feed(data)
        except FramingError as exc:
            problem = f"rejected: {exc}"
        except STREAM_ERRORS as exc:
            problem = f"failed: {stream_error(exc)}"
    if parsed is None:
        if not problem:
            problem = f"timed out after {timeout:g} s"
        log.info("PROXY header from %s %s; connection dropped", peer_name(transport), problem)
        settings.counters.errors += 1
        return None
    header, rest = parsed
    served: trio.abc.Stream = stream
    if rest:
        served = PrefixedStream(transport, rest)
        if tls is not None:
            served = trio.SSLStream(served, tls.context, server_side=True)
    if header.source is None or header.destination is None:
        ends = endpoints(transport)
    else:
        ends = Endpoints(*header.source, *header.destination)
    return Proxied(served, ends, header)
