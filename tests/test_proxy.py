"""PROXY protocol v1/v2 and ``reuse_port``: the sans-IO parser, then real listeners.

The parser is tested as plain functions, with hypothesis over every chunking
of a valid header followed by application bytes (the same header, and exactly
those bytes after it, whatever the chunks), over TLVs of any size (skipped,
never buffered) and over garbage (always a ``FramingError``, never another
exception). Then end to end over loopback: a raw trio client plays the load
balancer in front of a ``Listener(0, local_host="127.0.0.1", proxy_protocol=True)``,
in plain TCP and TLS; and two listeners share one port with ``reuse_port``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually, port_of, receive_exactly
from hypothesis import given
from hypothesis import strategies as st

import trio_tcp
from trio_tcp import CertKey, ListenerSecureSocket
from trio_tcp._proxy import (
    MAX_BUFFERED,
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
)
from trio_tcp._streams import TransportView

LOCAL = "127.0.0.1"
#: A short PROXY header / handshake timeout for the tests that wait for it (real time).
SHORT = 0.3

# -- building headers --------------------------------------------------------------------


def v1(
    protocol: str = "TCP4", src: str = "", dst: str = "", sport: int = 0, dport: int = 0
) -> bytes:
    if protocol == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n"
    return f"PROXY {protocol} {src} {dst} {sport} {dport}\r\n".encode()


def v2(
    command: int = 1,
    family: int = 0x11,
    addresses: bytes = b"",
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    body = addresses + tlvs
    return (
        V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack(">H", len(body)) + body
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A v2 address block for two IPv4 or two IPv6 addresses."""
    packed = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    return packed + struct.pack(">HH", sport, dport)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack(">H", len(value)) + value


def parse_whole(data: bytes) -> tuple[ProxyHeader, bytes]:
    parsed = ProxyHeaderParser().feed(data)
    assert parsed is not None
    return parsed


# -- the parser: valid headers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "source", "destination"),
    [
        pytest.param(
            v1("TCP4", "192.0.2.1", "198.51.100.2", 56324, 443),
            ("192.0.2.1", 56324),
            ("198.51.100.2", 443),
            id="v1-tcp4",
        ),
        pytest.param(
            v1("TCP6", "2001:db8::1", "2001:db8:0:0::2", 65535, 0),
            ("2001:db8::1", 65535),
            ("2001:db8::2", 0),  # normalised
            id="v1-tcp6",
        ),
        pytest.param(v1("UNKNOWN"), None, None, id="v1-unknown"),
        pytest.param(
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            None,
            None,
            id="v1-unknown-with-anything-after",
        ),
        pytest.param(
            v2(addresses=inet("192.0.2.1", "198.51.100.2", 56324, 443)),
            ("192.0.2.1", 56324),
            ("198.51.100.2", 443),
            id="v2-tcp4",
        ),
        pytest.param(
            v2(family=0x21, addresses=inet("2001:db8::1", "::1", 1, 2)),
            ("2001:db8::1", 1),
            ("::1", 2),
            id="v2-tcp6",
        ),
        pytest.param(
            v2(
                family=0x31,
                addresses=b"/run/a.sock".ljust(108, b"\0") + b"\0abstract".ljust(108, b"\0"),
            ),
            ("/run/a.sock", 0),
            ("@abstract", 0),
            id="v2-unix",
        ),
        pytest.param(
            v2(command=0, family=0x11, addresses=inet("192.0.2.1", "198.51.100.2", 1, 2)),
            None,
            None,
            id="v2-local-ignores-addresses",
        ),
        pytest.param(v2(command=0, family=0x00), None, None, id="v2-local-empty"),
        pytest.param(
            v2(command=0, family=0x77, addresses=b"junk"), None, None, id="v2-local-any-family"
        ),
        pytest.param(v2(family=0x00), None, None, id="v2-unspec"),
        pytest.param(
            v2(family=0x12, addresses=inet("192.0.2.1", "198.51.100.2", 1, 2)),
            None,
            None,
            id="v2-udp4-ignored",
        ),
        pytest.param(
            v2(
                addresses=inet("192.0.2.1", "198.51.100.2", 1, 2),
                tlvs=tlv(0x01, b"h2") + tlv(0x04, b"") + tlv(0xE0, b"x" * 300),
            ),
            ("192.0.2.1", 1),
            ("198.51.100.2", 2),
            id="v2-tlvs-skipped",
        ),
    ],
)
def test_valid_headers(
    wire: bytes, source: tuple[str, int] | None, destination: tuple[str, int] | None
) -> None:
    header, rest = parse_whole(wire + b"GET / HTTP/1.1\r\n")
    assert header.source == source
    assert header.destination == destination
    assert header.version == (1 if wire.startswith(b"PROXY") else 2)
    assert rest == b"GET / HTTP/1.1\r\n"


