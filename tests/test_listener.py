"""``Listener`` over real loopback sockets (port 0 only), with trio_tcp and raw trio clients.

Covers attach/detach, serve/stop, limits, stats and ``serve``; that a failing
callback never disturbs the listener; concurrent writes to one caller; clean
close and reset; graceful and immediate stop; argument validation; and one
port for every address family. A hypothesis property checks that however a
client chunks its writes, ``on_bytes`` sees exactly the bytes sent, in order.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from _loopback import ipv6_loopback_works, port_of
from hypothesis import given
from hypothesis import strategies as st

import trio_tcp

LOCAL = "127.0.0.1"
MiB = 1024 * 1024
FLOOD = 32 * MiB


# -- a recording service ----------------------------------------------------------------


class Hub:
    """A ``Service`` that records every callback of every connection.

    Its connections echo what they receive, except for a few commands (sent as
    one write each, after a round trip, so each arrives as one chunk):
    ``boom`` raises, ``flood`` replies with 32 MiB, ``slow`` replies after
    0.1 s, ``stuck`` never returns, ``close`` closes from the server side,
    ``stop`` calls ``graceful_stop`` from inside ``on_bytes``.
    """

    def __init__(self, prefix: bytes = b"") -> None:
        self.prefix = prefix
        self.listener: trio_tcp.Listener | None = None
        self.fail_connect = False
        self.callers: list[trio_tcp.Caller] = []
        self.errors: list[tuple[str, trio_tcp.Error]] = []
        self.closes: list[str] = []
        self.flooding = 0
        self.in_slow = trio.Event()
        self.in_stuck = trio.Event()

    async def on_connect(self, caller: trio_tcp.Caller) -> Handler:
        self.callers.append(caller)
        if self.fail_connect:
            raise ValueError("on_connect refused this one")
        return Handler(self, caller)

    def close_count(self, caller: trio_tcp.Caller) -> int:
        return self.closes.count(caller.id)


class Handler(trio_tcp.ConnectionService):
    def __init__(self, hub: Hub, caller: trio_tcp.Caller) -> None:
        self.hub = hub
        self.caller = caller

    async def on_bytes(self, data: bytes) -> bytes | None:
        hub = self.hub
        if data == b"boom":
            raise ValueError("on_bytes failed on purpose")
        if data == b"flood":
            hub.flooding += 1
            return b"f" * FLOOD
        if data == b"slow":
            hub.in_slow.set()
            await trio.sleep(0.1)
            return b"slow done"
        if data == b"stuck":
            hub.in_stuck.set()
            await trio.sleep_forever()
        if data == b"close":
            await self.caller.close()
            return None
        if data == b"stop":
            assert hub.listener is not None
            await hub.listener.graceful_stop()
            return b"stopping"
        return hub.prefix + data

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.hub.errors.append((self.caller.id, err))

    async def on_close(self) -> None:
        await trio.lowlevel.checkpoint()  # an awaiting on_close: it is shielded from stops
        self.hub.closes.append(self.caller.id)


# -- helpers ----------------------------------------------------------------------------


@asynccontextmanager
async def serving(service: Any, **options: Any) -> AsyncIterator[trio_tcp.Listener]:
    """A listener on 127.0.0.1, port 0, serving ``service``; stopped on the way out."""
    listener = trio_tcp.Listener(0, local_host=LOCAL, **options)
    if service is not None:
        listener.attach(service)
    if isinstance(service, Hub):
        service.listener = listener
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.immediate_stop()


async def connect(listener: trio_tcp.Listener, host: str = LOCAL) -> trio_tcp.Client:
    return await trio_tcp.Client.connect(host, port_of(listener))


async def raw_connect(listener: trio_tcp.Listener) -> trio.SocketStream:
    return await trio.open_tcp_stream(LOCAL, port_of(listener))


async def roundtrip(client: trio_tcp.Client, data: bytes, expect: bytes | None = None) -> bytes:
    """Write ``data`` and read back as many bytes as the expected reply has."""
    expected = data if expect is None else expect
    await client.write_bytes(data)
    return await client.read_exactly(len(expected))


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded by the test's ``fail_after``) for a condition set by another task."""
    while True:
        if predicate():
            return
        await trio.sleep(0.005)


