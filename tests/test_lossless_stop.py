"""A graceful stop loses nothing that reached the server: real loopback sockets.

Each test puts a request where a stop could lose it (in the socket's receive
buffer while ``on_connect`` runs, halfway through a PROXY header, in the
kernel's accept queue, still on its way from a client whose ``connect()``
has just returned), stops the listener at that moment, and checks that the
request is answered and the connection then ends with EOF, never a reset.
Then what closing must not destroy: replies to pipelined requests that the
client reads late, at a stop and at ``caller.close()``. Then what must stay
quiet and exact: a load balancer's health checks, and peers that reset at
once (their address is still the one ``accept()`` gave, their error has its
cause). The key cases run over TLS 1.2 and 1.3 too.

"Already in the socket" is exact, not a race the test usually wins: the
client's bytes are sent with a synchronous stdlib call and the stop begins
without a checkpoint in between, so no server task can have read them.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually, port_of, read_until_eof, receive_exactly

import trio_tcp
from trio_tcp import CertKey, ListenerSecureSocket
from trio_tcp._config import FIRST_BYTE_GRACE
from trio_tcp.framing import Delimited

LOCAL = "127.0.0.1"
#: Every test ends well within this (real time, loopback).
BOUND = 10
#: A PROXY header as a load balancer sends it for a relayed client.
V1_HEADER = b"PROXY TCP4 203.0.113.7 198.51.100.9 40001 3000\r\n"
#: A version 2 LOCAL header: the load balancer's own connection (a health check).
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack(">H", 0)
#: The client's receive buffer: small, so replies back up in the server's send queue.
CLIENT_RCVBUF = 16 * 1024
TLS_VERSIONS = [
    pytest.param(ssl.TLSVersion.TLSv1_2, id="tls1.2"),
    pytest.param(ssl.TLSVersion.TLSv1_3, id="tls1.3"),
]


# -- the service ----------------------------------------------------------------------------


class Echo(trio_tcp.Service):
    """Echoes lines; records callers, errors and closes.

    Args:
        hold: ``on_connect`` waits for :attr:`release` before it returns.
        goodbye: what ``on_stop`` returns (framed as a line).
        close_after: after replying to this many lines, ``caller.close()``.
    """

    def __init__(
        self, *, hold: bool = False, goodbye: bytes | None = None, close_after: int | None = None
    ) -> None:
        self.goodbye = goodbye
        self.close_after = close_after
        self.callers: list[trio_tcp.Caller] = []
        self.proxies: list[trio_tcp.ProxyInfo | None] = []
        self.errors: list[trio_tcp.Error] = []
        self.closes = 0
        self.connected = trio.Event()
        self.release = trio.Event()
        if not hold:
            self.release.set()

    async def on_connect(self, caller: trio_tcp.Caller) -> _Lines:
        self.callers.append(caller)
        self.proxies.append(caller.proxy)
        self.connected.set()
        await self.release.wait()
        return _Lines(self, caller)

    def reply(self, line: bytes) -> bytes:
        return line

    def address(self, index: int = 0) -> tuple[str, int]:
        caller = self.callers[index]
        return caller.remote_host, caller.remote_port


class _Lines(trio_tcp.ConnectionService):
    framing = Delimited(b"\n", max_size=1 << 20)

    def __init__(self, service: Echo, caller: trio_tcp.Caller) -> None:
        self.service = service
        self.caller = caller
        self.answered = 0

    async def on_bytes(self, data: bytes) -> bytes | None:
        self.answered += 1
        if self.answered == self.service.close_after:
            await self.caller.write_message(data)
            await self.caller.close()
            return None
        return self.service.reply(data)

    async def on_stop(self) -> bytes | None:
        return self.service.goodbye

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.service.errors.append(err)

    async def on_close(self) -> None:
        self.service.closes += 1


# -- plumbing ---------------------------------------------------------------------------------


@asynccontextmanager
async def serving(service: trio_tcp.Service, **options: Any) -> AsyncIterator[trio_tcp.Listener]:
    options.setdefault("local_host", LOCAL)
    listener = trio_tcp.Listener(0, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.immediate_stop()


class Clients:
    """Makes client sockets, connected without a checkpoint; closes them all at the end.

    On loopback the kernel completes a connect by itself: no server task
    runs meanwhile, so the connection waits in the listener's accept queue.
    """

    def __init__(self) -> None:
        self.made: list[socket.socket] = []

    def connect(self, port: int, *, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        self.made.append(sock)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect((LOCAL, port))
        sock.setblocking(False)
        return sock


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    for sock in made.made:
        sock.close()  # a failed test must not leak sockets into the next one


def send_now(sock: socket.socket, data: bytes) -> None:
    """Send without a checkpoint: the bytes are in the server's receive buffer on return."""
    assert sock.send(data) == len(data)