def test_nothing_after_the_header_is_an_empty_rest() -> None:
    assert parse_whole(v1("UNKNOWN")) == (
        ProxyHeader(version=1, source=None, destination=None),
        b"",
    )


def test_longest_v1_line_fits_the_limit() -> None:
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = v1("TCP6", full, full, 65535, 65535)
    assert len(line) == 104 <= V1_MAX_LENGTH
    header, rest = parse_whole(line + b"x")
    assert header.source == (full, 65535)
    assert rest == b"x"


def test_feeding_after_the_header_is_a_programming_error() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(v1("UNKNOWN")) is not None
    with pytest.raises(RuntimeError, match="already parsed"):
        parser.feed(b"more")


def test_empty_feeds_need_more() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"") is None
    assert parser.feed(b"PRO") is None
    assert parser.feed(b"") is None
    assert parser.feed(b"XY UNKNOWN\r\nab") == (
        ProxyHeader(version=1, source=None, destination=None),
        b"ab",
    )


# -- the parser: garbage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        pytest.param(
            b"\x16\x03\x01\x02\x00", "expected a PROXY protocol header", id="tls-client-hello"
        ),
        pytest.param(b"GET / HTTP/1.1\r\n", "expected a PROXY protocol header", id="http"),
        pytest.param(b"PROXY\r\n", "expected a PROXY protocol header", id="v1-no-space"),
        pytest.param(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", "expected", id="v1-lowercase"),
        pytest.param(b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "TCP4|TCP6", id="v1-protocol"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "TCP4|TCP6", id="v1-missing-field"),
        pytest.param(b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", "TCP4|TCP6", id="v1-double-space"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", "TCP4|TCP6", id="v1-trailing-space"),
        pytest.param(b"PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n", "not an IP address", id="v1-bad-ip"),
        pytest.param(
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "not an IPv4 address", id="v1-family-mismatch"
        ),
        pytest.param(
            b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "not an IPv6 address", id="v1-family-mismatch-6"
        ),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "not a port", id="v1-port-range"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n", "not a port", id="v1-port-sign"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 080 2\r\n", "not a port", id="v1-port-zero-led"),
        pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "IPv6 zone", id="v1-ipv6-zone"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 \xd9\xa1 2\r\n", "not ASCII", id="v1-non-ascii"),
        pytest.param(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "\\\\n instead of", id="v1-bare-lf"),
        pytest.param(b"PROXY UNKNOWN " + b"x" * 100, "first 107 bytes", id="v1-too-long"),
        pytest.param(
            b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), "neither a v1 line nor", id="v2-signature"
        ),
        pytest.param(v2(version=1), "version 1, not 2", id="v2-version"),
        pytest.param(v2(command=2), "unknown command", id="v2-command"),
        pytest.param(
            v2(family=0x13, addresses=bytes(12)), "unknown address family", id="v2-family"
        ),
        pytest.param(
            v2(family=0x41, addresses=bytes(12)), "unknown address family", id="v2-family-af"
        ),
        pytest.param(v2(family=0x11, addresses=bytes(11)), "too short", id="v2-short-inet"),
        pytest.param(v2(family=0x21, addresses=bytes(12)), "too short", id="v2-short-inet6"),
    ],
)
def test_garbage_is_a_framing_error(wire: bytes, message: str) -> None:
    with pytest.raises(trio_tcp.FramingError, match=message):
        ProxyHeaderParser().feed(wire + b"\0" * 300)


