"""The per-connection driver, over in-memory connections (no sockets).

Each test serves a service with ``trio_tcp.testing.open_memory_server`` and
speaks raw bytes from the client's end, so every lifecycle rule is checked on
the real driver: ``on_connect`` before any read, one ``on_bytes`` at a time
(backpressure), both ``on_bytes`` forms, errors to ``on_error`` once,
``on_close`` exactly once, cancellation never reaching a callback, the idle
timeout, ``caller.close()`` and a graceful stop.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_tcp
from trio_tcp.testing import MemoryServer, MemoryStream, open_memory_server

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


# -- helpers ------------------------------------------------------------------------


class Events(trio_tcp.ConnectionService):
    """A connection service that records ``on_error`` and ``on_close``, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.closed = trio.Event()

    @property
    def errors(self) -> list[Any]:
        return [value for name, value in self.events if name == "error"]

    @property
    def close_count(self) -> int:
        return sum(1 for name, _ in self.events if name == "close")

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.events.append(("error", err))

    async def on_close(self) -> None:
        self.events.append(("close", None))
        self.closed.set()


class Recorder(Events):
    """Echoes, and records every callback, in order."""

    async def on_bytes(self, data: bytes) -> bytes | None:
        self.events.append(("bytes", bytes(data)))
        return bytes(data)


class Accept:
    """A ``Service`` whose ``on_connect`` keeps the caller and returns a fixed handler.

    It also has an ``on_close``, which must never be called: the service is not
    the connection service.
    """

    def __init__(self, handler: object) -> None:
        self.handler = handler
        self.callers: list[trio_tcp.Caller] = []
        self.service_on_close_called = False

    async def on_connect(self, caller: trio_tcp.Caller) -> Any:
        self.callers.append(caller)
        return self.handler

    async def on_close(self) -> None:  # pragma: no cover - the point is that it never runs
        self.service_on_close_called = True


@asynccontextmanager
async def served(service: Any, **options: Any) -> AsyncIterator[tuple[MemoryStream, MemoryServer]]:
    """A service served in memory, and one raw client connection to it."""
    async with open_memory_server(service, **options) as server:
        yield await server.open_stream(), server