async def reset(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER (1, 0): the peer gets a RST instead of a FIN."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def drain(stream: trio.SocketStream) -> None:
    """Read until the server's end is gone (EOF or reset)."""
    try:
        while await stream.receive_some(MiB):
            pass
    except trio.BrokenResourceError:
        pass


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_tcp" and r.levelno >= logging.ERROR]


# -- binding and ports -------------------------------------------------------------------


@pytest.mark.trio
async def test_port_zero_gives_one_port_for_every_family() -> None:
    with trio.fail_after(10):
        hub = Hub()
        listener = trio_tcp.Listener(0)
        listener.attach(hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            port = port_of(listener)
            assert 0 < port <= 65535
            async with await trio_tcp.Client.connect("127.0.0.1", port) as client:
                assert await roundtrip(client, b"over IPv4") == b"over IPv4"
            ipv6 = ipv6_loopback_works()
            if ipv6:
                async with await trio_tcp.Client.connect("::1", port) as client:
                    assert await roundtrip(client, b"over IPv6") == b"over IPv6"
                    assert client.remote_port == port
                assert hub.callers[-1].remote_host == "::1"
            await listener.graceful_stop()
        if not ipv6:
            pytest.skip("IPv6 loopback unavailable: only the IPv4 half ran")


@pytest.mark.trio
async def test_bind_error_when_the_port_is_taken() -> None:
    with trio.fail_after(5):
        with trio.socket.socket() as taken:
            await taken.bind((LOCAL, 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            listener = trio_tcp.Listener(port, local_host=LOCAL)
            listener.attach(Hub())
            async with trio.open_nursery() as nursery:
                with pytest.raises(trio_tcp.BindError) as info:
                    await nursery.start(listener.serve)
            assert isinstance(info.value.__cause__, OSError)
            assert info.value.__cause__.errno == errno.EADDRINUSE
            assert listener.port is None


class NoSockets:
    """Fails the test if anything tries to create a socket."""

    def __call__(self, *args: object, **kwargs: object) -> Any:
        raise AssertionError("a socket was created before the arguments were checked")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"local_port": 70000}, trio_tcp.ConfigurationError, id="port-70000"),
        pytest.param({"local_port": -1}, trio_tcp.ConfigurationError, id="port-negative"),
        pytest.param({"local_port": "80"}, TypeError, id="port-str"),
        pytest.param({"local_port": True}, TypeError, id="port-bool"),
        pytest.param({"local_port": 1.5}, TypeError, id="port-float"),
        pytest.param({"idle_timeout": -1}, trio_tcp.ConfigurationError, id="idle-negative"),
        pytest.param({"idle_timeout": math.nan}, trio_tcp.ConfigurationError, id="idle-nan"),
        pytest.param({"idle_timeout": math.inf}, trio_tcp.ConfigurationError, id="idle-inf"),
        pytest.param({"idle_timeout": "3"}, TypeError, id="idle-str"),
        pytest.param({"idle_timeout": 0}, trio_tcp.ConfigurationError, id="idle-zero"),
        pytest.param({"max_connections": 0}, trio_tcp.ConfigurationError, id="max-conn-zero"),
        pytest.param({"max_connections": 2.0}, TypeError, id="max-conn-float"),
        pytest.param({"backlog": -5}, trio_tcp.ConfigurationError, id="backlog-negative"),
        pytest.param({"local_host": ""}, trio_tcp.ConfigurationError, id="host-empty"),
        pytest.param({"local_host": 127}, TypeError, id="host-int"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(
    kwargs: dict[str, Any], error: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trio.socket, "socket", NoSockets())
    monkeypatch.setattr(trio, "open_tcp_listeners", NoSockets())
    arguments: dict[str, Any] = {"local_port": 0, **kwargs}
    with pytest.raises(error) as info:
        trio_tcp.Listener(**arguments)
    if error is TypeError:
        assert not isinstance(info.value, trio_tcp.Error)
    else:
        assert isinstance(info.value, ValueError)


@pytest.mark.trio
async def test_bad_graceful_stop_timeout_is_rejected() -> None:
    with trio.fail_after(5):
        async with serving(Hub()) as listener:
            with pytest.raises(trio_tcp.ConfigurationError):
                await listener.graceful_stop(-1)
            assert listener.port is not None  # still serving


# -- attach / detach ---------------------------------------------------------------------


def test_attach_and_detach_rules() -> None:
    listener = trio_tcp.Listener(0, local_host=LOCAL)
    first, second = Hub(), Hub()
    listener.attach(first)
    with pytest.raises(trio_tcp.Error, match="already attached"):
        listener.attach(second)
    with pytest.raises(trio_tcp.Error, match="not attached"):
        listener.detach(second)
    listener.detach(first)
    with pytest.raises(trio_tcp.Error, match="not attached"):
        listener.detach(first)
    listener.attach(second)
    with pytest.raises(TypeError, match="on_connect"):
        trio_tcp.Listener(0).attach(object())  # type: ignore[arg-type]


@pytest.mark.trio
async def test_without_a_service_connections_are_closed_at_once() -> None:
    with trio.fail_after(5):
        async with serving(None) as listener:
            client = await connect(listener)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await client.aclose()
            # Attaching later serves the next connection.
            hub = Hub()
            listener.attach(hub)
            async with await connect(listener) as client:
                assert await roundtrip(client, b"now served") == b"now served"


@pytest.mark.trio
async def test_swapping_services_while_serving() -> None:
    with trio.fail_after(5):
        first, second = Hub(b"first:"), Hub(b"second:")
        async with serving(first) as listener:
            early = await connect(listener)
            assert await roundtrip(early, b"a", b"first:a") == b"first:a"
            listener.detach(first)
            listener.attach(second)
            late = await connect(listener)
            assert await roundtrip(late, b"b", b"second:b") == b"second:b"
            # A connection keeps the service it was accepted with.
            assert await roundtrip(early, b"c", b"first:c") == b"first:c"
            await early.aclose()
            await late.aclose()
        assert len(first.callers) == 1
        assert len(second.callers) == 1


# -- serve / stop ------------------------------------------------------------------------


@pytest.mark.trio
async def test_serving_twice_is_an_error() -> None:
    with trio.fail_after(5):
        async with serving(Hub()) as listener:
            port = listener.port
            with pytest.raises(trio_tcp.Error, match="already serving"):
                await listener.serve()
            assert listener.port == port


@pytest.mark.trio
async def test_two_concurrent_serve_calls_one_wins() -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        listener.attach(Hub())
        outcomes: list[str] = []
        async with trio.open_nursery() as nursery:

            async def attempt() -> None:
                try:
                    await nursery.start(listener.serve)
                except trio_tcp.Error:
                    outcomes.append("error")
                else:
                    outcomes.append("serving")

            async with trio.open_nursery() as attempts:
                attempts.start_soon(attempt)
                attempts.start_soon(attempt)
            await listener.immediate_stop()
        assert sorted(outcomes) == ["error", "serving"]


@pytest.mark.trio
async def test_a_stopped_listener_can_serve_again() -> None:
    with trio.fail_after(5):
        hub = Hub()
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        listener.attach(hub)
        for round_ in range(2):
            async with trio.open_nursery() as nursery:
                await nursery.start(listener.serve)
                async with await connect(listener) as client:
                    assert await roundtrip(client, b"round %d" % round_) == b"round %d" % round_
                await listener.graceful_stop()
            assert listener.port is None


@pytest.mark.trio
async def test_stopping_when_not_serving_or_twice_does_nothing() -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        await listener.graceful_stop()
        await listener.immediate_stop()
        listener.attach(Hub())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            await listener.graceful_stop()
            await listener.graceful_stop()
            await listener.immediate_stop()
        assert listener.port is None


@pytest.mark.trio
async def test_module_level_serve_returns_the_listener_and_refuses_after_stop() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                functools.partial(trio_tcp.serve, 0, hub, local_host=LOCAL)
            )
            assert isinstance(listener, trio_tcp.Listener)
            port = port_of(listener)
            async with await trio_tcp.Client.connect(LOCAL, port) as client:
                assert await roundtrip(client, b"one-liner") == b"one-liner"
            await listener.graceful_stop()
        with pytest.raises(trio_tcp.ConnectError):
            await trio_tcp.Client.connect(LOCAL, port)


# -- one failing callback never disturbs the listener ---------------------------------


@pytest.mark.trio
async def test_on_bytes_raising_affects_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            idle = await connect(listener)
            assert await roundtrip(idle, b"hello") == b"hello"
            bad = await connect(listener)
            await bad.write_bytes(b"boom")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await bad.read_bytes()
            await until(lambda: len(hub.closes) == 1)
            assert await roundtrip(idle, b"still here") == b"still here"
            async with await connect(listener) as fresh:
                assert await roundtrip(fresh, b"fresh") == b"fresh"
            await idle.aclose()
            await bad.aclose()
            bad_id = hub.callers[1].id
            await until(lambda: len(hub.closes) == 3)
        [(errored, error)] = hub.errors
        assert errored == bad_id
        assert isinstance(error.__cause__, ValueError)
        assert hub.closes.count(bad_id) == 1
        assert len(error_records(caplog)) == 1


@pytest.mark.trio
async def test_on_connect_raising_affects_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            idle = await connect(listener)
            assert await roundtrip(idle, b"hello") == b"hello"
            hub.fail_connect = True
            bad = await connect(listener)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await bad.read_bytes()
            hub.fail_connect = False
            assert await roundtrip(idle, b"still here") == b"still here"
            async with await connect(listener) as fresh:
                assert await roundtrip(fresh, b"fresh") == b"fresh"
            bad_id = hub.callers[1].id
            await idle.aclose()
            await bad.aclose()
            await until(lambda: len(hub.closes) == 2)
            assert listener.stats.errors == 1
        assert bad_id not in hub.closes  # no connection service, so no on_close
        assert hub.errors == []
        [record] = error_records(caplog)
        assert "on_connect" in record.getMessage()


# -- concurrent writes to one caller; a chat broadcast ---------------------------------


@pytest.mark.trio
async def test_concurrent_caller_writes_stay_whole_and_in_call_order() -> None:
    with trio.fail_after(10):
        hub = Hub()
        async with serving(hub) as listener:
            peer = await raw_connect(listener)
            await until(lambda: len(hub.callers) == 1)
            [caller] = hub.callers
            order: list[int] = []
            received = bytearray()
            total = 20 * MiB

            async def write(value: int) -> None:
                order.append(value)  # no checkpoint before write_bytes queues on its lock
                await caller.write_bytes(bytes([value]) * MiB)

            async def read_slowly() -> None:
                reads = 0
                while len(received) < total:
                    received.extend(await peer.receive_some(64 * 1024))
                    reads += 1
                    if reads % 32 == 0:
                        await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_slowly)
                for value in range(20):
                    nursery.start_soon(write, 65 + value)
            assert sorted(order) == list(range(65, 85))
            expected = b"".join(bytes([value]) * MiB for value in order)
            assert received == expected
            await peer.aclose()
            await until(lambda: len(hub.closes) == 1)
        assert hub.errors == []


class Chat:
    """Every line a member sends goes to every other member, written from the sender's task."""

    def __init__(self) -> None:
        self.members: list[trio_tcp.Caller] = []

    async def on_connect(self, caller: trio_tcp.Caller) -> ChatMember:
        self.members.append(caller)
        return ChatMember(self)


class ChatMember(trio_tcp.ConnectionService):
    def __init__(self, chat: Chat) -> None:
        self.chat = chat

    async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> None:
        for member in self.chat.members:
            if member is not caller:
                await member.write_bytes(caller.id.encode() + b": " + data)


@pytest.mark.trio
async def test_chat_broadcast_through_other_connections_callers() -> None:
    with trio.fail_after(5):
        chat = Chat()
        async with serving(chat) as listener:
            clients = [await connect(listener) for _ in range(3)]
            await until(lambda: len(chat.members) == 3)
            ids = [member.id.encode() for member in chat.members]
            for speaker, client in enumerate(clients):
                await client.write_bytes(b"hi from %d\n" % speaker)
                for listener_index, other in enumerate(clients):
                    if listener_index != speaker:
                        line = await other.read_until(b"\n")
                        assert line == ids[speaker] + b": hi from %d" % speaker
            for client in clients:
                await client.aclose()


# -- clean close and reset ------------------------------------------------------


@pytest.mark.trio
async def test_client_close_is_a_clean_end_for_the_server() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            client = await connect(listener)
            assert await roundtrip(client, b"x") == b"x"
            await client.aclose()
            await until(lambda: len(hub.closes) == 1)
            await trio.sleep(0.02)  # a second on_close would show up here
        assert hub.closes == [hub.callers[0].id]
        assert hub.errors == []


@pytest.mark.trio
async def test_server_side_close_ends_the_client() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            client = await connect(listener)
            await client.write_bytes(b"close")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await until(lambda: len(hub.closes) == 1)
            await client.aclose()
        assert hub.errors == []


@pytest.mark.parametrize("phase", ["mid-read", "mid-write"])
@pytest.mark.trio
async def test_peer_reset_is_reported_then_closed(phase: str) -> None:
    with trio.fail_after(10):
        hub = Hub()
        async with serving(hub) as listener:
            peer = await raw_connect(listener)
            await peer.send_all(b"hello")
            assert await peer.receive_some() == b"hello"
            if phase == "mid-write":
                await peer.send_all(b"flood")
                await until(lambda: hub.flooding == 1)
                await trio.sleep(0.1)  # the server is now blocked writing 32 MiB
            await reset(peer)
            await until(lambda: len(hub.closes) == 1)
            [(_, error)] = hub.errors
            assert isinstance(error, trio_tcp.ConnectionClosedError)
            assert hub.close_count(hub.callers[0]) == 1
            async with await connect(listener) as fresh:
                assert await roundtrip(fresh, b"healthy") == b"healthy"


# -- graceful stop --------------------------------------------------------------------


@pytest.mark.trio
async def test_graceful_stop_closes_idle_connections_and_frees_the_port() -> None:
    with trio.fail_after(5):
        hub = Hub()
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        listener.attach(hub)
        served = trio.Event()

        async def serve(task_status: trio.TaskStatus[None]) -> None:
            await listener.serve(task_status=task_status)
            served.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(serve)
            port = port_of(listener)
            clients = [await connect(listener) for _ in range(3)]
            for client in clients:
                assert await roundtrip(client, b"hi") == b"hi"
            await listener.graceful_stop()
            assert served.is_set()
            assert listener.port is None
            assert sorted(hub.closes) == sorted(caller.id for caller in hub.callers)
            assert len(hub.closes) == 3
            for client in clients:
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await client.read_bytes()
            # The port can be bound again at once.
            again = trio_tcp.Listener(port, local_host=LOCAL)
            again.attach(Hub())
            await nursery.start(again.serve)
            assert again.port == port
            async with await connect(again) as client:
                assert await roundtrip(client, b"again") == b"again"
            await again.graceful_stop()
            for client in clients:
                await client.aclose()
        assert hub.errors == []


@pytest.mark.trio
async def test_graceful_stop_lets_a_running_on_bytes_finish_and_reply() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            client = await connect(listener)
            await client.write_bytes(b"slow")
            await hub.in_slow.wait()
            await listener.graceful_stop()
            assert listener.port is None
            assert await client.read_exactly(len(b"slow done")) == b"slow done"
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await client.aclose()
        assert len(hub.closes) == 1
        assert hub.errors == []


@pytest.mark.trio
async def test_graceful_stop_timeout_cancels_a_stuck_on_bytes() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            client = await connect(listener)
            await client.write_bytes(b"stuck")
            await hub.in_stuck.wait()
            start = trio.current_time()
            await listener.graceful_stop(timeout=0.2)
            elapsed = trio.current_time() - start
            assert 0.2 <= elapsed < 1.0
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await client.aclose()
        assert len(hub.closes) == 1  # on_close (which awaits) ran despite the cancel
        assert hub.errors == []


@pytest.mark.trio
async def test_graceful_stop_from_inside_on_bytes_does_not_deadlock() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            other = await connect(listener)
            assert await roundtrip(other, b"bystander") == b"bystander"
            client = await connect(listener)
            await client.write_bytes(b"stop")
            assert await client.read_exactly(len(b"stopping")) == b"stopping"
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await until(lambda: listener.port is None)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await other.read_bytes()
            await client.aclose()
            await other.aclose()
        assert len(hub.closes) == 2
        assert hub.errors == []


# -- immediate stop -------------------------------------------------------------------


@pytest.mark.trio
async def test_immediate_stop_with_peers_not_reading_returns_fast() -> None:
    with trio.fail_after(10):
        hub = Hub()
        async with serving(hub) as listener:
            peers = [await raw_connect(listener) for _ in range(2)]
            for peer in peers:
                await peer.send_all(b"flood")
            await until(lambda: hub.flooding == 2)
            await trio.sleep(0.1)  # both connections are blocked mid-write
            start = trio.current_time()
            await listener.immediate_stop()
            assert trio.current_time() - start < 1.0
            assert listener.port is None
            assert len(hub.closes) == 2
            for peer in peers:
                await drain(peer)  # the server's end is closed: EOF or reset, no hang
                await peer.aclose()
        assert hub.errors == []


@pytest.mark.trio
async def test_cancelling_the_nursery_around_serve_runs_every_on_close() -> None:
    with trio.fail_after(5):
        hub = Hub()
        listener = trio_tcp.Listener(0, local_host=LOCAL)
        listener.attach(hub)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            idle = await connect(listener)
            assert await roundtrip(idle, b"hi") == b"hi"
            busy = await connect(listener)
            await busy.write_bytes(b"stuck")
            await hub.in_stuck.wait()
            nursery.cancel_scope.cancel()
        assert listener.port is None
        assert len(hub.closes) == 2
        assert hub.errors == []
        for client in (idle, busy):
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            await client.aclose()


# -- limits --------------------------------------------------------------------------------


@pytest.mark.trio
async def test_max_connections_pauses_accepting() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub, max_connections=2) as listener:
            first, second = await connect(listener), await connect(listener)
            assert await roundtrip(first, b"1") == b"1"
            assert await roundtrip(second, b"2") == b"2"
            third = await connect(listener)  # completes in the kernel's backlog
            await third.write_bytes(b"3")
            await trio.sleep(0.2)
            assert len(hub.callers) == 2  # its on_connect has not run
            assert listener.stats.active_connections == 2
            await first.aclose()
            assert await third.read_exactly(1) == b"3"
            assert len(hub.callers) == 3
            await second.aclose()
            await third.aclose()