def test_garbage_is_rejected_on_its_first_byte() -> None:
    # A client that talks to the port directly fails at once, not at the timeout.
    with pytest.raises(trio_tcp.FramingError):
        ProxyHeaderParser().feed(b"\x16")
    parser = ProxyHeaderParser()
    assert parser.feed(b"\r\n\r\n") is None
    with pytest.raises(trio_tcp.FramingError):
        parser.feed(b"X")


@given(st.binary(max_size=400))
def test_any_bytes_parse_need_more_or_raise_framing_error(data: bytes) -> None:
    parser = ProxyHeaderParser()
    with contextlib.suppress(trio_tcp.FramingError):
        parser.feed(data)
    assert parser.pending() <= MAX_BUFFERED


# -- the parser: every chunking ----------------------------------------------------------------

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    """A valid header on the wire, and what it must parse to."""
    kind = draw(st.sampled_from(["v1-4", "v1-6", "v1-unknown", "v2-4", "v2-6", "v2-local"]))
    six = kind.endswith("6")
    src, dst = draw(ipv6 if six else ipv4), draw(ipv6 if six else ipv4)
    sport, dport = draw(ports), draw(ports)
    expected = ProxyHeader(
        version=1 if kind.startswith("v1") else 2, source=(src, sport), destination=(dst, dport)
    )
    if kind == "v1-unknown":
        return v1("UNKNOWN"), ProxyHeader(version=1, source=None, destination=None)
    if kind.startswith("v1"):
        return v1("TCP6" if six else "TCP4", src, dst, sport, dport), expected
    tlvs = b"".join(
        draw(st.lists(st.builds(tlv, st.integers(0, 255), st.binary(max_size=64)), max_size=4))
    )
    if kind == "v2-local":
        return v2(command=0, family=0x00, tlvs=tlvs), ProxyHeader(
            version=2, source=None, destination=None, command="LOCAL"
        )
    return v2(
        family=0x21 if six else 0x11, addresses=inet(src, dst, sport, dport), tlvs=tlvs
    ), expected


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(headers(), st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=40))
def test_any_chunking_gives_the_same_header_and_the_exact_rest(
    header: tuple[bytes, ProxyHeader], payload: bytes, cuts: list[int]
) -> None:
    wire, expected = header
    parser = ProxyHeaderParser()
    chunks = chunked(wire + payload, cuts)
    for index, chunk in enumerate(chunks):
        parsed = parser.feed(chunk)
        assert parser.pending() <= MAX_BUFFERED
        if parsed is not None:
            got, rest = parsed
            assert got == expected
            assert rest + b"".join(chunks[index + 1 :]) == payload
            return
    pytest.fail("the header was never complete")


@given(st.integers(0, 65535 - 12), st.lists(st.integers(0, 70_000), max_size=10))
def test_tlvs_up_to_the_spec_limit_are_skipped_without_buffering(
    size: int, cuts: list[int]
) -> None:
    # Any length the 16-bit field can announce is accepted; none of it is kept.
    wire = v2(addresses=inet("192.0.2.1", "198.51.100.2", 7, 8), tlvs=b"\xee" * size)
    parser = ProxyHeaderParser()
    chunks = chunked(wire + b"payload", cuts)
    for index, chunk in enumerate(chunks):
        parsed = parser.feed(chunk)
        assert parser.pending() <= MAX_BUFFERED
        if parsed is not None:
            assert parsed[0].source == ("192.0.2.1", 7)
            assert parsed[1] + b"".join(chunks[index + 1 :]) == b"payload"
            return
    pytest.fail("the header was never complete")


