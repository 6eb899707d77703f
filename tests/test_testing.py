"""``trio_tcp.testing``: a service under test behaves in memory exactly as over TCP.

Timeouts run under ``autojump_clock`` (simulated time); backpressure and slow
readers use a small ``buffer_size``; TLS uses trustme certificates.
"""

from __future__ import annotations

import functools
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_tcp
from trio_tcp.framing import Delimited
from trio_tcp.testing import MemoryServer, open_memory_server, open_service_client

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


class Record(trio_tcp.ConnectionService):
    """Echoes (upper-cased with a framing) and records its callbacks."""

    def __init__(self, caller: trio_tcp.Caller) -> None:
        self.caller = caller
        self.received: list[bytes] = []
        self.errors: list[trio_tcp.Error] = []
        self.closes = 0

    async def on_bytes(self, data: bytes) -> bytes | None:
        self.received.append(data)
        return data

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.errors.append(err)

    async def on_close(self) -> None:
        self.closes += 1


class Upper(Record):
    framing = Delimited(b"\n")

    async def on_bytes(self, data: bytes) -> bytes:
        self.received.append(data)
        return data.upper()


class Boom(Record):
    async def on_bytes(self, data: bytes) -> bytes:
        raise ValueError(f"cannot handle {data!r}")


class Recorder:
    """A ``Service`` that gives each connection a ``kind`` and keeps them all."""

    def __init__(self, kind: type[Record] = Record) -> None:
        self.kind = kind
        self.connections: list[Record] = []

    async def on_connect(self, caller: trio_tcp.Caller) -> Record:
        self.connections.append(self.kind(caller))
        return self.connections[-1]


# -- time ------------------------------------------------------------------------


@pytest.mark.trio
async def test_an_hour_long_idle_timeout_runs_in_simulated_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3 * 3600):
        service = Recorder()
        async with open_service_client(service, idle_timeout=3600) as client:
            start = trio.current_time()
            await client.write_bytes(b"ping")
            assert await client.read_exactly(4) == b"ping"
            await trio.sleep(3599)
            [connection] = service.connections
            assert connection.closes == 0
            await trio.sleep(5)
            assert connection.closes == 1
            assert connection.errors == []  # an idle close is no error
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            assert trio.current_time() - start >= 3600


@pytest.mark.trio
async def test_a_read_timeout_of_the_client_under_the_mock_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):
        async with open_service_client(Recorder(), timeout=30) as client:
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await client.read_bytes()  # the service never speaks first
        async with open_service_client(Recorder(), timeout=None) as client:
            with trio.move_on_after(1000) as scope:
                await client.read_bytes()
            assert scope.cancelled_caught


# -- framing and errors ---------------------------------------------------------------


@pytest.mark.trio
async def test_framing_on_both_sides() -> None:
    with trio.fail_after(5):
        service = Recorder(Upper)
        async with open_service_client(service, framing=Delimited(b"\n")) as client:
            await client.write_message(b"hello")
            assert await client.read_message() == b"HELLO"
            await client.write_bytes(b"two\nin one")  # one message and a half
            assert await client.read_message() == b"TWO"
            await client.write_bytes(b" chunk\n")
            assert await client.read_message() == b"IN ONE CHUNK"
        assert service.connections[0].received == [b"hello", b"two", b"in one chunk"]


async def _service_error_over_tcp(service: Recorder) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_tcp.serve, 0, service, local_host="127.0.0.1")
        listener = await nursery.start(serve)
        async with await trio_tcp.Client.connect("127.0.0.1", listener.port) as client:
            await _provoke(client)
        await listener.graceful_stop()


async def _service_error_in_memory(service: Recorder) -> None:
    async with open_service_client(service) as client:
        await _provoke(client)


async def _provoke(client: trio_tcp.Client) -> None:
    await client.write_bytes(b"x")
    with pytest.raises(trio_tcp.ConnectionClosedError):
        await client.read_bytes()  # the service's connection closed on the error


def _connection_records(caplog: pytest.LogCaptureFixture) -> list[tuple[Any, ...]]:
    return [
        (r.levelname, r.msg, r.args[:2] if isinstance(r.args, tuple) else r.args, r.exc_info)
        for r in caplog.records
        # Where a server listens is said differently for a port and for memory.
        if r.name == "trio_tcp"
        and "listening on port" not in r.getMessage()
        and not r.getMessage().startswith(("serving 1 listener", "listening sockets closed"))
    ]