@pytest.mark.trio
async def test_idle_timeout_closes_idle_but_not_active_connections() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub, idle_timeout=0.3) as listener:
            # Before connecting: the server's idle clock starts after this.
            start = trio.current_time()
            idle = await connect(listener)
            active = await connect(listener)
            closed_after: list[float] = []

            async def watch_idle() -> None:
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await idle.read_bytes()
                closed_after.append(trio.current_time() - start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_idle)
                for _ in range(7):
                    assert await roundtrip(active, b"tick") == b"tick"
                    await trio.sleep(0.1)
            [elapsed] = closed_after
            assert 0.3 <= elapsed < 0.8
            assert await roundtrip(active, b"alive") == b"alive"
            assert len(hub.closes) == 1
            await idle.aclose()
            await active.aclose()
        assert hub.errors == []


@pytest.mark.trio
async def test_stats_count_connections_bytes_and_errors() -> None:
    with trio.fail_after(5):
        hub = Hub()
        async with serving(hub) as listener:
            stats = listener.stats
            assert (stats.active_connections, stats.total_connections) == (0, 0)
            client = await connect(listener)
            assert await roundtrip(client, b"12345") == b"12345"
            stats = listener.stats
            assert stats.active_connections == 1
            assert stats.total_connections == 1
            assert stats.bytes_received == 5
            assert stats.errors == 0
            # Counted when the server's send_all returns, which may be just
            # after the client already has the bytes.
            await until(lambda: listener.stats.bytes_sent == 5)
            bad = await connect(listener)
            await bad.write_bytes(b"boom")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await bad.read_bytes()
            await client.aclose()
            await bad.aclose()
            await until(lambda: listener.stats.active_connections == 0)
            stats = listener.stats
            assert stats.total_connections == 2
            assert stats.bytes_received == 9
            assert stats.bytes_sent == 5
            assert stats.errors == 1
        assert isinstance(stats, trio_tcp.ListenerStats)