async def ended(server: MemoryServer, total: int = 1) -> None:
    """Wait until ``total`` connections have come and gone (on_close included)."""
    while server.stats.total_connections < total or server.stats.active_connections:  # noqa: ASYNC110
        await trio.sleep(0.001)


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the server sends until it closes its end."""
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_tcp" and r.levelno >= logging.ERROR]


# -- on_connect ----------------------------------------------------------------------


@pytest.mark.trio
async def test_nothing_is_read_until_on_connect_returns() -> None:
    with trio.fail_after(5):
        log: list[str] = []
        release = trio.Event()
        handler = Recorder()

        class SlowAccept:
            async def on_connect(self, caller: trio_tcp.Caller) -> Recorder:
                log.append("connect start")
                await release.wait()
                log.append("connect end")
                return handler

        async with served(SlowAccept()) as (client, server):
            await client.send_all(b"early")
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["connect start"]
            assert client.peer_unread() == 5  # still unread by the server
            release.set()
            assert await client.receive_some() == b"early"
            await client.aclose()
            await ended(server)
        assert log == ["connect start", "connect end"]
        assert handler.events == [("bytes", b"early"), ("close", None)]


@pytest.mark.trio
async def test_on_connect_returning_none_closes_without_callbacks() -> None:
    with trio.fail_after(5):
        service = Accept(None)
        async with served(service) as (client, server):
            await client.send_all(b"ignored")
            assert await read_to_eof(client) == b""  # an orderly close: EOF, not a reset
            await ended(server)
        assert len(service.callers) == 1
        assert service.callers[0].closed
        assert not service.service_on_close_called


@pytest.mark.trio
async def test_on_connect_raising_is_logged_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        handler = Recorder()

        class Failing:
            on_close_called = False

            async def on_connect(self, caller: trio_tcp.Caller) -> Recorder:
                raise ValueError("no thanks")

            async def on_close(self) -> None:  # pragma: no cover - must not run
                self.on_close_called = True

        service = Failing()
        async with served(service) as (client, server):
            assert await read_to_eof(client) == b""
            await ended(server)
            assert server.stats.errors == 1
        assert handler.events == []
        assert not service.on_close_called
        [record] = error_records(caplog)
        assert "on_connect" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], ValueError)


@pytest.mark.trio
async def test_no_service_closes_at_once(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        async with served(Accept(Recorder())) as (first, server):
            server.listener.detach(server.listener._service)  # type: ignore[arg-type]
            client = await server.open_stream()
            assert await read_to_eof(client) == b""
            await first.aclose()
        assert any("no service attached" in r.getMessage() for r in caplog.records)


@pytest.mark.trio
async def test_a_stop_during_on_connect_still_closes_and_runs_nothing_else() -> None:
    with trio.fail_after(5):
        started = trio.Event()

        class Stuck:
            async def on_connect(self, caller: trio_tcp.Caller) -> None:
                started.set()
                await trio.sleep_forever()

        async with served(Stuck()) as (client, server):
            await started.wait()
            await server.listener.immediate_stop()
            # The server end was closed on the way out: the client sees the end, not a hang.
            assert await read_to_eof(client) == b""


# -- the read loop -------------------------------------------------------------------


@pytest.mark.trio
async def test_chunks_arrive_in_order_one_call_at_a_time() -> None:
    with trio.fail_after(5):
        gate = trio.Event()
        in_call = trio.Event()
        depth = [0]

        class Slow:
            seen: list[bytes] = []  # noqa: RUF012 - one instance per test

            async def on_bytes(self, data: bytes) -> None:
                depth[0] += 1
                assert depth[0] == 1, "on_bytes called while another call runs"
                self.seen.append(bytes(data))
                in_call.set()
                await gate.wait()
                depth[0] -= 1

        handler = Slow()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"one")
            await in_call.wait()
            # More data arrives while on_bytes is busy: it must not be read yet.
            await client.send_all(b"two")
            await client.send_all(b"three")
            await trio.testing.wait_all_tasks_blocked()
            assert client.peer_unread() == len(b"twothree")
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            await client.send_all(b"four")
            await client.send_eof()
            assert await read_to_eof(client) == b""
            await ended(server)
        assert b"".join(handler.seen) == b"onetwothreefour"
        assert handler.seen[0] == b"one"


class DataForm:
    async def on_bytes(self, data: bytes) -> bytes:
        return b"data:" + data


class CallerForm:
    async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> bytes:
        assert isinstance(caller, trio_tcp.Caller)
        return b"caller:" + data


class SyncDataForm:
    def on_bytes(self, data: bytes) -> bytes:
        return b"sync-data:" + data


class SyncCallerForm:
    def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> bytes:
        assert isinstance(caller, trio_tcp.Caller)
        return b"sync-caller:" + data


@pytest.mark.parametrize(
    ("handler", "prefix"),
    [
        pytest.param(DataForm(), b"data:", id="async-data"),
        pytest.param(CallerForm(), b"caller:", id="async-caller-data"),
        pytest.param(SyncDataForm(), b"sync-data:", id="sync-data"),
        pytest.param(SyncCallerForm(), b"sync-caller:", id="sync-caller-data"),
    ],
)
@pytest.mark.trio
async def test_both_on_bytes_forms_sync_and_async(handler: object, prefix: bytes) -> None:
    with trio.fail_after(5):
        async with served(Accept(handler)) as (client, _):
            await client.send_all(b"ping")
            assert await client.receive_some() == prefix + b"ping"
            await client.aclose()


@pytest.mark.trio
async def test_all_sync_callbacks_and_duck_typed_service() -> None:
    with trio.fail_after(5):
        events: list[str] = []

        class SyncHandler:  # no base class
            def on_bytes(self, data: bytes) -> bytes:
                if data == b"bad":
                    raise ValueError("bad")
                return bytes(data).upper()

            def on_error(self, err: trio_tcp.Error) -> None:
                events.append(f"error:{type(err.__cause__).__name__}")

            def on_close(self) -> None:
                events.append("close")

        # A plain namespace with a sync on_connect is a Service too.
        service = types.SimpleNamespace(on_connect=lambda caller: SyncHandler())
        async with served(service) as (client, server):
            await client.send_all(b"abc")
            assert await client.receive_some() == b"ABC"
            await client.send_all(b"bad")
            assert await read_to_eof(client) == b""
            await ended(server)
        assert events == ["error:ValueError", "close"]


@pytest.mark.trio
async def test_service_without_any_method_discards_data() -> None:
    with trio.fail_after(5):

        class Nothing:
            pass

        async with served(Accept(Nothing())) as (client, server):
            await client.send_all(b"into the void")
            await trio.testing.wait_all_tasks_blocked()
            await client.send_eof()
            assert await read_to_eof(client) == b""
            await ended(server)
            assert server.stats.bytes_received == len(b"into the void")
            assert server.stats.errors == 0


@pytest.mark.trio
async def test_missing_on_error_and_on_close_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):

        class OnlyBytes:
            async def on_bytes(self, data: bytes) -> None:
                raise ValueError("fails, and nobody listens")

        async with served(Accept(OnlyBytes())) as (client, server):
            await client.send_all(b"x")
            assert await read_to_eof(client) == b""
            await ended(server)
            assert server.stats.errors == 1
        assert len(error_records(caplog)) == 1


# -- return values ------------------------------------------------------------------


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(bytes, id="bytes"),
        pytest.param(bytearray, id="bytearray"),
        pytest.param(memoryview, id="memoryview"),
    ],
)
@pytest.mark.trio
async def test_bytes_like_return_is_written_back(convert: Callable[[bytes], Any]) -> None:
    with trio.fail_after(5):

        class Reply:
            async def on_bytes(self, data: bytes) -> Any:
                return convert(b"re:" + data)

        async with served(Accept(Reply())) as (client, server):
            await client.send_all(b"x")
            assert await client.receive_some() == b"re:x"
            await client.aclose()
            await ended(server)
            assert server.stats.bytes_sent == 4


@pytest.mark.trio
async def test_none_return_writes_nothing() -> None:
    with trio.fail_after(5):

        class Silent:
            async def on_bytes(self, data: bytes) -> None:
                return None

        async with served(Accept(Silent())) as (client, server):
            await client.send_all(b"hello")
            await trio.testing.wait_all_tasks_blocked()
            await client.send_eof()
            assert await read_to_eof(client) == b""
            await ended(server)
            assert server.stats.bytes_sent == 0


@pytest.mark.parametrize(
    "value",
    [pytest.param("text", id="str"), pytest.param(42, id="int"), pytest.param([1], id="list")],
)
@pytest.mark.trio
async def test_non_bytes_return_is_an_error(value: object) -> None:
    with trio.fail_after(5):

        class Wrong(Recorder):
            async def on_bytes(self, data: bytes) -> Any:
                return value

        handler = Wrong()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"x")
            assert await read_to_eof(client) == b""
            await ended(server)
        [error] = handler.errors
        assert isinstance(error, trio_tcp.Error)
        assert isinstance(error.__cause__, TypeError)
        assert handler.close_count == 1


# -- errors -------------------------------------------------------------------------


@pytest.mark.trio
async def test_on_bytes_raising_goes_to_on_error_once(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(5):
        boom = ValueError("boom")

        class Raising(Recorder):
            async def on_bytes(self, data: bytes) -> bytes | None:
                self.events.append(("bytes", bytes(data)))
                raise boom

        handler = Raising()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"x")
            assert await read_to_eof(client) == b""
            await ended(server)
            assert server.stats.errors == 1
        assert [name for name, _ in handler.events] == ["bytes", "error", "close"]
        [error] = handler.errors
        assert type(error) is trio_tcp.Error
        assert error.__cause__ is boom
        [record] = error_records(caplog)
        assert record.exc_info is not None
        assert record.exc_info[1] is boom


@pytest.mark.trio
async def test_trio_tcp_error_from_on_bytes_is_passed_as_is() -> None:
    with trio.fail_after(5):
        own = trio_tcp.FramingError("my own framing complaint")

        class Raising(Recorder):
            async def on_bytes(self, data: bytes) -> bytes | None:
                raise own

        handler = Raising()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"x")
            await ended(server)
        assert handler.errors == [own]
        assert handler.close_count == 1


@pytest.mark.parametrize("where", ["on_error", "on_close"])
@pytest.mark.trio
async def test_on_error_and_on_close_raising_are_only_logged(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        calls: list[str] = []

        class Raising:
            async def on_bytes(self, data: bytes) -> None:
                raise ValueError("first failure")

            async def on_error(self, err: trio_tcp.Error) -> None:
                calls.append("error")
                if where == "on_error":
                    raise RuntimeError("on_error failed too")

            async def on_close(self) -> None:
                calls.append("close")
                if where == "on_close":
                    raise RuntimeError("on_close failed")

        async with served(Accept(Raising())) as (client, server):
            await client.send_all(b"x")
            await ended(server)  # nothing propagates
        assert calls == ["error", "close"]
        messages = [r.getMessage() for r in error_records(caplog)]
        assert len(messages) == 2
        assert any(where in message for message in messages)
        assert all(r.exc_info is not None for r in error_records(caplog))


@pytest.mark.trio
async def test_clean_peer_close_is_not_an_error() -> None:
    with trio.fail_after(5):
        handler = Recorder()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"bye")
            assert await client.receive_some() == b"bye"
            await client.aclose()
            await ended(server)
            assert server.stats.errors == 0
            assert server.stats.aborted == 0
        assert handler.events == [("bytes", b"bye"), ("close", None)]


@pytest.mark.trio
async def test_a_reset_reaches_on_error_with_its_cause() -> None:
    with trio.fail_after(5):
        handler = Recorder()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"hi")
            assert await client.receive_some() == b"hi"
            client.reset()
            await ended(server)
            assert server.stats.errors == 1
        [error] = handler.errors
        assert isinstance(error, trio_tcp.ConnectionClosedError)
        assert "reset" in str(error)
        assert isinstance(error.__cause__, trio.BrokenResourceError)
        assert handler.close_count == 1


@pytest.mark.trio
async def test_failed_write_from_another_task_is_reported() -> None:
    with trio.fail_after(5):
        handler = Recorder()
        service = Accept(handler)
        async with served(service) as (client, server):
            await trio.testing.wait_all_tasks_blocked()
            [caller] = service.callers
            client.reset()  # the peer is gone: writes break
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await caller.write_bytes(b"to nobody")
            await ended(server)
        [error] = handler.errors
        assert isinstance(error, trio_tcp.ConnectionClosedError)
        assert error.__cause__ is not None
        assert handler.close_count == 1


# -- cancellation -------------------------------------------------------------------


class ShieldedClose(Recorder):
    """on_close awaits: it only completes if it is shielded from the cancellation."""

    async def on_close(self) -> None:
        await trio.lowlevel.checkpoint()
        await super().on_close()


@pytest.mark.parametrize("when", ["waiting-for-input", "inside-on_bytes"])
@pytest.mark.trio
async def test_cancellation_never_reaches_on_error(when: str) -> None:
    with trio.fail_after(5):
        in_call = trio.Event()

        class Handler(ShieldedClose):
            async def on_bytes(self, data: bytes) -> bytes | None:
                in_call.set()
                await trio.sleep_forever()
                raise AssertionError("unreachable")  # pragma: no cover

        handler = Handler()
        async with served(Accept(handler)) as (client, server):
            if when == "inside-on_bytes":
                await client.send_all(b"x")
                await in_call.wait()
            else:
                await trio.testing.wait_all_tasks_blocked()
            await server.listener.immediate_stop()
            assert server.stats.errors == 0
            assert await read_to_eof(client) == b""
        assert handler.errors == []
        assert handler.events[-1] == ("close", None)
        assert handler.close_count == 1


@pytest.mark.trio
async def test_keyboard_interrupt_never_reaches_a_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(5):

        class Interrupted(Recorder):
            async def on_bytes(self, data: bytes) -> bytes | None:
                raise KeyboardInterrupt

        handler = Interrupted()
        with pytest.raises(BaseExceptionGroup) as info:  # noqa: PT012 - the server unwinds
            async with served(Accept(handler)) as (client, _):
                await client.send_all(b"x")
                await trio.sleep_forever()
        assert info.group_contains(KeyboardInterrupt, depth=None)
        assert not info.group_contains(Exception, depth=None)
        assert handler.errors == []
        assert error_records(caplog) == []
        # on_close still runs from the driver's finally.
        assert handler.close_count == 1


# -- idle timeout -------------------------------------------------------------------


@pytest.mark.trio
async def test_idle_timeout_closes_without_error(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        handler = Recorder()
        async with served(Accept(handler), idle_timeout=10) as (client, server):
            start = trio.current_time()
            assert await read_to_eof(client) == b""
            # Closed between the timeout and one sweep (a quarter of it) later.
            assert 10 <= trio.current_time() - start <= 12.5
            await ended(server)
            assert server.stats.errors == 0
        assert handler.events == [("close", None)]


@pytest.mark.trio
async def test_received_bytes_restart_the_idle_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        handler = Recorder()
        async with served(Accept(handler), idle_timeout=10) as (client, _):
            start = trio.current_time()
            await trio.sleep(6)
            await client.send_all(b"tick")
            await handler.closed.wait()
            assert 16 <= trio.current_time() - start <= 18.5
        assert handler.errors == []


@pytest.mark.trio
async def test_write_from_another_task_restarts_the_idle_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        handler = Recorder()
        service = Accept(handler)
        async with served(service, idle_timeout=10) as (client, _):
            start = trio.current_time()
            await trio.sleep(6)
            await service.callers[0].write_bytes(b"news")
            assert await read_to_eof(client) == b"news"
            await handler.closed.wait()
            assert 16 <= trio.current_time() - start <= 18.5
        assert handler.errors == []


@pytest.mark.trio
async def test_a_long_on_bytes_is_not_idle(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):

        class Thinker(Recorder):
            async def on_bytes(self, data: bytes) -> bytes | None:
                await trio.sleep(30)  # longer than idle_timeout, but busy, not idle
                return b"answer"

        handler = Thinker()
        async with served(Accept(handler), idle_timeout=10) as (client, _):
            await client.send_all(b"question")
            start = trio.current_time()
            assert await read_to_eof(client) == b"answer"
            assert 40 <= trio.current_time() - start <= 42.5
        assert handler.errors == []


# -- closing from the service -------------------------------------------------------


@pytest.mark.trio
async def test_caller_close_from_on_bytes_is_a_clean_end() -> None:
    with trio.fail_after(5):

        class Closer(Events):
            async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> None:
                await caller.write_bytes(b"goodbye")
                await caller.close()
                await caller.close()  # idempotent
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await caller.write_bytes(b"too late")
                self.events.append(("bytes", bytes(data)))

        handler = Closer()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"quit")
            assert await read_to_eof(client) == b"goodbye"
            await ended(server)
            assert server.stats.errors == 0
        assert handler.events == [("bytes", b"quit"), ("close", None)]


@pytest.mark.trio
async def test_caller_close_from_another_task_is_a_clean_end() -> None:
    with trio.fail_after(5):
        handler = Recorder()
        service = Accept(handler)
        async with served(service) as (client, server):
            await trio.testing.wait_all_tasks_blocked()
            [caller] = service.callers
            await caller.close()
            assert caller.closed
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await caller.write_bytes(b"after close")
            assert await read_to_eof(client) == b""
            await handler.closed.wait()
            assert server.stats.errors == 0
        assert handler.events == [("close", None)]


@pytest.mark.trio
async def test_a_stop_lets_the_running_on_bytes_finish_and_reply() -> None:
    with trio.fail_after(5):
        in_call = trio.Event()
        release = trio.Event()

        class Busy(Recorder):
            async def on_bytes(self, data: bytes) -> bytes | None:
                self.events.append(("bytes", bytes(data)))
                in_call.set()
                await release.wait()
                return b"finished"

        handler = Busy()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"work")
            await in_call.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.listener.graceful_stop)
                await trio.testing.wait_all_tasks_blocked()
                release.set()
                assert await read_to_eof(client) == b"finished"
        assert handler.events == [("bytes", b"work"), ("close", None)]


@pytest.mark.trio
async def test_a_stop_while_waiting_ends_at_once(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        handler = Recorder()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"hi")
            assert await client.receive_some() == b"hi"
            start = trio.current_time()
            await server.listener.graceful_stop()
            assert trio.current_time() - start < 0.01  # received before: no first-byte grace
            assert await read_to_eof(client) == b""
        assert handler.events == [("bytes", b"hi"), ("close", None)]


@pytest.mark.trio
async def test_counters_track_bytes() -> None:
    with trio.fail_after(5):
        async with served(Accept(Recorder())) as (client, server):
            for chunk in (b"a", b"bc", b"def"):
                await client.send_all(chunk)
                assert await client.receive_some() == chunk
            await client.aclose()
            await ended(server)
            assert server.stats.bytes_received == 6
            assert server.stats.bytes_sent == 6
            assert server.stats.errors == 0
            [] = server.callers  # gone once closed


# -- TLS handshake (in the connection's task) ----------------------------------------


def server_tls_context() -> Any:
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


@pytest.mark.parametrize(
    "peer",
    [
        pytest.param(b"\x16\x03\x01", id="half-hello"),
        pytest.param(b"\x00 not a ClientHello\r\n", id="garbage"),
    ],
)
@pytest.mark.trio
async def test_failed_or_timed_out_handshake_runs_no_callback(
    peer: bytes, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(100):
        service = Accept(Recorder())
        async with served(service, secure_socket=server_tls_context()) as (client, server):
            await client.send_all(peer)
            start = trio.current_time()
            await read_to_eof(client)  # closed (whatever alert bytes come first)
            assert trio.current_time() - start <= 10  # the default handshake timeout
            await ended(server)
            assert server.stats.errors == 1
        assert service.callers == []


@pytest.mark.trio
async def test_a_silent_tls_client_is_dropped_at_the_timeout_without_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        service = Accept(Recorder())
        async with served(service, secure_socket=server_tls_context()) as (client, server):
            start = trio.current_time()
            assert await read_to_eof(client) == b""
            assert trio.current_time() - start == pytest.approx(10)
            await ended(server)
            assert server.stats.errors == 1
        assert service.callers == []


@pytest.mark.trio
async def test_a_stop_during_a_handshake_still_closes_the_stream() -> None:
    with trio.fail_after(5):
        service = Accept(Recorder())
        async with served(service, secure_socket=server_tls_context()) as (client, server):
            await client.send_all(b"\x16\x03\x01")  # part of a hello: the handshake waits
            await trio.testing.wait_all_tasks_blocked()
            await server.listener.immediate_stop()
            await read_to_eof(client)
        assert service.callers == []


# -- framing through the driver -------------------------------------------------------


class Lines(Events):
    framing = trio_tcp.framing.Delimited(b"\n", max_size=16)

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[bytes] = []

    async def on_bytes(self, caller: trio_tcp.Caller, line: bytes) -> bytes:
        self.lines.append(line)
        if line == b"push":
            await caller.write_message(b"pushed")  # framed, from inside the callback
        return line.upper()


@pytest.mark.trio
async def test_framed_service_gets_whole_messages_and_replies_framed() -> None:
    with trio.fail_after(5):
        handler = Lines()
        async with served(Accept(handler)) as (client, server):
            for piece in (b"he", b"llo\nwor", b"ld\n\npu", b"sh\n"):
                await client.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()
            await client.send_eof()
            assert await read_to_eof(client) == b"HELLO\nWORLD\n\npushed\nPUSH\n"
            await ended(server)
        assert handler.lines == [b"hello", b"world", b"", b"push"]
        assert handler.events == [("close", None)]


@pytest.mark.parametrize(
    "tail",
    [pytest.param(b"partial", id="eof-mid-message"), pytest.param(b"x" * 40, id="over-max-size")],
)
@pytest.mark.trio
async def test_framing_errors_reach_on_error(tail: bytes) -> None:
    with trio.fail_after(5):
        handler = Lines()
        async with served(Accept(handler)) as (client, server):
            await client.send_all(b"ok\n")
            assert await client.receive_some() == b"OK\n"
            await client.send_all(tail)
            await client.send_eof()
            assert await read_to_eof(client) == b""
            await ended(server)
        assert handler.lines == [b"ok"]
        [error] = handler.errors
        assert isinstance(error, trio_tcp.FramingError)
        assert handler.close_count == 1
