"""``Writer``: one queue, one send at a time, in order; any unfinished send aborts.

Over a fake stream that records every ``send_all`` (so batching is counted,
not guessed), can hold a send open, take part of one and wait, or fail, and
refuses two concurrent sends as trio streams do. Timing under
``autojump_clock``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
import trio
import trio.testing
from _sockets import clogged_stream_pair

from trio_tcp import ConnectionClosedError, OutboxFullError, UsageError, WriteTimeoutError
from trio_tcp._stats import Counters
from trio_tcp._writer import Writer

KIB = 1024


class RecordingStream(trio.abc.Stream):
    """Records each ``send_all``; a test can hold sends, make them partial, or fail them."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []  # what each send_all was given
        self.delivered = bytearray()  # what actually went out
        self.hold: trio.Event | None = None  # set: sends wait for it
        self.partial = False  # with hold: half goes out before the wait
        self.seconds_per_send = 0.0
        self.fail: BaseException | None = None
        self.closed = False
        self._sending = False
        self._closing = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("two concurrent sends")
        if self.closed:
            raise trio.ClosedResourceError("closed")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
            data = bytes(data)
            self.sends.append(data)
            if self.fail is not None:
                raise self.fail
            if self.seconds_per_send:
                await trio.sleep(self.seconds_per_send)
            if self.hold is not None:
                if self.partial:
                    self.delivered += data[: len(data) // 2]
                    data = data[len(data) // 2 :]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._wait_closed, nursery.cancel_scope)
                    await self.hold.wait()
                    nursery.cancel_scope.cancel()
                if self.closed:
                    raise trio.ClosedResourceError("closed while sending")
            self.delivered += data
        finally:
            self._sending = False

    async def _wait_closed(self, scope: trio.CancelScope) -> None:
        await self._closing.wait()
        scope.cancel()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    def close_now(self) -> None:
        self.closed = True
        self._closing.set()

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()


def make_writer(**options: object) -> tuple[Writer, RecordingStream]:
    stream = RecordingStream()
    writer = Writer(stream, **options)  # type: ignore[arg-type]
    return writer, stream


async def start_in_order(nursery: trio.Nursery, *jobs: Callable[[], object]) -> None:
    """Start each job once the previous one is blocked: their arrival order is the listed one."""
    for job in jobs:
        nursery.start_soon(job)  # type: ignore[arg-type]
        await trio.testing.wait_all_tasks_blocked()


# -- batching -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_replies_queued_in_one_batch_go_out_in_one_send() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        sizes = [writer.queue(f"reply {n};".encode()) for n in range(10)]
        assert sizes == sorted(sizes)
        assert writer.pending == sizes[-1]
        await writer.flush()
        assert stream.sends == [b"".join(f"reply {n};".encode() for n in range(10))]
        assert writer.pending == 0
        assert writer.bytes_sent == sizes[-1]


@pytest.mark.trio
async def test_a_write_takes_what_is_queued_in_the_same_send() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        writer.queue(b"a")
        writer.queue(b"b")
        await writer.write(b"c")
        assert stream.sends == [b"abc"]


@pytest.mark.trio
async def test_flush_with_nothing_queued_sends_nothing() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        await writer.flush()
        assert stream.sends == []


@pytest.mark.trio
@pytest.mark.parametrize("how", ["write", "flush"])
async def test_large_writes_go_out_in_slices_of_at_most_64_kib(how: str) -> None:
    # A TLS stream copies a whole send_all into OpenSSL: slices bound that copy.
    with trio.fail_after(5):
        writer, stream = make_writer()
        data = random.Random(1).randbytes(200 * KIB + 7)
        if how == "write":
            await writer.write(data)
        else:
            writer.queue(data[:1000])
            writer.queue(data[1000:])
            await writer.flush()
        assert [len(sent) for sent in stream.sends] == [64 * KIB] * 3 + [8 * KIB + 7]
        assert bytes(stream.delivered) == data
        assert writer.bytes_sent == len(data)


@pytest.mark.trio
async def test_bytes_sent_are_counted_for_the_listener() -> None:
    with trio.fail_after(5):
        counters = Counters()
        writer, _ = make_writer(counters=counters)
        await writer.write(b"12345")
        writer.queue(b"678")
        await writer.flush()
        assert counters.bytes_sent == writer.bytes_sent == 8


@pytest.mark.trio
async def test_only_bytes_like_data_is_taken() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        with pytest.raises(TypeError, match="expected bytes"):
            await writer.write("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected bytes"):
            writer.send_nowait("text")  # type: ignore[arg-type]
        await writer.write(bytearray(b"ba") + memoryview(b"mv"))
        assert stream.sends == [b"bamv"]


# -- the FIFO gate ------------------------------------------------------------------------


@pytest.mark.trio
async def test_writers_from_several_tasks_finish_in_arrival_order_and_never_interleave() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        stream.hold = trio.Event()
        finished: list[int] = []

        def job(number: int) -> Callable[[], object]:
            async def write() -> None:
                await writer.write(bytes([65 + number]) * 3000)
                finished.append(number)

            return write

        async with trio.open_nursery() as nursery:
            # Task 0 holds the stream; 1 to 5 queue up behind it, in this order.
            await start_in_order(nursery, *(job(n) for n in range(6)))
            stream.hold.set()
        assert finished == list(range(6))
        # One send per writer, each whole, in arrival order; the fake raises
        # BusyResourceError on any overlap, so none happened.
        assert stream.sends == [bytes([65 + n]) * 3000 for n in range(6)]


@pytest.mark.trio
async def test_order_is_kept_across_write_queue_flush_and_send_nowait_from_several_tasks() -> None:
    with trio.fail_after(10):
        writer, stream = make_writer()
        writer.outbox_limit = 1 << 20
        rng = random.Random(7)
        tasks, per_task = 5, 40

        async def speaker(task: int) -> None:
            for seq in range(per_task):
                message = f"<{task}:{seq}>".encode()
                way = rng.choice(["write", "queue", "nowait"])
                if way == "write":
                    await writer.write(message)
                elif way == "queue":
                    writer.queue(message)
                    await writer.flush()
                else:
                    writer.send_nowait(message)
                for _ in range(rng.randrange(3)):
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            writer.spawn = nursery.start_soon
            async with trio.open_nursery() as speakers:
                for task in range(tasks):
                    speakers.start_soon(speaker, task)
            await writer.stop_outbox()
        assert not writer.aborted
        messages = bytes(stream.delivered).decode().strip("<>").split("><")
        assert len(messages) == tasks * per_task
        for task in range(tasks):
            mine = [int(m.split(":")[1]) for m in messages if m.startswith(f"{task}:")]
            assert mine == list(range(per_task))
        # Coalesced: fewer sends than messages.
        assert len(stream.sends) < tasks * per_task


@pytest.mark.trio
async def test_send_nowait_goes_after_a_write_already_sent_and_before_a_later_one() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        writer.outbox_limit = 1000
        async with trio.open_nursery() as nursery:
            writer.spawn = nursery.start_soon
            await writer.write(b"1")
            writer.send_nowait(b"2")
            await writer.write(b"3")
            writer.send_nowait(b"4")
            await writer.stop_outbox()
        assert bytes(stream.delivered) == b"1234"


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_write_cancelled_while_waiting_its_turn_sends_nothing_and_leaves_it_usable() -> (
    None
):
    with trio.fail_after(5):
        writer, stream = make_writer()
        stream.hold = trio.Event()
        waiting = trio.CancelScope()

        async def first() -> None:
            await writer.write(b"first")

        async def second() -> None:
            with waiting:
                await writer.write(b"second")

        async def third() -> None:
            await writer.write(b"third")

        async with trio.open_nursery() as nursery:
            await start_in_order(nursery, first, second, third)
            waiting.cancel()
            await trio.testing.wait_all_tasks_blocked()
            stream.hold.set()
        assert waiting.cancelled_caught
        assert stream.sends == [b"first", b"third"]
        assert not writer.aborted
        await writer.write(b"fourth")
        assert bytes(stream.delivered) == b"firstthirdfourth"


@pytest.mark.trio
async def test_a_write_in_a_cancelled_scope_sends_nothing_and_leaves_it_usable() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        writer.queue(b"queued")
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.write(b"x")
        with trio.CancelScope() as scope:
            scope.cancel()
            await writer.flush()
        assert stream.sends == []
        assert not writer.aborted
        await writer.write(b"x")
        assert stream.sends == [b"queuedx"]


@pytest.mark.trio
async def test_a_write_cancelled_midway_aborts_the_writer() -> None:
    with trio.fail_after(5):
        aborts: list[bool] = []
        writer, stream = make_writer()
        writer.on_abort = lambda: aborts.append(True)
        stream.hold = trio.Event()
        stream.partial = True
        sending = trio.CancelScope()
        outcome: list[BaseException] = []

        async def first() -> None:
            with sending:
                await writer.write(b"0123456789")

        async def second() -> None:
            try:
                await writer.write(b"after")
            except ConnectionClosedError as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            await start_in_order(nursery, first, second)
            assert bytes(stream.delivered) == b"01234"  # half of it went out
            sending.cancel()
        assert sending.cancelled_caught
        # The peer got half a message: the connection must not be used again.
        assert writer.aborted
        assert writer.closed
        assert writer.failure is None  # cancelled, not failed
        assert aborts == [True]
        assert stream.closed
        assert len(outcome) == 1  # the waiting writer is refused, not sent after half a message
        assert bytes(stream.delivered) == b"01234"
        with pytest.raises(ConnectionClosedError):
            await writer.write(b"later")
        writer.queue(b"late reply")
        with pytest.raises(ConnectionClosedError):
            await writer.flush()
        assert writer.pending == 0


# -- failures and the stall timeout --------------------------------------------------------


@pytest.mark.trio
async def test_a_broken_stream_aborts_with_connection_closed() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        stream.fail = trio.BrokenResourceError("reset")
        with pytest.raises(ConnectionClosedError) as info:
            await writer.write(b"x")
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        assert writer.aborted
        assert writer.failure is info.value
        assert stream.closed


@pytest.mark.trio
async def test_a_stalled_send_is_a_write_timeout_and_aborts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        writer, stream = make_writer(timeout=5)
        stream.hold = trio.Event()  # never set: the peer never reads
        start = trio.current_time()
        with pytest.raises(WriteTimeoutError, match="no progress for 5 s") as info:
            await writer.write(b"stuck")
        assert trio.current_time() - start == pytest.approx(5)
        assert writer.aborted
        assert writer.failure is info.value
        assert stream.closed
        with pytest.raises(ConnectionClosedError):
            await writer.write(b"more")


@pytest.mark.trio
async def test_flush_takes_its_own_stall_limit(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        writer, stream = make_writer(timeout=50)
        stream.hold = trio.Event()
        writer.queue(b"goodbye")
        start = trio.current_time()
        with pytest.raises(WriteTimeoutError):
            await writer.flush(timeout=2)
        assert trio.current_time() - start == pytest.approx(2)


@pytest.mark.trio
async def test_a_slow_send_that_keeps_moving_is_not_a_stall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every 64 KiB slice takes 3 s, the whole 12 s: each slice is progress.
    with trio.fail_after(100):
        writer, stream = make_writer(timeout=5)
        stream.seconds_per_send = 3
        start = trio.current_time()
        await writer.write(bytes(256 * KIB))
        assert trio.current_time() - start == pytest.approx(12)
        assert not writer.aborted


@pytest.mark.trio
async def test_a_stalled_tcp_stream_is_a_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Over TCP the stream itself times the stall (TCPStream's stall_timeout).
    with trio.fail_after(100):
        left, right = await clogged_stream_pair()
        writer = Writer(left, timeout=3)
        with pytest.raises(WriteTimeoutError):
            await writer.write(bytes(100 * KIB))
        assert writer.aborted
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all(b"x")
        await right.aclose()


# -- the outbox ------------------------------------------------------------------------------


def test_send_nowait_needs_a_way_to_start_the_writer_task() -> None:
    writer, _ = make_writer()
    writer.outbox_limit = 100
    with pytest.raises(UsageError, match="Listener"):
        writer.send_nowait(b"x")


@pytest.mark.trio
async def test_send_nowait_copies_what_it_is_given() -> None:
    with trio.fail_after(5):
        writer, stream = make_writer()
        writer.outbox_limit = 100
        data = bytearray(b"before")
        async with trio.open_nursery() as nursery:
            writer.spawn = nursery.start_soon
            writer.send_nowait(data)
            data[:] = b"after!"
            await writer.stop_outbox()
        assert bytes(stream.delivered) == b"before"


@pytest.mark.trio
async def test_outbox_overflow_under_raise_refuses_only_that_message() -> None:
    with trio.fail_after(5):
        counters = Counters()
        writer, stream = make_writer(counters=counters)
        writer.outbox_limit, writer.outbox_overflow = 160, "raise"
        stream.hold = trio.Event()
        async with trio.open_nursery() as nursery:
            writer.spawn = nursery.start_soon
            writer.send_nowait(b"a" * 60)
            await trio.testing.wait_all_tasks_blocked()  # the writer task is sending it
            writer.send_nowait(b"b" * 60)  # 120 of 160: the batch being sent counts too
            with pytest.raises(OutboxFullError, match="limit of 160"):
                writer.send_nowait(b"c" * 41)
            writer.send_nowait(b"d" * 40)  # exactly at the limit: taken
            stream.hold.set()
            await writer.stop_outbox()
        assert bytes(stream.delivered) == b"a" * 60 + b"b" * 60 + b"d" * 40
        assert not writer.aborted
        assert counters.outbox_overflows == 0


@pytest.mark.trio
async def test_outbox_overflow_under_close_aborts_the_connection() -> None:
    with trio.fail_after(5):
        counters = Counters()
        aborts: list[bool] = []
        writer, stream = make_writer(counters=counters)
        writer.on_abort = lambda: aborts.append(True)
        writer.outbox_limit = 100
        stream.hold = trio.Event()
        async with trio.open_nursery() as nursery:
            writer.spawn = nursery.start_soon
            writer.send_nowait(b"a" * 60)
            await trio.testing.wait_all_tasks_blocked()
            writer.send_nowait(b"b" * 40)  # 100 of 100, the batch being sent included
            writer.send_nowait(b"c" * 1)  # over: returns, but the connection is done
            assert writer.aborted
            assert isinstance(writer.failure, OutboxFullError)
            assert writer.pending == 0
            assert stream.closed  # closed at once: the stuck send is woken
            with pytest.raises(ConnectionClosedError):
                writer.send_nowait(b"d")
            await writer.stop_outbox()
        assert counters.outbox_overflows == 1
        assert aborts == [True]
        assert b"b" not in stream.delivered