def as_stream(sock: socket.socket) -> trio.SocketStream:
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def reset_now(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def reply_then_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends, which must end with EOF (a reset fails the test)."""
    received, reset = await read_until_eof(stream)
    assert not reset, f"reset after {len(received)} bytes: {received[:80]!r}"
    return received


def above_debug(caplog: pytest.LogCaptureFixture) -> list[str]:
    """trio_tcp's log lines above DEBUG."""
    return [
        r.getMessage() for r in caplog.records if r.name == "trio_tcp" and r.levelno > logging.DEBUG
    ]


# -- TLS ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    crt: Path
    key: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("lossless-tls")
    ca = trustme.CA()
    server = ca.issue_cert("localhost")
    paths = Certs(directory / "ca.pem", directory / "server.crt", directory / "server.key")
    paths.ca.write_bytes(ca.cert_pem.bytes())
    paths.crt.write_bytes(server.cert_chain_pems[0].bytes())
    paths.key.write_bytes(server.private_key_pem.bytes())
    return paths


def server_tls(certs: Certs) -> ListenerSecureSocket:
    return ListenerSecureSocket(key=CertKey(cert_file=certs.crt, key_file=certs.key))


class Held(trio.abc.Stream):
    """A TLS client's transport: it can hold back what TLS sends, to send it later at once.

    A failed send is dropped rather than raised: :class:`trio.SSLStream`
    breaks for every task once one operation fails, and a client that
    pipelines requests sees its *sending* side reset when the server closes
    with requests it will never answer, while every reply is still there to
    read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.stream = as_stream(sock)
        self.hold = False
        self.held = bytearray()
        self.send_failed = False

    def send_held_now(self) -> None:
        send_now(self.sock, bytes(self.held))
        self.held.clear()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.hold:
            self.held += data
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            self.send_failed = True

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def tls_client(
    certs: Certs, sock: socket.socket, version: ssl.TLSVersion
) -> tuple[trio.SSLStream[Held], Held]:
    """A TLS client over ``sock``, handshake done."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.minimum_version = context.maximum_version = version
    transport = Held(sock)
    tls = trio.SSLStream(transport, context, server_hostname="localhost")
    await tls.do_handshake()
    return tls, transport


# -- a request that had reached the server is served ------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("header", [b"", V1_HEADER], ids=["direct", "proxy"])
async def test_a_request_sent_while_on_connect_runs_is_served_at_a_stop(
    header: bytes, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo(hold=True)
        async with serving(service, proxy_protocol=bool(header)) as listener:
            sock = clients.connect(port_of(listener))
            send_now(sock, header + b"hello\n")
            await service.connected.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.graceful_stop)
                await trio.testing.wait_all_tasks_blocked()  # the stop reached the connection
                service.release.set()
            async with as_stream(sock) as stream:
                assert await reply_then_eof(stream) == b"hello\n"
            if header:
                assert service.address() == ("203.0.113.7", 40001)
            assert listener.stats.errors == 0


@pytest.mark.trio
@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_a_tls_request_sent_while_on_connect_runs_is_served_at_a_stop(
    certs: Certs, version: ssl.TLSVersion, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo(hold=True)
        async with serving(service, secure_socket=server_tls(certs)) as listener:
            tls, _ = await tls_client(certs, clients.connect(port_of(listener)), version)
            async with tls:
                await tls.send_all(b"hello\n")
                await service.connected.wait()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(listener.graceful_stop)
                    await trio.testing.wait_all_tasks_blocked()
                    service.release.set()
                assert await reply_then_eof(tls) == b"hello\n"
            assert listener.stats.errors == 0


@pytest.mark.trio
@pytest.mark.parametrize(
    ("first", "rest"),
    [
        pytest.param(V1_HEADER[:20], V1_HEADER[20:], id="v1"),
        pytest.param(
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11",
            struct.pack(">H", 12) + bytes([203, 0, 113, 7, 198, 51, 100, 9])
            + struct.pack(">HH", 40001, 3000),
            id="v2",
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("delay", [0, FIRST_BYTE_GRACE / 4], ids=["with-header", "just-after"])
async def test_a_stop_during_the_proxy_header_completes_it_and_serves_the_request(
    first: bytes, rest: bytes, delay: float, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, proxy_protocol=True) as listener:
            sock = clients.connect(port_of(listener))
            send_now(sock, first)
            await eventually(lambda: listener.stats.active_connections == 1)
            await trio.testing.wait_all_tasks_blocked()  # reading the header
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.graceful_stop)
                await trio.testing.wait_all_tasks_blocked()
                if delay:
                    send_now(sock, rest)
                    await trio.sleep(delay)  # the request follows within the first-byte grace
                    send_now(sock, b"hello\n")
                else:
                    send_now(sock, rest + b"hello\n")
            async with as_stream(sock) as stream:
                assert await reply_then_eof(stream) == b"hello\n"
            assert service.address() == ("203.0.113.7", 40001)
            assert listener.stats.errors == 0


@pytest.mark.trio
@pytest.mark.parametrize("before", [b"", b"one\n"], ids=["first-request", "after-a-request"])
async def test_bytes_waiting_in_an_idle_connection_when_the_stop_begins_are_served(
    before: bytes,
    clients: Clients,
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service) as listener:
            sock = clients.connect(port_of(listener))
            stream = as_stream(sock)
            if before:
                send_now(sock, before)
                assert await receive_exactly(stream, len(before)) == before
            await eventually(lambda: listener.stats.active_connections == 1)
            await trio.testing.wait_all_tasks_blocked()  # the connection waits for input
            send_now(sock, b"two\n")
            await listener.graceful_stop()
            async with stream:
                assert await reply_then_eof(stream) == b"two\n"


@pytest.mark.trio
@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_a_tls_record_waiting_when_the_stop_begins_is_served(
    certs: Certs, version: ssl.TLSVersion, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, secure_socket=server_tls(certs)) as listener:
            tls, transport = await tls_client(certs, clients.connect(port_of(listener)), version)
            async with tls:
                await tls.send_all(b"one\n")
                assert await receive_exactly(tls, 4) == b"one\n"
                transport.hold = True
                await tls.send_all(b"two\n")
                await trio.testing.wait_all_tasks_blocked()
                transport.send_held_now()
                await listener.graceful_stop()
                assert await reply_then_eof(tls) == b"two\n"


@pytest.mark.trio
@pytest.mark.parametrize("limit", [None, 1], ids=["queued", "queued-at-max-connections"])
async def test_connections_queued_in_the_kernel_when_the_stop_begins_are_served(
    limit: int | None,
    clients: Clients,
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, max_connections=limit) as listener:
            port = port_of(listener)
            first = as_stream(clients.connect(port))
            await first.send_all(b"first\n")
            assert await receive_exactly(first, 6) == b"first\n"
            await trio.testing.wait_all_tasks_blocked()  # at the limit: not accepting
            queued = [clients.connect(port) for _ in range(5)]
            for number, sock in enumerate(queued):
                send_now(sock, b"queued %d\n" % number)
            assert listener.stats.total_connections == 1  # nobody accepted them
            await listener.graceful_stop()  # no checkpoint since: still in the accept queue
            for number, sock in enumerate(queued):
                async with as_stream(sock) as stream:
                    assert await reply_then_eof(stream) == b"queued %d\n" % number
            async with first:
                assert await reply_then_eof(first) == b""
            assert listener.stats.total_connections == 6
            assert listener.stats.errors == 0


@pytest.mark.trio
@pytest.mark.parametrize("header", [b"", V1_HEADER], ids=["direct", "proxy"])
async def test_a_client_that_sends_right_after_connecting_is_served_within_the_grace(
    header: bytes,
    clients: Clients,
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, proxy_protocol=bool(header)) as listener:
            sock = clients.connect(port_of(listener))
            if header:
                send_now(sock, header)  # a load balancer sends it with the connection
            replies: list[bytes] = []

            async def client() -> None:
                await trio.sleep(FIRST_BYTE_GRACE / 4)
                send_now(sock, b"hello\n")
                async with as_stream(sock) as stream:
                    replies.append(await reply_then_eof(stream))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client)
                await listener.graceful_stop()  # the connection is still in the accept queue
            assert replies == [b"hello\n"]


@pytest.mark.trio
@pytest.mark.parametrize("version", TLS_VERSIONS)
async def test_a_tls_client_that_sends_right_after_its_handshake_is_served_within_the_grace(
    certs: Certs, version: ssl.TLSVersion, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, secure_socket=server_tls(certs)) as listener:
            sock = clients.connect(port_of(listener))
            replies: list[bytes] = []

            async def client() -> None:
                tls, _ = await tls_client(certs, sock, version)
                async with tls:
                    await trio.sleep(FIRST_BYTE_GRACE / 4)
                    await tls.send_all(b"hello\n")
                    replies.append(await reply_then_eof(tls))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client)
                await listener.graceful_stop()
            assert replies == [b"hello\n"]


@pytest.mark.trio
@pytest.mark.parametrize("header", [b"", V1_HEADER], ids=["direct", "proxy"])
async def test_a_silent_client_is_closed_after_the_first_byte_grace(
    header: bytes, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, proxy_protocol=bool(header)) as listener:
            sock = clients.connect(port_of(listener))
            send_now(sock, header)
            start = trio.current_time()
            await listener.graceful_stop()  # not the 10 s PROXY header timeout
            assert FIRST_BYTE_GRACE <= trio.current_time() - start < FIRST_BYTE_GRACE + 1
            async with as_stream(sock) as stream:
                assert await reply_then_eof(stream) == b""
            assert listener.stats.errors == 0


@pytest.mark.trio
async def test_a_silent_tls_client_is_closed_after_the_grace_not_the_handshake_timeout(
    certs: Certs,
    clients: Clients,
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, secure_socket=server_tls(certs)) as listener:
            sock = clients.connect(port_of(listener))
            start = trio.current_time()
            await listener.graceful_stop()
            assert FIRST_BYTE_GRACE <= trio.current_time() - start < FIRST_BYTE_GRACE + 1
            async with as_stream(sock) as stream:
                assert await reply_then_eof(stream) == b""
            assert service.callers == []
            assert listener.stats.errors == 0
            assert listener.stats.aborted == 1


@pytest.mark.trio
async def test_a_client_silent_after_its_proxy_header_on_a_tls_port_is_closed_after_the_grace(
    certs: Certs, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(
            service, secure_socket=server_tls(certs), proxy_protocol=True
        ) as listener:
            sock = clients.connect(port_of(listener))
            send_now(sock, V1_HEADER)  # the load balancer connected; its client says nothing yet
            await eventually(lambda: listener.stats.active_connections == 1)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            await listener.graceful_stop()  # not the 10 s handshake timeout
            assert FIRST_BYTE_GRACE <= trio.current_time() - start < FIRST_BYTE_GRACE + 1
            async with as_stream(sock) as stream:
                assert await reply_then_eof(stream) == b""
            assert listener.stats.errors == 0
            assert listener.stats.aborted == 1


# -- closing destroys no reply ------------------------------------------------------------------

#: 40 pipelined requests of 60,000 B each (the line and its newline), echoed.
PIPELINED = 40
LINE = b"x" * 59_999 + b"\n"


async def read_slowly(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until EOF, a little at a time: replies stay unacknowledged for a while."""
    received = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(8192)
        except trio.BrokenResourceError:
            pytest.fail(f"reset after {len(received)} bytes ({len(received) / len(LINE):g} lines)")
        if not chunk:
            return bytes(received)
        received += chunk
        await trio.sleep(0.001)


@pytest.mark.trio
@pytest.mark.parametrize("end", ["graceful-stop", "caller-close"])
async def test_every_reply_to_pipelined_requests_arrives_then_eof(
    end: str, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo(close_after=2 if end == "caller-close" else None)
        async with serving(service) as listener:
            sock = clients.connect(port_of(listener), rcvbuf=CLIENT_RCVBUF)
            stream = as_stream(sock)
            # The requests go out from a thread, as fast as the kernel takes them.
            sender = sock.dup()
            sender.settimeout(BOUND)

            def pipeline() -> None:
                with sender:
                    try:
                        for _ in range(PIPELINED):
                            sender.sendall(LINE)
                    except OSError:
                        pass  # the server closed: the rest was never taken (nor answered)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, pipeline)
                if end == "graceful-stop":
                    await trio.sleep(0.2)
                    nursery.start_soon(listener.graceful_stop)
                await trio.sleep(0.3)  # the client reads late
                received = await read_slowly(stream)
            await stream.aclose()
            (caller,) = service.callers
            assert len(received) == caller.bytes_sent
            assert received == LINE * (len(received) // len(LINE))
            if end == "caller-close":
                assert len(received) == 2 * len(LINE)


@pytest.mark.trio
@pytest.mark.parametrize("version", TLS_VERSIONS)
@pytest.mark.parametrize("end", ["graceful-stop", "caller-close"])
async def test_every_tls_reply_to_pipelined_requests_arrives_then_close_notify(
    certs: Certs, version: ssl.TLSVersion, end: str, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo(close_after=2 if end == "caller-close" else None)
        async with serving(service, secure_socket=server_tls(certs)) as listener:
            sock = clients.connect(port_of(listener), rcvbuf=CLIENT_RCVBUF)
            tls, transport = await tls_client(certs, sock, version)

            async def pipeline() -> None:
                for _ in range(PIPELINED):
                    await tls.send_all(LINE)
                    if transport.send_failed:
                        return  # the server closed: the rest was never taken (nor answered)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pipeline)
                if end == "graceful-stop":
                    await trio.sleep(0.2)
                    nursery.start_soon(listener.graceful_stop)
                await trio.sleep(0.3)
                received = await read_slowly(tls)  # b"" at close_notify; a reset fails
            await trio.aclose_forcefully(tls)
            (caller,) = service.callers
            assert len(received) == caller.bytes_sent
            assert received == LINE * (len(received) // len(LINE))
            if end == "caller-close":
                assert len(received) == 2 * len(LINE)


# -- on_stop ------------------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "version", [pytest.param(None, id="tcp"), *TLS_VERSIONS]
)  # fmt: skip
async def test_the_on_stop_goodbye_follows_the_last_reply_and_comes_before_eof(
    certs: Certs, version: ssl.TLSVersion | None, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo(goodbye=b"bye")
        tls = None if version is None else server_tls(certs)
        async with serving(service, secure_socket=tls) as listener:
            sock = clients.connect(port_of(listener))
            stream: trio.abc.Stream
            if version is None:
                stream = as_stream(sock)
                raw = sock
            else:
                stream, held = await tls_client(certs, sock, version)
                raw = held.sock
            async with stream:
                await stream.send_all(b"one\n")
                assert await receive_exactly(stream, 4) == b"one\n"
                await trio.testing.wait_all_tasks_blocked()
                if version is None:
                    send_now(raw, b"two\n")  # waiting, unread, when the stop begins
                await listener.graceful_stop()
                expected = b"two\nbye\n" if version is None else b"bye\n"
                assert await reply_then_eof(stream) == expected


# -- resets and health checks: exact and quiet ------------------------------------------------


@pytest.mark.trio
async def test_the_caller_address_is_the_accepted_one_even_after_an_immediate_reset(
    clients: Clients,
) -> None:
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service) as listener:
            sock = clients.connect(port_of(listener))
            address = sock.getsockname()
            reset_now(sock)  # before the server has even accepted the connection
            await eventually(lambda: service.closes == 1)
            assert service.address() == address
            (error,) = service.errors
            assert isinstance(error, trio_tcp.ConnectionClosedError)
            assert error.__cause__ is not None
            assert listener.stats.aborted == 1
            assert listener.stats.errors == 0


#: What a load balancer's health check looks like on the wire: a header (or
#: nothing), then the connection closes, usually with a reset.
HEALTH_CHECKS = [
    pytest.param(b"PROXY TCP4 127.0.0.1 127.0.0.1 40002 3000\r\n", "PROXY", True, id="v1-reset"),
    pytest.param(V2_LOCAL, "LOCAL", True, id="v2-local-reset"),
    pytest.param(V2_LOCAL, "LOCAL", False, id="v2-local-close"),
    pytest.param(b"", None, True, id="connect-reset"),
    pytest.param(b"", None, False, id="connect-close"),
]


@pytest.mark.trio
@pytest.mark.parametrize(("header", "command", "reset"), HEALTH_CHECKS)
async def test_a_health_check_is_counted_as_aborted_and_logs_nothing_above_debug(
    header: bytes,
    command: str | None,
    reset: bool,
    caplog: pytest.LogCaptureFixture,
    clients: Clients,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    with trio.fail_after(BOUND):
        service = Echo()
        async with serving(service, proxy_protocol=True) as listener:
            caplog.clear()
            sock = clients.connect(port_of(listener))
            send_now(sock, header)
            if reset:
                reset_now(sock)
            else:
                sock.close()
            await eventually(
                lambda: (
                    listener.stats.total_connections == 1 and listener.stats.active_connections == 0
                )
            )
            assert listener.stats.aborted == 1
            assert listener.stats.errors == 0
            assert above_debug(caplog) == []
            assert [proxy.command for proxy in service.proxies if proxy] == (
                [command] if command else []
            )
            if command == "PROXY":
                assert service.address() == ("127.0.0.1", 40002)


class BigReply(Echo):
    """Answers every line with a reply bigger than the client's buffers take."""

    def reply(self, line: bytes) -> bytes:
        return b"y" * (1 << 20)  # the framing's limit: at most 1 MiB per line


@pytest.mark.trio
@pytest.mark.parametrize("when", ["waiting", "writing"])
@pytest.mark.parametrize("version", [pytest.param(None, id="tcp"), *TLS_VERSIONS])
async def test_a_reset_reaches_on_error_with_its_cause(
    certs: Certs, when: str, version: ssl.TLSVersion | None, clients: Clients
) -> None:
    with trio.fail_after(BOUND):
        service = Echo() if when == "waiting" else BigReply()
        tls = None if version is None else server_tls(certs)
        async with serving(service, secure_socket=tls) as listener:
            sock = clients.connect(port_of(listener), rcvbuf=CLIENT_RCVBUF)
            if version is None:
                stream: trio.abc.Stream = as_stream(sock)
            else:
                stream, _ = await tls_client(certs, sock, version)
            await stream.send_all(b"one\n")
            if when == "waiting":
                assert await receive_exactly(stream, 4) == b"one\n"
            else:
                await receive_exactly(stream, 1)  # the reply has begun
            await trio.testing.wait_all_tasks_blocked()
            reset_now(sock)
            await eventually(lambda: service.closes == 1)
            (error,) = service.errors
            assert isinstance(error, trio_tcp.ConnectionClosedError), repr(error)
            assert isinstance(error.__cause__, (trio.BrokenResourceError, OSError))
            assert listener.stats.errors == 1
