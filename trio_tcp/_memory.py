"""In-memory connections that behave like TCP: bounded, half-closeable, resettable.

:func:`trio.testing.memory_stream_pair` buffers without limit, so a writer
never waits and a slow reader can never be tested. Here each direction of a
connection holds at most ``buffer_size`` bytes, like a socket's buffers: a
writer that fills it waits until the peer reads (backpressure), ``send_eof``
is a FIN (the peer reads ``b""`` after the data), ``aclose`` a close (the
peer's further writes fail as if reset), and :meth:`MemoryStream.reset` an
RST. Nothing here touches the operating system or real time, so it works
under trio's ``MockClock`` (pytest-trio's ``autojump_clock``).

:class:`MemoryListener` is a :class:`trio.abc.Listener` whose ``connect``
plays the client's side of ``connect()``: a connection is complete once it is
queued, before the server accepts it.
"""

from __future__ import annotations

import operator

import trio
from trio.lowlevel import (
    ParkingLot,
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
)

from ._errors import ConnectError
from ._streams import Bytes, Endpoints

__all__ = ["MemoryListener", "MemoryStream", "memory_connection"]

#: Default bytes each direction holds: about what a socket's buffers hold on
#: loopback before a writer has to wait, small enough that tests of slow
#: readers fill it quickly.
DEFAULT_BUFFER_SIZE = 65536


class _Direction:
    """One direction of a connection: a bounded byte queue and who waits on it."""

    __slots__ = ("buffer", "capacity", "eof", "readable", "reader_gone", "reset", "writable")

    def __init__(self, capacity: int) -> None:
        self.buffer = bytearray()
        self.capacity = capacity
        self.eof = False  # the writer sent EOF (or closed)
        self.reset = False  # the writer reset the connection
        self.reader_gone = False  # the reader closed: writes fail as on a reset peer
        self.readable = ParkingLot()
        self.writable = ParkingLot()


