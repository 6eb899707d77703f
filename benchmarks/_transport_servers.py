"""trio_tcp's connection driver over other transports, to measure each part on its own.

trio_tcp normally accepts on the stdlib listening socket itself and serves each
connection on its own lean ``TCPStream``. These servers swap one part at a
time, all through ``Listener.serve_listeners`` (which serves any
``trio.abc.Listener``), so that

* ``trio_tcp_x_lean`` (own accept, ``TCPStream``) against ``trio_tcp`` shows what
  going through ``serve_listeners`` costs,
* ``trio_tcp_x_sockstream`` (own accept, ``trio.SocketStream``) against
  ``trio_tcp_x_lean`` shows the gain of the lean stream, and
* ``trio_tcp_x_trio`` (``trio.open_tcp_listeners``: ``SocketListener`` and
  ``SocketStream``) against ``trio_tcp_x_sockstream`` shows the gain of the
  accept path.

They import private trio_tcp modules on purpose, and need ``serve_listeners``.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import trio
from _echo_servers import EchoServer
from _serving import HOST, serve_trio_tcp
from trio.lowlevel import checkpoint, notify_closing, wait_readable

import trio_tcp
from trio_tcp._tcpstream import TCPStream, from_trio_socket, prepare_socket

Wrap = Callable[[socket.socket], trio.abc.Stream]


class StdlibAcceptListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the way trio_tcp's own loop does, and wraps each connection with ``wrap``.

    The non-blocking ``accept()`` is tried first; the task waits for
    readiness only when no connection is queued.
    """

    def __init__(self, sock: socket.socket, wrap: Wrap) -> None:
        self._sock = sock
        self._wrap = wrap

    async def accept(self) -> trio.abc.Stream:
        while True:
            try:
                connection, _ = self._sock.accept()
            except BlockingIOError:
                pass  # wait below, outside the handler (it would pin the exception)
            else:
                await checkpoint()
                return self._wrap(connection)
            await wait_readable(self._sock)

    async def aclose(self) -> None:
        if self._sock.fileno() != -1:
            notify_closing(self._sock)
            self._sock.close()
        await checkpoint()


def lean_stream(sock: socket.socket) -> trio.abc.Stream:
    """trio_tcp's own stream, prepared as its accept path prepares it."""
    prepare_socket(sock)
    return TCPStream(sock)


def trio_socket_stream(sock: socket.socket) -> trio.abc.Stream:
    """trio's stream (``SocketStream`` sets ``TCP_NODELAY`` and the rest itself)."""
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


Listeners = list[trio.abc.Listener[trio.abc.Stream]]


async def stdlib_listeners(port: int, wrap: Wrap) -> Listeners:
    """Sockets bound by trio on 127.0.0.1, accepted from by the loop above."""
    bound = await trio.open_tcp_listeners(port, host=HOST)
    return [StdlibAcceptListener(from_trio_socket(listener.socket), wrap) for listener in bound]


async def trio_listeners(port: int, wrap: Wrap) -> Listeners:
    """trio's own listeners (``SocketListener`` makes ``SocketStream``; ``wrap`` is unused)."""
    return list(await trio.open_tcp_listeners(port, host=HOST))


MakeListeners = Callable[[int, Wrap], Awaitable[Listeners]]


async def serve_over(port: int, make: MakeListeners, wrap: Wrap = lean_stream) -> None:
    """Serve the echo service with ``serve_listeners`` over the listeners ``make`` builds."""

    async def start(listener: trio_tcp.Listener, nursery: trio.Nursery) -> None:
        serve = listener.serve_listeners  # type: ignore[attr-defined,unused-ignore]
        await nursery.start(serve, await make(port, wrap))

    await serve_trio_tcp(EchoServer(), port, start=start)
