"""The write side shared by ``Client`` and ``Caller``.

Theory of operation
-------------------
Everything written to one connection goes through one :class:`Writer`, in
order. Three ways in, one queue:

* ``write(data)`` (``write_bytes``, ``write_message``) sends everything
  queued before it, then ``data``, and returns once it is all sent;
* ``queue(data)`` adds a reply without sending it: the connection driver
  queues the replies to every message of one received chunk and ``flush``es
  them together when the chunk is handled, one write instead of one per
  message (Netty flushes on read-complete the same way);
* ``send_nowait(data)`` (a caller's *outbox*) adds data and returns at once;
  a writer task, started the first time it is needed, sends it. The queue is
  bounded: past ``outbox_limit`` the overflow policy applies, so one peer
  that stops reading costs a bounded amount of memory and never delays the
  task that wrote to it.

Sending is serialised by a FIFO gate (trio streams refuse two concurrent
``send_all`` calls): each send takes the whole queue, so data goes out in the
order it was queued, whichever task queued it.

A send that does not complete, whether it failed, stalled past the write
timeout or was cancelled midway, may have sent part of its data, and there
is no way to know how much; a TLS stream is unusable after it. So any
unfinished send *aborts* the connection: it is marked closed, the socket is
closed at once, and later writes raise
:class:`~trio_tcp.ConnectionClosedError`. The peer sees the connection end
instead of a stream silently resumed in the middle of a message.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

import trio
from trio.lowlevel import ParkingLot, checkpoint, checkpoint_if_cancelled

from ._config import TLS_WRITE_SLICE
from ._errors import (
    STREAM_ERRORS,
    ConnectionClosedError,
    Error,
    OutboxFullError,
    UsageError,
    WriteTimeoutError,
    stream_error,
)
from ._streams import Bytes, close_now, close_now_sync
from ._tcpstream import TCPStream

if TYPE_CHECKING:
    from ._stats import Counters

__all__ = ["Writer", "check_bytes"]

_BYTES_TYPES = (bytes, bytearray, memoryview)
#: The largest piece handed to one ``send_all``: a TLS stream copies a whole
#: write into OpenSSL's buffers (a 256 MiB write unsliced costs ~3x its size),
#: and each piece sent counts as progress for the idle and write timeouts.
_SLICE = TLS_WRITE_SLICE


def check_bytes(data: object) -> None:
    """Raise :class:`TypeError` unless ``data`` is bytes-like (a programming error)."""
    if not isinstance(data, _BYTES_TYPES):
        raise TypeError(f"expected bytes, bytearray or memoryview, got {type(data).__name__}")


class _Outbox:
    """The writer task's state; exists only once ``send_nowait`` was used."""

    __slots__ = ("done", "stop", "wakeup")

    def __init__(self) -> None:
        self.wakeup = ParkingLot()
        self.done = trio.Event()
        self.stop = False


