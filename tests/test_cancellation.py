"""Cancellation from the caller around Client operations.

An outer cancel scope always surfaces as the caller's own cancellation, never
as a trio_tcp error. A cancelled read leaves the client usable and keeps the
bytes received so far; a write cancelled while sending closes the client (the
peer may have part of it); a cancelled connect leaks nothing.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing
from _loopback import connected, open_fds, read_until_eof, receive_exactly

import trio_tcp


async def _read_bytes(client: trio_tcp.Client) -> object:
    return await client.read_bytes()


async def _read_exactly(client: trio_tcp.Client) -> object:
    return await client.read_exactly(4)


async def _read_until(client: trio_tcp.Client) -> object:
    return await client.read_until(b"\n")


async def _iterate(client: trio_tcp.Client) -> object:
    return await client.__anext__()


READS = pytest.mark.parametrize(
    "read",
    [_read_bytes, _read_exactly, _read_until, _iterate],
    ids=["read_bytes", "read_exactly", "read_until", "anext"],
)


@pytest.mark.trio
@READS
async def test_cancelled_read_propagates_and_client_stays_usable(
    read: Callable[[trio_tcp.Client], Awaitable[object]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=2.0) as (client, peer):
            with trio.move_on_after(1.0) as scope:
                await read(client)
            assert scope.cancelled_caught
            assert not client.closed
            await peer.send_all(b"data\n")
            assert await client.read_until(b"\n") == b"data"


@pytest.mark.trio
@pytest.mark.parametrize("outer", [0.5, 1.0], ids=["outer-first", "same-deadline"])
async def test_outer_deadline_is_not_turned_into_read_timeout(
    outer: float, autojump_clock: trio.testing.MockClock
) -> None:
    # With both deadlines at the same instant, the caller's scope still wins:
    # the library raises ReadTimeoutError only when its own scope alone fired.
    with trio.fail_after(5):
        async with connected(timeout=1.0) as (client, _peer):
            with trio.move_on_after(outer) as scope:
                await client.read_bytes()
            assert scope.cancelled_caught


@pytest.mark.trio
async def test_cancelled_partial_read_keeps_received_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=None) as (client, peer):
            await peer.send_all(b"abc")
            with trio.move_on_after(1.0) as scope:
                await client.read_exactly(6)
            assert scope.cancelled_caught
            await peer.send_all(b"def")
            assert await client.read_exactly(6) == b"abcdef"


BIG = 64 * 1024 * 1024


@pytest.mark.trio
async def test_cancelled_write_closes_the_client(autojump_clock: trio.testing.MockClock) -> None:
    payload = random.Random(2).randbytes(BIG)
    with trio.fail_after(5):
        async with connected(write_timeout=None) as (client, peer):
            with trio.move_on_after(1.0) as scope:
                await client.write_bytes(payload)  # the peer never reads
            assert scope.cancelled_caught
            assert client.closed
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.write_bytes(b"MARK")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            # The peer gets part of the message, then the end of the stream.
            received, _was_reset = await read_until_eof(peer)
            assert len(received) < len(payload)
            assert received == payload[: len(received)]


@pytest.mark.trio
async def test_write_cancelled_while_queued_sends_nothing_and_keeps_client_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = random.Random(3).randbytes(8 * 1024 * 1024)
    with trio.fail_after(5):
        async with connected(write_timeout=None) as (client, peer):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.write_bytes, first)  # blocks: the peer is not reading
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(1.0) as scope:
                    await client.write_bytes(b"never sent")  # waits for the first write
                assert scope.cancelled_caught
                assert not client.closed
                assert await receive_exactly(peer, len(first)) == first
            await client.write_bytes(b"after")
            assert await receive_exactly(peer, 5) == b"after"


@contextmanager
def _full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: connects hang."""
    with socket.socket() as listening, socket.socket() as filler:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port: int = listening.getsockname()[1]
        filler.settimeout(5)
        filler.connect(("127.0.0.1", port))
        yield port


@pytest.mark.trio
async def test_cancelled_connect_propagates_and_leaks_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with _full_backlog() as port, trio.fail_after(5):
        before = open_fds()
        for _ in range(5):
            with trio.move_on_after(0.5) as scope:
                await trio_tcp.Client.connect("127.0.0.1", port, connect_timeout=10)
            assert scope.cancelled_caught
        assert open_fds() == before


@pytest.mark.trio
async def test_connect_in_cancelled_scope_opens_nothing() -> None:
    with _full_backlog() as port, trio.fail_after(5):
        before = open_fds()
        with trio.CancelScope() as scope:
            scope.cancel()
            await trio_tcp.Client.connect("127.0.0.1", port)
        assert scope.cancelled_caught
        assert open_fds() == before


class _InterruptedStream(trio.abc.Stream):
    """Every I/O call raises KeyboardInterrupt, as if Ctrl-C landed in it."""

    def __init__(self) -> None:
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise KeyboardInterrupt

    async def wait_send_all_might_not_block(self) -> None:
        raise KeyboardInterrupt

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        raise KeyboardInterrupt

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


@pytest.mark.trio
async def test_keyboard_interrupt_is_not_converted() -> None:
    stream = _InterruptedStream()
    client = trio_tcp.Client(stream)
    with trio.fail_after(5):
        with pytest.raises(KeyboardInterrupt):
            await client.read_bytes()
        closed_after_read = client.closed
        with pytest.raises(KeyboardInterrupt):
            await client.write_bytes(b"x")
    # A read cannot leave the stream half-done; a write interrupted midway
    # leaves it in an unknown state, so it is closed.
    assert not closed_after_read
    assert client.closed
    assert stream.closed
