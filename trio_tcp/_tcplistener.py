"""``TCPListener``: a :class:`trio.abc.Listener` that hands out :class:`TCPStream`.

It is :class:`trio.SocketListener` for trio_tcp's lean stream: the same
contract (``accept`` is a checkpoint, waits for a connection, skips the
errors that concern only the connection being accepted, and raises
:class:`trio.ClosedResourceError` once closed; running out of file
descriptors is an :class:`OSError` for the serving loop to pause on), plus
two things a listener that owns its socket needs:

* the peer address ``accept()`` returned is kept on the stream, so a client
  that resets at once is still known by its address;
* :meth:`accept_nowait` takes a connection the kernel has already
  completed, or returns ``None`` at once, so a graceful stop can empty the
  accept queue in one bounded pass before closing the socket: closing a
  listening socket resets every connection still queued in it.
"""

from __future__ import annotations

import errno
import socket

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled, wait_readable

from ._tcpstream import TCPStream, prepare_socket

__all__ = ["CAPACITY_ERRNOS", "SKIP_ERRNOS", "TCPListener"]

#: ``accept()`` failures that concern only the connection being accepted (it was
#: aborted, or refused by a firewall, before we got to it): skip it and go on.
#: The same list as trio's ``SocketListener`` (a test pins that they agree).
SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED", "EPERM", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
        "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)  # fmt: skip
#: ``accept()`` failures that mean "out of resources right now" (file
#: descriptors, memory): the serving loop pauses and retries, as trio's
#: ``serve_listeners`` does. A test pins that they agree with trio's.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# errnos that mean the listening socket itself was closed under us.
_CLOSED_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK})


class TCPListener(trio.abc.Listener[TCPStream]):
    """A listening TCP socket whose :meth:`accept` returns a :class:`TCPStream`.

    Args:
        sock: a bound, listening, non-blocking stdlib socket. The listener owns
            it from now on.
    """

    __slots__ = ("_closed", "socket")

    def __init__(self, sock: socket.socket) -> None:
        if sock.gettimeout() != 0.0:
            raise ValueError("TCPListener needs a non-blocking socket")
        self.socket = sock
        self._closed = False

    async def accept(self) -> TCPStream:
        """Wait for the next connection and return it as a stream.

        Raises:
            trio.ClosedResourceError: the listener is closed.
            OSError: a capacity error (``EMFILE`` and the like) the caller
                should wait out.
        """
        await checkpoint_if_cancelled()
        while True:
            stream = self._accept()
            if stream is not None:
                await cancel_shielded_checkpoint()
                return stream
            await wait_readable(self.socket)

    def accept_nowait(self) -> TCPStream | None:
        """Accept a connection already waiting in the kernel's queue; ``None`` if there is none.

        Raises:
            trio.ClosedResourceError: the listener is closed.
            OSError: a capacity error.
        """
        return self._accept()

    def _accept(self) -> TCPStream | None:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("this listener was already closed")
            try:
                connection, address = self.socket.accept()
            except BlockingIOError:
                return None
            except OSError as exc:
                if exc.errno in SKIP_ERRNOS:
                    continue
                if exc.errno in _CLOSED_ERRNOS:
                    raise trio.ClosedResourceError("the listening socket was closed") from exc
                raise
            try:
                prepare_socket(connection)
            except OSError:  # pragma: no cover - the connection died in between
                connection.close()
                continue
            return TCPStream(connection, address)

    async def aclose(self) -> None:
        """Close the listening socket: new connects are refused, queued ones reset."""
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """Close without a checkpoint; a task blocked in :meth:`accept` is woken."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self.socket)
        self.socket.close()