class Writer:
    """Serialised, all-or-abort writes to one stream; see the module docstring.

    Args:
        stream: the stream to write to.
        raw: the transport the connection owns (the stream itself, or what is
            under its TLS layer); an aborted write closes it.
        timeout: a send that makes no progress for this long fails with
            :class:`~trio_tcp.WriteTimeoutError` (``None``: no limit).
        counters: the listener's counters, or ``None`` (a client).
    """

    __slots__ = (
        "_counters",
        "_gate",
        "_in_flight",
        "_outbox",
        "_pending",
        "_pending_size",
        "_writing",
        "aborted",
        "bytes_sent",
        "closed",
        "failure",
        "on_abort",
        "outbox_limit",
        "outbox_overflow",
        "raw",
        "spawn",
        "stream",
        "timeout",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        raw: trio.abc.Stream | None = None,
        *,
        timeout: float | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.stream = stream
        self.raw = stream if raw is None else raw
        self.timeout = timeout
        self._counters = counters
        #: No new writes are taken (closed by the user, or aborted).
        self.closed = False
        #: The stream is unusable: a send failed, stalled or was cancelled midway.
        self.aborted = False
        #: Why it was aborted, for the connection to report.
        self.failure: BaseException | None = None
        #: Called (synchronously) once when the connection is aborted.
        self.on_abort: Callable[[], None] | None = None
        #: Payload bytes actually sent.
        self.bytes_sent = 0
        self._writing = False
        self._gate: ParkingLot | None = None  # made on the first contended send
        self._pending: list[Bytes] = []
        self._pending_size = 0
        # Queued bytes a send has taken and not finished sending: still held,
        # so still counted against the outbox limit.
        self._in_flight = 0
        # The outbox: its bound and policy, how to start its task, and its state.
        self.outbox_limit = 0
        self.outbox_overflow = "close"
        self.spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None
        self._outbox: _Outbox | None = None

    @property
    def pending(self) -> int:
        """Bytes queued and not sent yet, including those a send is on (an outbox's size)."""
        return self._pending_size + self._in_flight

    @property
    def has_outbox(self) -> bool:
        """Whether ``send_nowait`` was ever used (and so a writer task exists)."""
        return self._outbox is not None

    # -- the three ways in ------------------------------------------------------------

    async def write(self, data: Bytes) -> None:
        """Send everything queued, then all of ``data``, or raise; see the module docstring."""
        check_bytes(data)
        await self._acquire()
        try:
            if self.closed:
                await checkpoint()
                raise ConnectionClosedError("connection already closed")
            if self._pending:
                self._pending.append(data)
                data = self._take()
            await self._send(data, self.timeout)
        finally:
            self._release()

    def queue(self, data: Bytes) -> int:
        """Queue ``data`` to go out with the next send; return how many bytes are queued."""
        self._pending.append(data)
        self._pending_size += len(data)
        return self._pending_size

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything queued (even once closed to new writes), or raise.

        Args:
            timeout: the stall limit for this send; ``None``: the writer's own.
        """
        if not self._pending:
            return
        stall = self.timeout if timeout is None else timeout
        if self._writing:
            await self._acquire(stall)
        else:  # uncontended, the commonest case: _acquire's first lines, without its call
            await checkpoint_if_cancelled()
            self._writing = True
        try:
            if not self._pending:
                return  # another task's send took it
            if self.aborted:
                self._pending.clear()
                self._pending_size = 0
                raise ConnectionClosedError("connection already closed")
            await self._send(self._take(), stall)
        finally:
            self._release()

    def send_nowait(self, data: Bytes) -> None:
        """Queue ``data`` for the writer task and return at once; see the module docstring."""
        check_bytes(data)
        if self.closed:
            raise ConnectionClosedError("connection already closed")
        size = len(data)
        waiting = self.pending
        if waiting + size > self.outbox_limit:
            error = OutboxFullError(
                f"outbox full: {waiting} bytes waiting, {size} more would pass the"
                f" limit of {self.outbox_limit} (the peer does not read fast enough)"
            )
            if self.outbox_overflow == "raise":
                raise error
            if self._counters is not None:
                self._counters.outbox_overflows += 1
            self.fail_now(error)
            return
        # A copy: the caller may reuse a bytearray as soon as this returns.
        self._pending.append(data if type(data) is bytes else bytes(data))
        self._pending_size += size
        outbox = self._outbox
        if outbox is None:
            outbox = self._start_outbox()
        outbox.wakeup.unpark_all()

    # -- closing -----------------------------------------------------------------------

    async def stop_outbox(self) -> None:
        """End the writer task, if there is one, and wait for it (send what is queued first)."""
        outbox = self._outbox
        if outbox is None:
            return
        outbox.stop = True
        outbox.wakeup.unpark_all()
        await outbox.done.wait()

    async def abort(self, failure: BaseException | None) -> None:
        """Mark the connection aborted and close its transport now, without flushing."""
        if self.aborted:
            return
        self.fail_now(failure)
        await close_now(self.raw)

    def fail_now(self, failure: BaseException | None) -> None:
        """Abort without awaiting: refuse writes, drop the queue, wake whoever must know.

        Closes the socket at once where that needs no await (waking a task
        stuck sending to a peer that does not read); otherwise the
        connection closes it from its own task.
        """
        if self.aborted:
            return
        self.aborted = self.closed = True
        self.failure = failure
        self._pending.clear()
        self._pending_size = self._in_flight = 0
        if self.on_abort is not None:
            self.on_abort()
        if self._outbox is not None:
            self._outbox.wakeup.unpark_all()
        close_now_sync(self.raw)

    # -- internals ---------------------------------------------------------------------

    def _take(self) -> Bytes:
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        # The queued bytes lead the data sent, so each piece sent releases them first.
        self._in_flight += self._pending_size
        self._pending_size = 0
        return data

    async def _acquire(self, stall: float | None = None) -> None:
        """Take the gate, in arrival order; honours a cancellation while nothing is sent.

        With a ``stall`` limit, a send ahead that makes no progress for that
        long stalls this one too (the outbox task's sends may have no limit
        of their own, and the close that flushes after them must end).
        """
        if not self._writing:
            await checkpoint_if_cancelled()
            self._writing = True
            return
        gate = self._gate
        if gate is None:
            gate = self._gate = ParkingLot()
        while True:
            progress = self.bytes_sent
            with trio.move_on_after(math.inf if stall is None else stall):
                await gate.park()  # the releasing task hands the gate over: _writing stays True
                break
            if self.bytes_sent == progress:
                await self._stalled(stall)
        try:
            await checkpoint_if_cancelled()
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        gate = self._gate
        if gate:
            gate.unpark()
        else:
            self._writing = False

    async def _send(self, data: Bytes, stall: float | None) -> None:
        """Send under the gate; any unfinished send aborts the connection."""
        try:
            if stall is None and len(data) <= _SLICE:
                # The commonest send (a reply), without _send_piece's call.
                await self.stream.send_all(data)
                self._count(len(data))
            elif len(data) <= _SLICE:
                await self._send_piece(data, stall)
            else:
                with memoryview(data) as view:
                    for start in range(0, len(data), _SLICE):
                        await self._send_piece(view[start : start + _SLICE], stall)
        except trio.TooSlowError:
            await self._stalled(stall)
        except STREAM_ERRORS as exc:
            error = stream_error(exc)
            await self.abort(error)
            raise error from exc
        except BaseException:
            # Cancelled (or KeyboardInterrupt) mid-write: the stream is in an
            # unknown state, so it cannot be used again.
            await self.abort(None)
            raise

    async def _stalled(self, stall: float | None) -> NoReturn:
        stalled = WriteTimeoutError(
            f"a write made no progress for {stall:g} s (the peer is not reading); connection closed"
        )
        await self.abort(stalled)
        raise stalled from None

    async def _send_piece(self, data: Bytes, stall: float | None) -> None:
        stream = self.stream
        if stall is None:
            await stream.send_all(data)
        elif isinstance(stream, TCPStream):
            await stream.send_all(data, stall_timeout=stall)
        else:
            with trio.move_on_after(stall) as scope:
                await stream.send_all(data)
            if scope.cancelled_caught:
                raise trio.TooSlowError
        self._count(len(data))

    def _count(self, size: int) -> None:
        """``size`` bytes went out."""
        self._in_flight = max(0, self._in_flight - size)
        self.bytes_sent += size
        if self._counters is not None:
            self._counters.bytes_sent += size

    def _start_outbox(self) -> _Outbox:
        spawn = self.spawn
        if spawn is None:
            raise UsageError("send_nowait needs a connection served by a Listener")
        outbox = self._outbox = _Outbox()
        spawn(self._run_outbox)
        return outbox

    async def _run_outbox(self) -> None:
        """The writer task: send whatever is queued until stopped or aborted."""
        outbox = self._outbox
        assert outbox is not None
        try:
            while not self.aborted:
                if not self._pending:
                    if outbox.stop:
                        return
                    await outbox.wakeup.park()
                    continue
                try:
                    await self.flush()
                except Error:
                    return  # the connection is aborted; it reports the failure
        finally:
            outbox.done.set()