@pytest.mark.trio
async def test_a_service_error_is_reported_and_logged_exactly_as_over_tcp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    seen: dict[str, tuple[list[tuple[Any, ...]], Recorder]] = {}
    runs: dict[str, Callable[[Recorder], Awaitable[None]]] = {
        "tcp": _service_error_over_tcp,
        "memory": _service_error_in_memory,
    }
    with trio.fail_after(10):
        for name, run in runs.items():
            caplog.clear()
            service = Recorder(Boom)
            await run(service)
            records = [
                (level, msg, args, exc_info and exc_info[0])
                for level, msg, args, exc_info in _connection_records(caplog)
            ]
            seen[name] = records, service
    assert seen["memory"][0] == seen["tcp"][0]
    assert seen["memory"][0] == [
        ("ERROR", "%s raised %s on %r", ("on_bytes", "ValueError"), ValueError)
    ]
    for _, service in seen.values():
        [connection] = service.connections
        [error] = connection.errors
        assert type(error) is trio_tcp.Error
        assert isinstance(error.__cause__, ValueError)
        assert connection.closes == 1


# -- addresses, several clients, callers ----------------------------------------------


@pytest.mark.trio
async def test_each_client_gets_its_own_port_unless_it_asks_for_one() -> None:
    with trio.fail_after(5):
        service = Recorder()
        async with open_memory_server(service) as server:
            first, second = await server.connect(), await server.connect()
            chosen = await server.connect(remote_host="203.0.113.9", remote_port=4242)
            callers = [await server.caller(c) for c in (first, second, chosen)]
            assert [(c.remote_host, c.remote_port) for c in callers] == [
                ("127.0.0.1", 50000),
                ("127.0.0.1", 50001),
                ("203.0.113.9", 4242),
            ]
            assert {(c.local_host, c.local_port) for c in callers} == {("127.0.0.1", 3000)}
            assert (first.remote_host, first.remote_port) == ("127.0.0.1", 3000)
            assert (chosen.local_host, chosen.local_port) == ("203.0.113.9", 4242)
            assert server.callers == callers
            assert server.listener.port is None  # no TCP port in memory
            for client in (first, second, chosen):
                await client.aclose()


@pytest.mark.trio
async def test_several_clients_share_one_service_instance() -> None:
    class Chat(Recorder):
        async def on_connect(self, caller: trio_tcp.Caller) -> Record:
            connection = await super().on_connect(caller)
            for other in self.connections[:-1]:
                other.caller.send_nowait(b"new member\n")
            return connection

    with trio.fail_after(5):
        service = Chat()
        async with open_memory_server(service) as server:
            clients = [await server.connect(framing=Delimited(b"\n")) for _ in range(3)]
            assert await clients[0].read_message() == b"new member"
            assert await clients[0].read_message() == b"new member"
            assert await clients[1].read_message() == b"new member"
            assert server.stats.active_connections == 3
        assert server.stats.total_connections == 3
        assert [c.closes for c in service.connections] == [1, 1, 1]


@pytest.mark.trio
async def test_server_caller_waits_for_the_server_then_finds_the_connection() -> None:
    with trio.fail_after(5):
        async with open_memory_server(Recorder()) as server:
            client = await server.connect()
            caller = await server.caller(client)  # right after connect: not accepted yet
            assert caller.remote_port == client.local_port
            stream = await server.open_stream()
            assert (await server.caller(stream)).remote_port == stream.endpoints.local_port
            await client.aclose()
            with pytest.raises(LookupError, match="50000"):
                await server.caller(client)


@pytest.mark.trio
async def test_server_caller_before_on_connect_is_a_lookup_error() -> None:
    with trio.fail_after(5):
        async with open_memory_server(Recorder(), proxy_protocol=True) as server:
            stream = await server.open_stream()  # its PROXY header is still awaited
            with pytest.raises(LookupError):
                await server.caller(stream)
            await stream.send_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 41000 443\r\n")
            caller = await server.caller(stream)
            assert (caller.remote_host, caller.remote_port) == ("198.51.100.7", 41000)
            assert caller.proxy is not None


# -- backpressure -----------------------------------------------------------------


@pytest.mark.trio
async def test_a_slow_service_holds_back_its_client() -> None:
    release = trio.Event()

    class Slow(Record):
        async def on_bytes(self, data: bytes) -> bytes:
            await release.wait()
            return b""

    with trio.fail_after(5):
        async with open_memory_server(Recorder(Slow), buffer_size=1000) as server:
            client = await server.connect()
            written = trio.Event()

            async def write() -> None:
                await client.write_bytes(b"x" * 100_000)
                written.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()
                assert not written.is_set()  # the service reads nothing more
                release.set()
            assert written.is_set()


