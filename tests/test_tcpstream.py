"""``TCPStream``: the whole trio stream contract, checked by trio's own checker, and the rest.

The checker runs with a clogged pair too (both directions full), which is what
exercises the blocking paths: ``wait_send_all_might_not_block``, a sender
woken by a close, two blocked senders. The other tests cover what the checker
does not: failures are checkpoints too, the stall timeout, ``close_now`` from
another task, the kernel counters, and the sockets it accepts.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from _sockets import clog, clogged_stream_pair, reset_now, stream_pair, tcp_pair

from trio_tcp._tcpstream import TCPStream, from_trio_socket, prepare_socket

#: ``unacked_output`` needs SIOCOUTQ.
needs_outq = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIOCOUTQ is Linux's")


async def _stream_pair() -> tuple[TCPStream, TCPStream]:
    return await stream_pair()


async def _eventually(condition: Callable[[], bool]) -> None:
    # Kernel counters have no event to wait on: poll (the caller's fail_after bounds it).
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.001)


# -- the trio contract -----------------------------------------------------------------


@pytest.mark.trio
async def test_half_closeable_stream_contract() -> None:
    with trio.fail_after(20):
        await trio.testing.check_half_closeable_stream(_stream_pair, clogged_stream_pair)


@pytest.mark.trio
async def test_receive_after_peer_reset_is_broken() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        # SO_LINGER on, zero seconds: close() sends RST instead of FIN.
        reset_now(right.socket)
        with pytest.raises(trio.BrokenResourceError) as info:
            await left.receive_some(10)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        await left.aclose()


@pytest.mark.trio
async def test_close_wakes_a_blocked_receiver() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await left.receive_some(10)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await left.aclose()
        await right.aclose()


@pytest.mark.trio
async def test_every_operation_is_a_checkpoint() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        await right.send_all(b"ready")
        await trio.sleep(0.05)  # the data is there: receive takes the fast path
        with trio.testing.assert_checkpoints():
            assert await left.receive_some(10) == b"ready"
        with trio.testing.assert_checkpoints():
            await left.send_all(b"x")
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await left.receive_some(10)
        await left.aclose()
        await right.aclose()


@pytest.mark.trio
async def test_a_failure_on_the_first_try_is_a_checkpoint_too() -> None:
    # The fast path fails without waiting; it must still yield, as trio's
    # sockets do, or a loop over a dead connection would starve the others.
    with trio.fail_after(5):
        left, right = await _stream_pair()
        reset_now(right.socket)
        await trio.sleep(0.01)  # the RST has arrived
        with trio.testing.assert_checkpoints(), pytest.raises(trio.BrokenResourceError):
            await left.receive_some(10)
        with trio.testing.assert_checkpoints(), pytest.raises(trio.BrokenResourceError):
            await left.send_all(b"x")
        await left.aclose()


# -- the stall timeout -----------------------------------------------------------------


@pytest.mark.trio
async def test_send_all_stalled_raises_too_slow(autojump_clock: trio.testing.MockClock) -> None:
    # The peer never reads: no byte moves, so the timeout fires after exactly that long.
    with trio.fail_after(100):
        left, right = await clogged_stream_pair()
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await left.send_all(b"x" * 100_000, stall_timeout=7)
        assert trio.current_time() - start == pytest.approx(7)
        await left.aclose()
        await right.aclose()


@pytest.mark.trio
async def test_send_all_is_not_too_slow_while_bytes_keep_moving() -> None:
    # A slow reader takes a little every 20 ms: the whole send lasts well past
    # the stall timeout, yet no single wait does, so it completes.
    stall = 0.3
    with trio.fail_after(10):
        left, right = await clogged_stream_pair()

        async def slow_reader() -> None:
            while True:
                await trio.sleep(0.02)
                await right.receive_some(8192)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            start = trio.current_time()
            await left.send_all(bytes(150_000), stall_timeout=stall)
            assert trio.current_time() - start > stall
            nursery.cancel_scope.cancel()
        await left.aclose()
        await right.aclose()


# -- closed means closed ---------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("how", ["aclose", "close_now"])
async def test_a_closed_stream_refuses_every_operation(how: str) -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        if how == "aclose":
            await left.aclose()
        else:
            left.close_now()
        for operation in (
            lambda: left.receive_some(10),
            lambda: left.receive_some(),
            lambda: left.send_all(b"x"),
            lambda: left.send_all(b"x", stall_timeout=1),
            left.wait_send_all_might_not_block,
            left.send_eof,
        ):
            with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
                await operation()
        # Closing again is harmless, and still a checkpoint.
        with trio.testing.assert_checkpoints():
            await left.aclose()
        left.close_now()
        assert left.socket.fileno() == -1
        assert left.pending_input() == 0
        assert left.unacked_output() == 0
        await right.aclose()


@pytest.mark.trio
async def test_a_socket_closed_underfoot_is_a_closed_stream() -> None:
    # Someone closed the socket itself, not the stream: every operation still
    # says "closed", never a ValueError about a negative file descriptor.
    with trio.fail_after(5):
        left, right = await _stream_pair()
        left.socket.close()
        for operation in (
            lambda: left.receive_some(10),
            lambda: left.send_all(b"x"),
            left.wait_send_all_might_not_block,
            left.send_eof,
        ):
            with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
                await operation()
        assert left.pending_input() == 0
        assert left.unacked_output() is None
        await left.aclose()
        await right.aclose()


@pytest.mark.trio
async def test_close_now_wakes_a_blocked_reader_and_a_blocked_writer() -> None:
    with trio.fail_after(5):
        # Only left -> right is full: `left` has no room to write and nothing to read.
        left, right = await stream_pair(small_buffers=True)
        await clog(left)
        woken: list[str] = []

        async def blocked(name: str, operation: Callable[[], Awaitable[object]]) -> None:
            with pytest.raises(trio.ClosedResourceError):
                await operation()
            woken.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocked, "reader", lambda: left.receive_some(1 << 20))
            nursery.start_soon(blocked, "writer", lambda: left.send_all(bytes(1 << 20)))
            await trio.testing.wait_all_tasks_blocked()
            left.close_now()  # synchronous, from a third task
        assert sorted(woken) == ["reader", "writer"]
        await right.aclose()


@pytest.mark.trio
async def test_send_after_send_eof_is_closed_and_receiving_goes_on() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        await left.send_eof()
        await left.send_eof()  # idempotent
        with pytest.raises(trio.ClosedResourceError, match="EOF"):
            await left.send_all(b"x")
        assert await right.receive_some(10) == b""
        await right.send_all(b"still open")
        assert await left.receive_some(100) == b"still open"
        await left.aclose()
        await right.aclose()


# -- kernel counters -------------------------------------------------------------------


@pytest.mark.trio
async def test_pending_input_counts_what_the_kernel_holds_unread() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        assert left.pending_input() == 0
        await right.send_all(b"0123456789")
        await _eventually(lambda: left.pending_input() == 10)
        assert await left.receive_some(4) == b"0123"
        assert left.pending_input() == 6
        assert await left.receive_some() == b"456789"
        assert left.pending_input() == 0
        await left.aclose()
        await right.aclose()


@needs_outq
@pytest.mark.trio
async def test_unacked_output_drops_to_zero_once_the_peer_has_it_all() -> None:
    with trio.fail_after(5):
        left, right = await clogged_stream_pair()
        # The peer's window is shut: what we queued is sent but not acknowledged.
        assert (left.unacked_output() or 0) > 0
        while right.pending_input() or (left.unacked_output() or 0):
            with trio.move_on_after(0.05):
                await right.receive_some(1 << 16)
        assert left.unacked_output() == 0
        await left.aclose()
        await right.aclose()


# -- what sockets it takes -------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5.0], ids=["blocking", "with-timeout"])
def test_a_blocking_socket_is_refused(timeout: float | None) -> None:
    left, right = tcp_pair()
    with left, right:
        left.settimeout(timeout)
        with pytest.raises(ValueError, match="non-blocking"):
            TCPStream(left)


def test_prepare_socket_sets_non_blocking_and_no_delay() -> None:
    left, right = tcp_pair()
    with left, right:
        prepare_socket(left)
        assert left.gettimeout() == 0.0
        assert left.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


class _RefusesNoDelay(socket.socket):
    """A TCP socket whose kernel, say, will not turn Nagle off."""

    def setsockopt(self, level: int, option: int, value: Any, *rest: Any) -> None:
        if option == socket.TCP_NODELAY:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")
        super().setsockopt(level, option, value, *rest)


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="no TCP_NOTSENT_LOWAT")
def test_prepare_socket_sets_each_option_on_its_own() -> None:
    left, right = tcp_pair()
    with left, right, _RefusesNoDelay(fileno=left.detach()) as refusing:
        prepare_socket(refusing)
        assert refusing.gettimeout() == 0.0
        assert not refusing.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # The refusal did not cost the option after it.
        assert refusing.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 2**14


def test_from_trio_socket_takes_the_stdlib_socket_out() -> None:
    left, right = tcp_pair()
    with right:
        trio_socket = trio.socket.from_stdlib_socket(left)
        fileno = trio_socket.fileno()
        with from_trio_socket(trio_socket) as taken:
            assert isinstance(taken, socket.socket)
            assert taken.fileno() == fileno
            assert (taken.family, taken.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert trio_socket.fileno() == -1  # detached: closing it cannot close ours


@pytest.mark.trio
async def test_prepare_socket_on_a_unix_socketpair_does_not_fail() -> None:
    # No TCP options on a UNIX socket: those are skipped, the rest still applies.
    with trio.fail_after(5):
        left, right = socket.socketpair()
        for sock in (left, right):
            prepare_socket(sock)
            assert sock.gettimeout() == 0.0
        a, b = TCPStream(left), TCPStream(right)
        await a.send_all(b"over unix")
        assert await b.receive_some(100) == b"over unix"
        await a.send_eof()
        assert await b.receive_some(100) == b""
        await a.aclose()
        await b.aclose()


@pytest.mark.trio
async def test_the_peer_address_given_is_kept() -> None:
    with trio.fail_after(5):
        left, right = tcp_pair()
        for sock in (left, right):
            prepare_socket(sock)
        given, unknown = TCPStream(left, ("192.0.2.1", 4242)), TCPStream(right)
        assert given.peer == ("192.0.2.1", 4242)
        assert unknown.peer is None
        await given.aclose()
        await unknown.aclose()


@pytest.mark.trio
async def test_clog_really_blocks_both_directions() -> None:
    # The helper the contract check relies on: a send must wait on both sides.
    with trio.fail_after(5):
        left, right = await clogged_stream_pair()
        for stream in (left, right):
            with trio.move_on_after(0.05) as scope:
                await stream.wait_send_all_might_not_block()
            assert scope.cancelled_caught
        await clog(left)  # already full: nothing more fits
        await left.aclose()
        await right.aclose()