# -- TransportView: read-ahead bytes come first -----------------------------------------


@pytest.mark.trio
async def test_prefixed_stream_returns_the_prefix_first_then_reads_on() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        stream = TransportView(right, b"abcdef")
        await left.send_all(b"ghi")
        assert await stream.receive_some(4) == b"abcd"
        assert await stream.receive_some() == b"ef"
        assert await stream.receive_some(10) == b"ghi"
        await stream.send_all(b"back")
        assert await left.receive_some() == b"back"
        await stream.wait_send_all_might_not_block()
        with pytest.raises(ValueError, match="max_bytes"):
            await TransportView(right, b"x").receive_some(0)
        await stream.aclose()
        assert await left.receive_some() == b""


@pytest.mark.trio
async def test_a_cancelled_receive_loses_no_prefix() -> None:
    with trio.fail_after(5):
        _, right = trio.testing.memory_stream_pair()
        stream = TransportView(right, b"abc")
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive_some()
        assert scope.cancelled_caught
        assert await stream.receive_some() == b"abc"


# -- end to end: a raw client plays the load balancer ---------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_crt: Path
    server_key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("proxy-tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    paths = Certs(directory / "ca.pem", directory / "server.crt", directory / "server.key")
    paths.ca.write_bytes(ca.cert_pem.bytes())
    paths.server_crt.write_bytes(server.cert_chain_pems[0].bytes())
    paths.server_key.write_bytes(server.private_key_pem.bytes())
    return paths


def server_tls(certs: Certs, **options: Any) -> ListenerSecureSocket:
    return ListenerSecureSocket(
        key=CertKey(cert_file=certs.server_crt, key_file=certs.server_key), **options
    )


class Recorder(trio_tcp.Service):
    """Records callers and received bytes; echoes."""

    def __init__(self) -> None:
        self.callers: list[trio_tcp.Caller] = []
        self.received: list[bytes] = []
        self.closes = 0

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.callers.append(caller)
        return _Echo(self)


class _Echo(trio_tcp.ConnectionService):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def on_bytes(self, data: bytes) -> bytes:
        self.recorder.received.append(data)
        return data

    async def on_close(self) -> None:
        self.recorder.closes += 1


@asynccontextmanager
async def serving(service: trio_tcp.Service, **options: Any) -> AsyncIterator[trio_tcp.Listener]:
    options.setdefault("local_host", LOCAL)
    listener = trio_tcp.Listener(0, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.immediate_stop()


async def closed_by_server(stream: trio.abc.ReceiveStream) -> None:
    """Wait until the server closes the connection (EOF or reset), with nothing received."""
    with contextlib.suppress(trio.BrokenResourceError):
        assert await stream.receive_some() == b""


def proxy_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("PROXY header")]


@pytest.fixture
def prefixed(monkeypatch: pytest.MonkeyPatch) -> list[TransportView]:
    """Every TransportView the listener makes (one per header that arrived with data)."""
    made: list[TransportView] = []

    class Counted(TransportView):
        def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes) -> None:
            super().__init__(transport_stream, prefix)
            made.append(self)

    monkeypatch.setattr("trio_tcp._connection.TransportView", Counted)
    return made


HEADERS = [
    pytest.param(v1("TCP4", "203.0.113.7", "198.51.100.9", 40001, 8443), id="v1"),
    pytest.param(
        v2(addresses=inet("203.0.113.7", "198.51.100.9", 40001, 8443), tlvs=tlv(1, b"h2")), id="v2"
    ),
]