@pytest.mark.trio
async def test_a_client_that_does_not_read_meets_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Flood(Record):
        async def on_bytes(self, data: bytes) -> None:
            await self.caller.write_bytes(b"y" * 100_000)

    with trio.fail_after(3600):
        service = Recorder(Flood)
        async with open_memory_server(service, buffer_size=1000, write_timeout=30) as server:
            client = await server.connect()
            await client.write_bytes(b"go")  # and never read
            await trio.sleep(31)
            [connection] = service.connections
            assert [type(error) for error in connection.errors] == [trio_tcp.WriteTimeoutError]
            assert connection.closes == 1
            assert server.stats.errors == 1


# -- TLS ----------------------------------------------------------------------------


def _server_context(cert: trustme.LeafCert, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.minimum_version = context.maximum_version = version
    return context


def _client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.trio
async def test_tls_in_memory(
    ca: trustme.CA, server_leaf: trustme.LeafCert, version: ssl.TLSVersion
) -> None:
    with trio.fail_after(10):
        service = Recorder()
        secure = _server_context(server_leaf, version)
        async with open_memory_server(service, secure_socket=secure) as server:
            client = await server.connect(ssl_context=_client_context(ca))
            async with client:
                assert client.is_secure
                await client.write_bytes(b"secret")
                assert await client.read_exactly(6) == b"secret"
                caller = await server.caller(client)
                assert caller.is_secure
                assert caller.tls_version == version.name.replace("_", ".")
            named = await server.connect(
                ssl_context=_client_context(ca), server_hostname="localhost"
            )
            await named.aclose()
            with pytest.raises(trio_tcp.TLSError):
                await server.connect(ssl_context=ssl.create_default_context())  # untrusted
        assert [c.closes for c in service.connections] == [1, 1]


@pytest.mark.trio
async def test_open_service_client_speaks_tls_with_an_ssl_context(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    with trio.fail_after(10):
        secure = _server_context(server_leaf, ssl.TLSVersion.TLSv1_3)
        async with open_service_client(
            Recorder(), secure_socket=secure, ssl_context=_client_context(ca)
        ) as client:
            await client.write_bytes(b"hi")
            assert await client.read_exactly(2) == b"hi"
        with pytest.raises(trio_tcp.UsageError, match="ssl_context"):
            async with open_service_client(Recorder(), secure_socket=secure):
                pass  # pragma: no cover


# -- the server's own life -----------------------------------------------------------


@pytest.mark.parametrize("option", ["local_host", "backlog", "reuse_port"])
@pytest.mark.trio
async def test_options_without_meaning_in_memory_are_refused(option: str) -> None:
    values: dict[str, Any] = {"local_host": "127.0.0.1", "backlog": 5, "reuse_port": True}
    with pytest.raises(trio_tcp.UsageError, match=option):
        async with open_memory_server(Recorder(), **{option: values[option]}):
            pass  # pragma: no cover


@pytest.mark.trio
async def test_a_stopped_server_refuses_connections() -> None:
    with trio.fail_after(5):
        async with open_memory_server(Recorder()) as server:
            await server.listener.graceful_stop()
            with pytest.raises(trio_tcp.ConnectError):
                await server.connect()


@pytest.mark.trio
async def test_leaving_the_block_stops_the_server_after_every_on_close() -> None:
    with trio.fail_after(5):
        service = Recorder()
        server: MemoryServer
        async with open_memory_server(service) as server:
            clients = [await server.connect() for _ in range(3)]
            await server.caller(clients[-1])
        assert server.stats.active_connections == 0
        assert [c.closes for c in service.connections] == [1, 1, 1]
        for client in clients:
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()


@pytest.mark.trio
async def test_a_failure_in_the_block_propagates_as_itself() -> None:
    service = Recorder()

    async def fail_inside() -> None:
        async with open_service_client(service) as client:
            await client.write_bytes(b"x")
            raise KeyError("from the test")  # not wrapped in an exception group

    with trio.fail_after(5), pytest.raises(KeyError, match="from the test"):
        await fail_inside()
    assert [c.closes for c in service.connections] == [1]


@pytest.mark.trio
async def test_a_deadline_around_the_block_cancels_it_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        service = Recorder()
        with trio.move_on_after(10) as scope:
            async with open_service_client(service) as client:
                await client.write_bytes(b"x")
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert [c.closes for c in service.connections] == [1]
