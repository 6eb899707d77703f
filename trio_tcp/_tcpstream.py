"""``TCPStream``: a lean :class:`trio.abc.HalfCloseableStream` over a connected socket.

Theory of operation
-------------------
:class:`trio.SocketStream` is general and careful, and pays for it on every
call: a conflict detector and an exception-translating context manager per
operation, then ``trio.socket``'s generic non-blocking helper, itself an async
context manager. On a 64-byte ping-pong that bookkeeping is a sizeable part of
the whole round trip. This stream keeps the same contract — every operation is
a checkpoint, two concurrent senders or receivers raise
:class:`trio.BusyResourceError`, a closed stream raises
:class:`trio.ClosedResourceError`, a broken one :class:`trio.BrokenResourceError`
from the OS error — and implements it directly on a non-blocking stdlib socket
with trio's public low-level I/O (``wait_readable``, ``wait_writable``,
``notify_closing``):

* try the system call first; if it succeeds, yield once
  (``cancel_shielded_checkpoint``) so a busy connection cannot starve others;
* if it would block, wait for readiness (itself a checkpoint) and retry.

It is the transport under :class:`trio.SSLStream` too, so TLS gets the same
savings on every record.

Closing follows trio's protocol for ``notify_closing``: the stream is marked
closed first (so no new operation starts), then tasks blocked on the socket
are woken with :class:`trio.ClosedResourceError`, then the socket is closed,
all without a checkpoint in between. Nothing else calls ``notify_closing``:
a reader is woken by cancelling its own scope, never by pretending to close.

Beyond the trio contract, it answers two questions a graceful stop asks
without reading: how many bytes wait in the kernel (:meth:`pending_input`),
and it keeps the peer's address as ``accept()`` returned it (:attr:`peer`),
which a peer that resets at once can no longer take from the socket.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import socket
import struct
import sys
import termios

import trio
from trio.lowlevel import (
    cancel_shielded_checkpoint,
    checkpoint,
    checkpoint_if_cancelled,
    notify_closing,
    wait_readable,
    wait_writable,
)

from ._config import RECEIVE_SIZE

__all__ = ["TCPStream", "from_trio_socket", "pending_bytes", "prepare_socket", "unacked_bytes"]

# errnos that mean "this socket was closed under us", as trio treats them.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
#: Unsent bytes the kernel may hold before the socket stops being writable.
#: Small, so ``send_all`` returns when the data is nearly on the wire rather
#: than when it sits in a large kernel buffer (trio's SocketStream uses 16 KiB).
_NOTSENT_LOWAT = 2**14


def prepare_socket(sock: socket.socket) -> None:
    """Make a connected socket non-blocking; on TCP, Nagle off (latency over batching).

    Each option is tried on its own: a socket that refuses one (not TCP, an
    old kernel without ``TCP_NOTSENT_LOWAT``) still gets the others.
    """
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)


#: ``SIOCOUTQ`` (Linux): bytes of the send queue the peer has not acknowledged.
_OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform.startswith("linux") else None


def unacked_bytes(fileno: int) -> int | None:
    """Bytes sent on a socket that the peer has not acknowledged yet (``SIOCOUTQ``).

    ``None`` where the platform cannot tell. Once it is 0, everything written
    has reached the peer's kernel, and no later reset can destroy it.
    """
    if _OUTQ is None:
        return None
    try:
        raw = fcntl.ioctl(fileno, _OUTQ, b"\0\0\0\0")
    except OSError:
        return None
    count: int = struct.unpack("i", raw)[0]
    return count


def pending_bytes(fileno: int) -> int:
    """Bytes waiting in the kernel's receive queue of a socket (``FIONREAD``); 0 if unknown."""
    try:
        raw = fcntl.ioctl(fileno, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count


def from_trio_socket(trio_socket: trio.socket.SocketType) -> socket.socket:
    """Take the stdlib socket out of a trio socket (which is left detached)."""
    family, kind, proto = trio_socket.family, trio_socket.type, trio_socket.proto
    return socket.socket(family, kind, proto, fileno=trio_socket.detach())


def _broken(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno in _CLOSED_ERRNOS:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class TCPStream(trio.abc.HalfCloseableStream):
    """A connected TCP socket as a trio stream; see the module docstring.

    Args:
        sock: a connected stdlib ``SOCK_STREAM`` socket, already prepared
            with :func:`prepare_socket`. The stream owns it from now on.
        peer: the peer's address as ``accept()`` returned it, if known.

    Raises:
        ValueError: ``sock`` is a blocking socket (it would freeze the run loop).
    """

    __slots__ = ("_closed", "_receiving", "_sending", "_shut_wr", "peer", "socket")

    def __init__(self, sock: socket.socket, peer: object = None) -> None:
        if sock.gettimeout() != 0.0:
            raise ValueError("TCPStream needs a non-blocking socket: call prepare_socket() first")
        self.socket = sock
        #: The peer's address from ``accept()``, or ``None``.
        self.peer = peer
        self._closed = False
        self._receiving = False
        self._sending = False
        self._shut_wr = False

    def pending_input(self) -> int:
        """Bytes already received and not yet read (0 once closed); never blocks."""
        if self._closed:
            return 0
        return pending_bytes(self.socket.fileno())

    def unacked_output(self) -> int | None:
        """Bytes sent and not yet acknowledged by the peer (``None``: cannot tell)."""
        if self._closed:
            return 0
        return unacked_bytes(self.socket.fileno())

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive at most ``max_bytes`` bytes; ``b""`` only at end of stream."""
        if max_bytes is None:
            max_bytes = RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is currently receiving on this stream")
        if self._closed:
            await checkpoint()
            raise trio.ClosedResourceError("this stream was already closed")
        self._receiving = True
        sock = self.socket
        try:
            await checkpoint_if_cancelled()
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                # Wait outside the except block: a suspended handler would
                # keep the exception and its traceback alive while we wait.
                pass
            else:
                await cancel_shielded_checkpoint()
                return data
            while True:
                await wait_readable(sock)
                try:  # not contextlib.suppress: no context manager object per read
                    return sock.recv(max_bytes)
                except BlockingIOError:
                    pass  # a spurious wakeup
        except OSError as exc:
            raise _broken(exc) from exc
        finally:
            self._receiving = False

    async def send_all(
        self, data: bytes | bytearray | memoryview, *, stall_timeout: float | None = None
    ) -> None:
        """Send all of ``data``; on failure or cancellation, an unknown part may be sent.

        Args:
            stall_timeout: raise :class:`trio.TooSlowError` if the socket takes
                no byte for this many seconds (``None``: wait as long as it
                takes). Only a send that has to wait pays for the timer.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending on this stream")
        if self._closed:
            await checkpoint()
            raise trio.ClosedResourceError("this stream was already closed")
        if self._shut_wr:
            await checkpoint()
            raise trio.ClosedResourceError("can't send data after sending EOF")
        self._sending = True
        sock = self.socket
        try:
            await checkpoint_if_cancelled()
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                await cancel_shielded_checkpoint()
                return
            with memoryview(data) as view:
                remaining = view[sent:]
                while remaining:
                    if stall_timeout is None:
                        await wait_writable(sock)
                    else:
                        # Re-armed after every wait: a timeout on progress, not on the whole.
                        with trio.move_on_after(stall_timeout) as scope:
                            await wait_writable(sock)
                        if scope.cancelled_caught:
                            raise trio.TooSlowError(f"no byte sent for {stall_timeout:g} s")
                    with contextlib.suppress(BlockingIOError):  # spurious wakeup
                        remaining = remaining[sock.send(remaining) :]
        except OSError as exc:
            raise _broken(exc) from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the socket can take more data."""
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending on this stream")
        if self._closed:
            await checkpoint()
            raise trio.ClosedResourceError("this stream was already closed")
        self._sending = True
        try:
            await wait_writable(self.socket)
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Shut down the sending half (TCP FIN); the peer reads end of stream."""
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending on this stream")
        self._sending = True  # held across the checkpoint: a send_all meanwhile is Busy
        try:
            await checkpoint()
            if self._closed:
                raise trio.ClosedResourceError("this stream was already closed")
            if self._shut_wr:
                return
            self._shut_wr = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise _broken(exc) from exc
        finally:
            self._sending = False

    async def aclose(self) -> None:
        """Close the socket; tasks blocked on it get :class:`trio.ClosedResourceError`."""
        self.close_now()
        await checkpoint()

    def close_now(self) -> None:
        """Close at once, without a checkpoint (for cleanup that must not be interrupted)."""
        if self._closed:
            return
        # Marked first, then waiters woken, then closed: trio's notify_closing
        # protocol, with no checkpoint in between.
        self._closed = True
        sock = self.socket
        notify_closing(sock)
        sock.close()