# -- property: chunking never changes the bytes on_bytes sees -------------------------------


class Collector:
    def __init__(self) -> None:
        self.seen = bytearray()
        self.closed = trio.Event()

    async def on_connect(self, caller: trio_tcp.Caller) -> Collector:
        return self

    def on_bytes(self, data: bytes) -> None:
        self.seen.extend(data)

    def on_close(self) -> None:
        self.closed.set()


@given(
    chunks=st.lists(st.binary(max_size=4096), max_size=24),
    yield_between=st.booleans(),
)
def test_on_bytes_sees_exactly_the_bytes_sent(chunks: list[bytes], yield_between: bool) -> None:
    async def main() -> None:
        with trio.fail_after(10):
            collector = Collector()
            async with serving(collector) as listener:
                async with await connect(listener) as client:
                    for chunk in chunks:
                        await client.write_bytes(chunk)
                        if yield_between:
                            await trio.lowlevel.checkpoint()
                await collector.closed.wait()
            assert bytes(collector.seen) == b"".join(chunks)

    trio.run(main)


@pytest.mark.trio
async def test_a_plain_trio_socket_listener_is_served_on_the_lean_path() -> None:
    # An inherited socket costs what the listener's own sockets cost.
    from trio_tcp._tcpstream import TCPStream

    with trio.fail_after(5):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        streams: list[object] = []

        class Keep(trio_tcp.Service):
            async def on_connect(self, caller: trio_tcp.Caller) -> None:
                streams.append(caller._stream)

        listener = trio_tcp.Listener(0)
        listener.attach(Keep())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve_listeners, [trio.SocketListener(sock)])
            assert listener.port == port
            client = await trio.open_tcp_stream("127.0.0.1", port)
            assert await client.receive_some() == b""
            await client.aclose()
            await listener.immediate_stop()
        assert [type(stream) for stream in streams] == [TCPStream]