@pytest.mark.trio
@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("together", [True, False], ids=["with-data", "separate"])
async def test_caller_addresses_come_from_the_header(
    header: bytes, together: bool, prefixed: list[TransportView]
) -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(recorder, proxy_protocol=True) as listener:
            stream = await trio.open_tcp_stream(LOCAL, port_of(listener))
            async with stream:
                if together:
                    await stream.send_all(header + b"hello")
                else:
                    await stream.send_all(header)
                    await trio.sleep(0.01)
                    await stream.send_all(b"hello")
                assert await receive_exactly(stream, 5) == b"hello"
                await stream.send_all(b" world")
                assert await receive_exactly(stream, 6) == b" world"
            (caller,) = recorder.callers
            assert (caller.remote_host, caller.remote_port) == ("203.0.113.7", 40001)
            assert (caller.local_host, caller.local_port) == ("198.51.100.9", 8443)
            assert b"".join(recorder.received) == b"hello world"
            if together:  # the bytes after the header came in the header's read
                assert len(prefixed) == 1
            assert not caller.is_secure
            await eventually(lambda: recorder.closes == 1)
            assert listener.stats.errors == 0
            assert listener.stats.bytes_received == 11  # the header is not application data


@pytest.mark.trio
@pytest.mark.parametrize(
    "header", [v2(command=0, family=0), v1("UNKNOWN")], ids=["v2-local", "v1-unknown"]
)
async def test_local_and_unknown_keep_the_socket_addresses(header: bytes) -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with (
            serving(recorder, proxy_protocol=True) as listener,
            await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream,
        ):
            await stream.send_all(header + b"ping")
            assert await receive_exactly(stream, 4) == b"ping"
            (caller,) = recorder.callers
            assert (caller.remote_host, caller.remote_port) == stream.socket.getsockname()
            assert (caller.local_host, caller.local_port) == (LOCAL, port_of(listener))