class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection; see the module docstring.

    Attributes:
        endpoints: this end's view of the connection's addresses.
    """

    __slots__ = ("_closed", "_incoming", "_outgoing", "_receiving", "_sending", "endpoints")

    def __init__(self, incoming: _Direction, outgoing: _Direction, endpoints: Endpoints) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        self.endpoints = endpoints
        self._closed = False
        self._receiving = False
        self._sending = False

    # -- what a graceful stop and a lingering close ask, as of a socket --------------

    def pending_input(self) -> int:
        """Bytes received and not yet read."""
        return 0 if self._closed else len(self._incoming.buffer)

    def unacked_output(self) -> int:
        """Bytes sent that have not reached the peer: none, once ``send_all`` returned.

        The buffer stands for the peer's socket buffers, so what is in it has
        been delivered (a TCP peer's kernel acknowledges bytes it buffers).
        """
        return 0

    def peer_unread(self) -> int:
        """Bytes this end sent that the peer has not read yet (a testing aid)."""
        return len(self._outgoing.buffer)

    # -- the stream ---------------------------------------------------------------------

    async def send_all(self, data: Bytes) -> None:
        """Send all of ``data``, waiting while the peer's buffer is full."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await checkpoint_if_cancelled()
            waited = False
            with memoryview(data) as view:
                remaining = view
                while True:
                    self._check_sendable()
                    out = self._outgoing
                    room = out.capacity - len(out.buffer)
                    if room > 0 and remaining:
                        out.buffer += remaining[:room]
                        remaining = remaining[room:]
                        out.readable.unpark_all()
                    if not remaining:
                        break
                    waited = True
                    await out.writable.park()
            if not waited:
                await cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream was already closed")
        out = self._outgoing
        if out.eof:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        if out.reader_gone or self._incoming.reset:
            raise trio.BrokenResourceError("the peer closed or reset the connection") from (
                ConnectionResetError(104, "Connection reset by peer")
            )

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the peer's buffer has room."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            self._check_sendable()
            out = self._outgoing
            if len(out.buffer) < out.capacity:
                await checkpoint()
            else:
                await out.writable.park()
                if self._closed:
                    raise trio.ClosedResourceError("this stream was closed while waiting")
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive at most ``max_bytes`` bytes; ``b""`` once the peer sent EOF and all is read."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)  # TypeError for 1.5, as trio's streams
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            await checkpoint_if_cancelled()
            waited = False
            incoming = self._incoming
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream was already closed")
                if incoming.buffer:
                    break  # delivered bytes stay readable, even after a reset (as on Linux)
                if incoming.reset:
                    raise trio.BrokenResourceError("the peer reset the connection") from (
                        ConnectionResetError(104, "Connection reset by peer")
                    )
                if incoming.eof:
                    break
                waited = True
                await incoming.readable.park()
            size = len(incoming.buffer) if max_bytes is None else max_bytes
            data = bytes(incoming.buffer[:size])
            del incoming.buffer[:size]
            incoming.writable.unpark_all()
            if not waited:
                await cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def send_eof(self) -> None:
        """Shut down the sending side (FIN): the peer reads ``b""`` once it has the data."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        await checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("this stream was already closed")
        self._outgoing.eof = True
        self._outgoing.readable.unpark_all()

    async def aclose(self) -> None:
        """Close this end; the peer reads end of stream, and its writes fail from now on."""
        self.close_now()
        await checkpoint()

    def close_now(self) -> None:
        """Close without a checkpoint; tasks blocked on this end wake with ``ClosedResourceError``.

        As with TCP, closing with unread input resets the connection: the
        peer reads what was delivered, then gets an error instead of the end
        of stream.
        """
        if self._closed:
            return
        if self._incoming.buffer:
            self._outgoing.reset = True
        self._closed = True
        self._outgoing.eof = True
        self._incoming.reader_gone = True
        self._incoming.buffer.clear()
        self._wake()

    def reset(self) -> None:
        """Abort the connection as TCP's RST does: the peer's reads and writes fail."""
        if self._closed:
            return
        self._outgoing.reset = True
        self.close_now()

    def _is_peer_of(self, other: object) -> bool:
        """Whether ``other`` is the other end of this connection."""
        return isinstance(other, MemoryStream) and other._outgoing is self._incoming

    def _wake(self) -> None:
        for direction in (self._incoming, self._outgoing):
            direction.readable.unpark_all()
            direction.writable.unpark_all()


def memory_connection(
    client: Endpoints, buffer_size: int = DEFAULT_BUFFER_SIZE
) -> tuple[MemoryStream, MemoryStream]:
    """A connected pair ``(client end, server end)``; ``client`` is the client's view of it."""
    upstream, downstream = _Direction(buffer_size), _Direction(buffer_size)
    server = Endpoints(client.local_host, client.local_port, client.remote_host, client.remote_port)
    return (
        MemoryStream(downstream, upstream, client),
        MemoryStream(upstream, downstream, server),
    )


class MemoryListener(trio.abc.Listener[MemoryStream]):
    """A :class:`trio.abc.Listener` of in-memory connections made by :meth:`connect`.

    Args:
        backlog: connections that may wait to be accepted; a ``connect``
            beyond it waits, as a client does in ``SYN_SENT``.
        buffer_size: bytes each direction of a connection holds.
    """

    def __init__(self, *, backlog: int = 128, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        self._send, self._receive = trio.open_memory_channel[MemoryStream](backlog)
        self._buffer_size = buffer_size
        self._closed = False

    async def connect(self, client: Endpoints) -> MemoryStream:
        """Open a connection; return the client's end once it is queued for ``accept``.

        Raises:
            ConnectError: the listener is closed (a refused connection).
        """
        client_end, server_end = memory_connection(client, self._buffer_size)
        try:
            await self._send.send(server_end)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ConnectError("connection refused: the in-memory listener is closed") from None
        return client_end

    async def accept(self) -> MemoryStream:
        """Wait for the next connection.

        Raises:
            trio.ClosedResourceError: the listener is closed.
        """
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("the listener is closed") from None

    async def aclose(self) -> None:
        """Refuse new connections and reset those still waiting to be accepted."""
        if not self._closed:
            self._closed = True
            self._send.close()
            while True:
                try:
                    waiting = self._receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                waiting.reset()
            self._receive.close()
        await checkpoint()
