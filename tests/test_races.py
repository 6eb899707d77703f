"""Races between stops, closes, writes and timeouts: each once got a connection wrong.

Every scenario here lines two things up that happen "at the same time" in a
real server (a stop while a write is blocked, a close while a reply queues,
an idle deadline while a big write flows, a stop while the listener binds)
and checks the outcome the documentation promises.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually

import trio_tcp
import trio_tcp._bind
from trio_tcp._tcpstream import TCPStream, prepare_socket

LOCAL = "127.0.0.1"


class Recorder(trio_tcp.Service):
    """Records callbacks; each connection runs ``on_bytes`` given to the constructor."""

    def __init__(self, on_bytes: Callable[..., Any] | None = None) -> None:
        self.callers: list[trio_tcp.Caller] = []
        self.errors: list[trio_tcp.Error] = []
        self.closed = 0
        self.connected = trio.Event()
        self.handler = on_bytes

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.callers.append(caller)
        self.connected.set()
        recorder = self

        class Connection(trio_tcp.ConnectionService):
            async def on_error(self, err: trio_tcp.Error) -> None:
                recorder.errors.append(err)

            async def on_close(self) -> None:
                recorder.closed += 1

        connection = Connection()
        if self.handler is not None:
            connection.on_bytes = functools.partial(self.handler, caller)  # type: ignore[attr-defined]
        return connection


async def start(nursery: trio.Nursery, service: trio_tcp.Service, **options: Any) -> int:
    listener = trio_tcp.Listener(0, local_host=LOCAL, **options)
    listener.attach(service)
    await nursery.start(listener.serve)
    assert listener.port is not None
    nursery.listener = listener  # type: ignore[attr-defined]
    return listener.port


@pytest.mark.trio
async def test_graceful_stop_while_a_write_is_blocked_is_no_error() -> None:
    # Plain TCP without an idle timeout wakes its reader by closing: the blocked
    # writer's failure is a local close, never reported to on_error.
    with trio.fail_after(10):
        service = Recorder()
        async with trio.open_nursery() as nursery:
            port = await start(nursery, service)
            stuck = await trio.open_tcp_stream(LOCAL, port)  # never reads
            await service.connected.wait()
            outcome: list[str] = []

            async def push() -> None:
                try:
                    await service.callers[0].write_bytes(b"x" * 20_000_000)
                except trio_tcp.ConnectionClosedError:
                    outcome.append("closed")

            nursery.start_soon(push)
            await trio.testing.wait_all_tasks_blocked()
            await nursery.listener.graceful_stop()  # type: ignore[attr-defined]
            await stuck.aclose()
        assert outcome == ["closed"]
        assert service.errors == []
        assert service.closed == 1


@pytest.mark.trio
async def test_close_while_the_reply_waits_for_the_lock_is_no_error() -> None:
    with trio.fail_after(10):

        async def on_bytes(caller: trio_tcp.Caller, data: bytes) -> bytes:
            return b"reply"

        service = Recorder(on_bytes)
        async with trio.open_nursery() as nursery:
            port = await start(nursery, service)
            client = await trio.open_tcp_stream(LOCAL, port)
            await service.connected.wait()
            caller = service.callers[0]

            # A write from another task that blocks (the client is not
            # reading) holds the lock, so the reply below has to queue.
            async def broadcaster() -> None:
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await caller.write_bytes(b"y" * 20_000_000)

            nursery.start_soon(broadcaster)
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"ask")  # on_bytes returns a reply: it queues
            await trio.testing.wait_all_tasks_blocked()
            await caller.aclose()
            await client.aclose()
            nursery.cancel_scope.cancel()
        assert service.errors == []
        assert service.closed == 1


@pytest.mark.trio
async def test_idle_timeout_spares_a_connection_that_is_sending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        service = Recorder()
        async with trio.open_nursery() as nursery:
            port = await start(nursery, service, idle_timeout=1.0)
            client = await trio.open_tcp_stream(LOCAL, port)
            await service.connected.wait()
            total = 8_000_000
            received = 0

            async def slow_reader() -> None:
                nonlocal received
                while received < total:
                    await trio.sleep(0.5)  # well under the idle timeout each time
                    received += len(await client.receive_some(1_000_000))

            nursery.start_soon(slow_reader)
            await service.callers[0].write_bytes(b"z" * total)  # takes many idle periods
            assert service.closed == 0
            await trio.sleep(1.5)  # now truly idle: the close has begun
            # ... and ends once the reader has everything (a lingering close).
            await eventually(lambda: service.closed == 1)
            await client.aclose()
            nursery.cancel_scope.cancel()
        assert service.errors == []


@pytest.mark.trio
async def test_a_stop_while_serve_binds_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(5):
        binding = trio.Event()
        real_bind = trio_tcp._bind.bind_tcp

        async def slow_bind(*args: Any, **kwargs: Any) -> list[socket.socket]:
            binding.set()
            await trio.sleep(0.2)
            return await real_bind(*args, **kwargs)

        monkeypatch.setattr("trio_tcp._listener.bind_tcp", slow_bind)
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        listener.attach(Recorder())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(listener.serve)
            await binding.wait()
            await listener.graceful_stop()  # returns once serve has returned
            assert listener.port is None
            assert "stopped" in repr(listener)


@pytest.mark.trio
async def test_max_connections_counts_connections_not_listening_sockets() -> None:
    # With IPv4 and IPv6 bound, an idle accept loop must not sit on a token.
    with trio.fail_after(5):
        service = Recorder(lambda caller, data: data)
        listener = trio_tcp.Listener(0, max_connections=2)  # every family
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            assert listener.port is not None
            first = await trio_tcp.Client.connect(LOCAL, listener.port)
            second = await trio_tcp.Client.connect(LOCAL, listener.port)
            await second.write_bytes(b"ping")
            assert await second.read_exactly(4) == b"ping"
            await first.aclose()
            await second.aclose()
            await listener.immediate_stop()


@pytest.mark.trio
async def test_no_service_attached_closes_at_once_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            assert listener.port is not None
            for _ in range(20):
                client = await trio_tcp.Client.connect(LOCAL, listener.port)
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await client.read_bytes()
                await client.aclose()
            await listener.immediate_stop()
    warnings = [r for r in caplog.records if "no service attached" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.trio
async def test_a_write_cancelled_before_sending_leaves_the_client_open() -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, Recorder(lambda caller, data: data))
            client = await trio_tcp.Client.connect(LOCAL, port)
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.write_bytes(b"never sent")
            assert scope.cancelled_caught
            assert not client.closed
            await client.write_bytes(b"sent")
            assert await client.read_exactly(4) == b"sent"
            await client.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
@pytest.mark.parametrize(
    "read",
    [
        lambda client: client.read_bytes(),
        lambda client: client.read_exactly(2),
        lambda client: client.read_until(b"\n"),
    ],
    ids=["read_bytes", "read_exactly", "read_until"],
)
async def test_reads_answered_from_the_buffer_are_still_checkpoints(
    read: Callable[[trio_tcp.Client], Any],
) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            port = await start(nursery, Recorder(lambda caller, data: data))
            client = await trio_tcp.Client.connect(LOCAL, port)
            await client.write_bytes(b"a\nb\nc\n")
            assert await client.read_exactly(6) == b"a\nb\nc\n"
            await client.write_bytes(b"ab\ncd\n")
            assert await client.read_until(b"\n") == b"ab"  # "cd\n" stays buffered
            with trio.testing.assert_checkpoints():
                await read(client)
            await client.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_send_eof_and_send_all_at_once_is_busy() -> None:
    with trio.fail_after(5):
        with socket.create_server((LOCAL, 0)) as server:
            left = socket.create_connection(server.getsockname())
            right, _ = server.accept()
        for sock in (left, right):
            prepare_socket(sock)
        stream = TCPStream(left)
        stream._sending = True  # another task is inside send_all
        with pytest.raises(trio.BusyResourceError):
            await stream.send_eof()
        stream._sending = False
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"late")
        await stream.aclose()
        right.close()


@pytest.mark.parametrize(
    "secure_socket",
    ["server.pem", trio_tcp.ClientSecureSocket()],
    ids=["a-path", "a-client-config"],
)
def test_listener_rejects_a_secure_socket_of_the_wrong_type(secure_socket: object) -> None:
    with pytest.raises(TypeError, match="ListenerSecureSocket"):
        trio_tcp.Listener(0, secure_socket=secure_socket)  # type: ignore[arg-type]


@pytest.mark.trio
async def test_client_rejects_a_secure_socket_of_the_wrong_type() -> None:
    with trio.fail_after(5), pytest.raises(TypeError, match="ClientSecureSocket"):
        await trio_tcp.Client.connect(LOCAL, 1, secure_socket="ca.pem")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, ssl.SSLContext]:
    ca = trustme.CA()
    issued = ca.issue_cert(LOCAL)
    folder = tmp_path_factory.mktemp("races-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(cert), str(key), client


@pytest.mark.trio
@pytest.mark.parametrize("stop", ["immediate", "graceful-with-timeout"])
async def test_a_stop_with_a_tls_write_stuck_still_runs_on_close(
    tls_files: tuple[str, str, ssl.SSLContext], stop: str
) -> None:
    # A broadcaster's write to a peer that never reads holds TLS's send side,
    # so close_notify cannot go out: the stop must close forcefully in time,
    # and on_close and the listener's bookkeeping must still happen.
    cert, key, client_context = tls_files
    with trio.fail_after(10):
        service = Recorder()
        secure = trio_tcp.ListenerSecureSocket(key=trio_tcp.CertKey(cert_file=cert, key_file=key))
        async with trio.open_nursery() as nursery:
            port = await start(nursery, service, secure_socket=secure)
            listener: trio_tcp.Listener = nursery.listener  # type: ignore[attr-defined]
            raw = await trio.open_tcp_stream(LOCAL, port)
            peer = trio.SSLStream(raw, client_context, server_hostname=LOCAL)
            await peer.do_handshake()
            await service.connected.wait()

            async def broadcast() -> None:
                with contextlib.suppress(trio_tcp.Error):
                    while True:
                        await service.callers[0].write_bytes(b"m" * 1000)

            nursery.start_soon(broadcast)
            await trio.sleep(0.5)  # the peer's buffers fill; the write is stuck
            started = trio.current_time()
            if stop == "immediate":
                await listener.immediate_stop()
            else:
                await listener.graceful_stop(0.3)
            assert trio.current_time() - started < 1.5
            assert service.closed == 1
            assert listener.stats.active_connections == 0
            await trio.aclose_forcefully(peer)


@pytest.mark.trio
async def test_idle_timeout_closes_a_connection_whose_write_is_stuck() -> None:
    with trio.fail_after(10):
        service = Recorder()
        async with trio.open_nursery() as nursery:
            port = await start(nursery, service, idle_timeout=0.3)
            stuck = await trio.open_tcp_stream(LOCAL, port)  # neither sends nor reads
            await service.connected.wait()
            outcome: list[str] = []

            async def push() -> None:
                try:
                    await service.callers[0].write_bytes(b"x" * 50_000_000)
                except trio_tcp.ConnectionClosedError:
                    outcome.append("closed")

            nursery.start_soon(push)
            with trio.fail_after(3):
                while service.closed == 0:  # noqa: ASYNC110 - no event for on_close
                    await trio.sleep(0.05)
            await trio.testing.wait_all_tasks_blocked()
            assert outcome == ["closed"]
            assert service.errors == []
            await stuck.aclose()
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_an_immediate_stop_during_the_proxy_header_gives_everything_back() -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0, local_host=LOCAL, proxy_protocol=True, max_connections=1)
        listener.attach(Recorder())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            assert listener.port is not None
            silent = await trio.open_tcp_stream(LOCAL, listener.port)  # no header
            while listener.stats.active_connections == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
            await listener.immediate_stop()
            assert listener.stats.active_connections == 0
            await silent.aclose()