@pytest.mark.trio
@pytest.mark.parametrize(
    "first", [b"GET / HTTP/1.1\r\n\r\n", b"PROXY TCP4 1.2.3.4\r\n"], ids=["no-header", "bad-header"]
)
async def test_garbage_is_dropped_at_once_without_callbacks(
    first: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_tcp")
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(recorder, proxy_protocol=True) as listener:
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                await stream.send_all(first)
                await closed_by_server(stream)
            await eventually(lambda: listener.stats.active_connections == 0)
            assert recorder.callers == []
            assert listener.stats.errors == 1
            (line,) = proxy_logs(caplog)
            assert "rejected" in line
            assert "connection dropped" in line


@pytest.mark.trio
async def test_a_peer_that_closes_before_the_header_ends_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_tcp")
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(recorder, proxy_protocol=True) as listener:
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                await stream.send_all(b"PROXY TCP4 ")
            await eventually(lambda: listener.stats.errors == 1)
            assert recorder.callers == []
            assert "incomplete" in proxy_logs(caplog)[0]


@pytest.mark.trio
async def test_a_silent_client_is_dropped_at_the_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("trio_tcp._connection.PROXY_HEADER_TIMEOUT", SHORT)
    caplog.set_level(logging.INFO, logger="trio_tcp")
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(recorder, proxy_protocol=True) as listener:
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                start = trio.current_time()
                await closed_by_server(stream)
                assert SHORT <= trio.current_time() - start < SHORT + 2
            assert recorder.callers == []
            await eventually(lambda: listener.stats.errors == 1)
            assert f"timed out after {SHORT:g} s" in proxy_logs(caplog)[0]


@pytest.mark.trio
async def test_graceful_stop_does_not_wait_for_a_missing_header() -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(recorder, proxy_protocol=True) as listener:
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                await eventually(lambda: listener.stats.active_connections == 1)
                start = trio.current_time()
                await listener.graceful_stop()
                assert trio.current_time() - start < 2  # not the 10 s header timeout
                await closed_by_server(stream)
            assert recorder.callers == []
            assert listener.stats.errors == 0  # a stop is no error


@pytest.mark.trio
async def test_without_proxy_protocol_a_header_is_plain_data() -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with (
            serving(recorder) as listener,
            await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream,
        ):
            header = v1("UNKNOWN")
            await stream.send_all(header)
            assert await receive_exactly(stream, len(header)) == header
            assert recorder.callers[0].remote_host == LOCAL


# -- end to end with TLS: the header comes before the ClientHello ------------------------------


class _HeaderFirst(trio.abc.Stream):
    """A client transport that sends ``header`` in the same write as the first TLS record."""

    def __init__(self, transport: trio.SocketStream, header: bytes) -> None:
        self.transport = transport
        self.header = header

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        header, self.header = self.header, b""
        await self.transport.send_all(header + bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.transport.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.transport.aclose()


@pytest.mark.trio
@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("together", [True, False], ids=["with-client-hello", "separate"])
async def test_tls_handshake_follows_the_header(
    certs: Certs, header: bytes, together: bool, prefixed: list[TransportView]
) -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(
            recorder, secure_socket=server_tls(certs), proxy_protocol=True
        ) as listener:
            raw = await trio.open_tcp_stream(LOCAL, port_of(listener))
            transport: trio.abc.Stream = raw
            if together:
                transport = _HeaderFirst(raw, header)
            else:
                await raw.send_all(header)
            context = ssl.create_default_context(cafile=str(certs.ca))
            tls = trio.SSLStream(transport, context, server_hostname="localhost")
            async with tls:
                await tls.do_handshake()
                await tls.send_all(b"secret")
                assert await receive_exactly(tls, 6) == b"secret"
                (caller,) = recorder.callers
                assert caller.is_secure
                assert caller.tls_version is not None
                assert (caller.remote_host, caller.remote_port) == ("203.0.113.7", 40001)
                if together:  # the ClientHello came in the header's read
                    assert len(prefixed) == 1
            await eventually(lambda: recorder.closes == 1)
            assert listener.stats.errors == 0


@pytest.mark.trio
async def test_tls_header_timeout_is_the_handshake_timeout(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_tcp")
    with trio.fail_after(5):
        recorder = Recorder()
        tls = server_tls(certs, handshake_timeout=SHORT)
        async with serving(recorder, secure_socket=tls, proxy_protocol=True) as listener:
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                start = trio.current_time()
                await closed_by_server(stream)
                assert SHORT <= trio.current_time() - start < SHORT + 2
            assert recorder.callers == []
            await eventually(lambda: listener.stats.errors == 1)
            assert f"timed out after {SHORT:g} s" in proxy_logs(caplog)[0]


@pytest.mark.trio
async def test_tls_client_without_a_header_is_rejected_on_its_client_hello(certs: Certs) -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with serving(
            recorder, secure_socket=server_tls(certs), proxy_protocol=True
        ) as listener:
            raw = await trio.open_tcp_stream(LOCAL, port_of(listener))
            context = ssl.create_default_context(cafile=str(certs.ca))
            async with trio.SSLStream(raw, context, server_hostname="localhost") as tls:
                with pytest.raises(trio.BrokenResourceError):
                    await tls.do_handshake()
            await eventually(lambda: listener.stats.errors == 1)
            assert recorder.callers == []


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["proxy_protocol", "reuse_port"])
@pytest.mark.parametrize("value", [1, "yes", None], ids=["int", "str", "none"])
def test_flags_must_be_bool(name: str, value: object) -> None:
    with pytest.raises(TypeError, match=name):
        trio_tcp.Listener(0, **{name: value})  # type: ignore[arg-type]


def test_reuse_port_without_so_reuseport_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(socket, "SO_REUSEPORT", raising=False)
    with pytest.raises(trio_tcp.ConfigurationError, match="reuse_port"):
        trio_tcp.Listener(0, reuse_port=True)
    trio_tcp.Listener(0, reuse_port=False)  # only asking for it fails


@pytest.mark.trio
async def test_serve_takes_the_new_options() -> None:
    with trio.fail_after(5):
        recorder = Recorder()
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                lambda task_status: trio_tcp.serve(
                    0,
                    recorder,
                    local_host=LOCAL,
                    proxy_protocol=True,
                    reuse_port=True,
                    task_status=task_status,
                )
            )
            async with await trio.open_tcp_stream(LOCAL, port_of(listener)) as stream:
                await stream.send_all(v1("TCP4", "192.0.2.5", "192.0.2.6", 1, 2) + b"x")
                assert await receive_exactly(stream, 1) == b"x"
            assert recorder.callers[0].remote_host == "192.0.2.5"
            nursery.cancel_scope.cancel()


# -- reuse_port ------------------------------------------------------------------------------


@pytest.mark.trio
async def test_two_listeners_share_a_port_with_reuse_port() -> None:
    with trio.fail_after(8):
        first, second = Recorder(), Recorder()
        async with serving(first, reuse_port=True) as one:
            port = port_of(one)
            async with trio.open_nursery() as nursery:
                other = trio_tcp.Listener(port, local_host=LOCAL, reuse_port=True)
                other.attach(second)
                await nursery.start(other.serve)
                assert other.port == port
                # The kernel spreads connections by a hash of the client's
                # address: among 40, each listener gets some (all to one: 2**-39).
                for _ in range(40):
                    async with await trio.open_tcp_stream(LOCAL, port) as stream:
                        await stream.send_all(b"x")
                        assert await receive_exactly(stream, 1) == b"x"
                assert first.callers
                assert second.callers
                assert len(first.callers) + len(second.callers) == 40
                await other.immediate_stop()


@pytest.mark.trio
@pytest.mark.parametrize("first_reuses", [False, True], ids=["neither", "only-the-first"])
async def test_without_reuse_port_the_second_bind_fails(first_reuses: bool) -> None:
    with trio.fail_after(5):
        async with serving(Recorder(), reuse_port=first_reuses) as one:
            other = trio_tcp.Listener(port_of(one), local_host=LOCAL)
            other.attach(Recorder())
            with pytest.raises(trio_tcp.BindError, match="cannot listen"):
                await other.serve()


@pytest.mark.trio
async def test_reuse_port_with_a_port_in_use_by_a_plain_socket_is_a_bind_error() -> None:
    with trio.fail_after(5), socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        listener = trio_tcp.Listener(taken.getsockname()[1], local_host=LOCAL, reuse_port=True)
        listener.attach(Recorder())
        with pytest.raises(trio_tcp.BindError, match="cannot listen"):
            await listener.serve()


@pytest.mark.trio
async def test_reuse_port_with_an_unknown_host_is_a_bind_error() -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0, local_host="no-such-host.invalid", reuse_port=True)
        listener.attach(Recorder())
        with pytest.raises(trio_tcp.BindError):
            await listener.serve()


class _DualLoopback(trio.abc.HostnameResolver):
    """Resolves ``dual.test`` to both loopbacks, as ``localhost`` does on dual-stack hosts."""

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any
    ) -> Any:
        assert host == b"dual.test"
        number = int(port) if port is not None else 0
        stream, tcp = socket.SOCK_STREAM, socket.IPPROTO_TCP
        return [
            (socket.AF_INET, stream, tcp, "", (LOCAL, number)),
            (socket.AF_INET6, stream, tcp, "", ("::1", number, 0, 0)),
        ]

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


@pytest.mark.trio
async def test_reuse_port_binds_every_family_on_one_port() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with trio.fail_after(5):
        previous = trio.socket.set_custom_hostname_resolver(_DualLoopback())
        try:
            recorder = Recorder()
            async with serving(recorder, local_host="dual.test", reuse_port=True) as listener:
                port = port_of(listener)
                for host in (LOCAL, "::1"):
                    async with await trio.open_tcp_stream(host, port) as stream:
                        await stream.send_all(b"x")
                        assert await receive_exactly(stream, 1) == b"x"
                assert {caller.local_host for caller in recorder.callers} == {LOCAL, "::1"}
        finally:
            trio.socket.set_custom_hostname_resolver(previous)
