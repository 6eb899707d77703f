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
"""

from __future__ import annotations

import contextlib
import errno
import socket

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

__all__ = ["TCPStream", "from_trio_socket", "prepare_socket"]

# errnos that mean "this socket was closed under us", as trio treats them.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})
#: Unsent bytes the kernel may hold before the socket stops being writable.
#: Small, so ``send_all`` returns when the data is nearly on the wire rather
#: than when it sits in a large kernel buffer (trio's SocketStream uses 16 KiB).
_NOTSENT_LOWAT = 2**14


def prepare_socket(sock: socket.socket) -> None:
    """Make a connected TCP socket non-blocking, with Nagle off (latency over batching)."""
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, _NOTSENT_LOWAT)
    except OSError:  # pragma: no cover - not a TCP socket (a socketpair in a test)
        pass


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
    """

    __slots__ = ("_receiving", "_sending", "_shut_wr", "socket")

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self._receiving = False
        self._sending = False
        self._shut_wr = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive at most ``max_bytes`` bytes; ``b""`` only at end of stream."""
        if max_bytes is None:
            max_bytes = RECEIVE_SIZE
        elif max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is currently receiving on this stream")
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

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; on failure or cancellation, an unknown part may be sent."""
        if self._sending:
            raise trio.BusyResourceError("another task is currently sending on this stream")
        if self._shut_wr:
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
                    await wait_writable(sock)
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
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("this socket was already closed")
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
            if self._shut_wr:
                return
            self._shut_wr = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError as exc:
                raise _broken(exc) from exc
        finally:
            self._sending = False

    def abort_receive(self) -> None:
        """Wake a task blocked in :meth:`receive_some` with :class:`trio.ClosedResourceError`.

        For a stream that is about to be closed: it is trio's ``notify_closing``,
        without the close, so the owner of the stream can close it in its own
        task (the connection driver uses it to stop a read without paying for
        a cancel scope per connection).
        """
        if self.socket.fileno() != -1:
            notify_closing(self.socket)

    async def aclose(self) -> None:
        """Close the socket; tasks blocked on it get :class:`trio.ClosedResourceError`."""
        sock = self.socket
        if sock.fileno() != -1:
            notify_closing(sock)
            sock.close()
        await checkpoint()
