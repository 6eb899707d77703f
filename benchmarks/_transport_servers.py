"""trio_tcp's connection driver over other transports, to measure each part on its own.

trio_tcp normally accepts on its own listening socket and serves each
connection on its own lean ``TCPStream``. These servers swap one part at a
time, all through ``Listener.serve_listeners`` (which serves any
``trio.abc.Listener``), so that

* ``trio_tcp_x_lean`` (own accept path, ``TCPStream``) against ``trio_tcp``
  shows what going through ``serve_listeners`` costs,
* ``trio_tcp_x_sockstream`` (own accept path, ``trio.SocketStream``) against
  ``trio_tcp_x_lean`` shows the gain of the lean stream, and
* ``trio_tcp_x_trio`` (``trio.open_tcp_listeners``: ``SocketListener`` and
  ``SocketStream``) against ``trio_tcp_x_sockstream`` shows the gain of the
  accept path.

"Own accept path" is trio_tcp's ``TCPListener`` where the version has one,
else :class:`StdlibAcceptListener`, which accepts the way trio_tcp's accept
loop does. This module imports private trio_tcp modules on purpose; the
servers that use it check that they are still there.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Awaitable, Callable

import trio
from _echo_servers import EchoServer
from _serving import HOST, serve_trio_tcp
from trio.lowlevel import checkpoint, notify_closing, wait_readable

import trio_tcp
from trio_tcp._tcpstream import TCPStream, prepare_socket

Wrap = Callable[[socket.socket], trio.abc.Stream]
Listeners = list[trio.abc.Listener[trio.abc.Stream]]
MakeListeners = Callable[[int, Wrap], Awaitable[Listeners]]


class StdlibAcceptListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the way trio_tcp's own loop does, and wraps each connection with ``wrap``.

    The non-blocking ``accept()`` is tried first; the task waits for
    readiness only when no connection is queued. ``socket`` is public, as on
    ``trio.SocketListener``: it is where a listener's port is read from.
    """

    def __init__(self, sock: socket.socket, wrap: Wrap) -> None:
        self.socket = sock
        self._wrap = wrap

    async def accept(self) -> trio.abc.Stream:
        while True:
            try:
                connection, _ = self.socket.accept()
            except BlockingIOError:
                pass  # wait below, outside the handler (it would pin the exception)
            else:
                await checkpoint()
                return self._wrap(connection)
            await wait_readable(self.socket)

    async def aclose(self) -> None:
        if self.socket.fileno() != -1:
            notify_closing(self.socket)
            self.socket.close()
        await checkpoint()


def lean_stream(sock: socket.socket) -> trio.abc.Stream:
    """trio_tcp's own stream, prepared as its accept path prepares it."""
    prepare_socket(sock)
    return TCPStream(sock)


def trio_socket_stream(sock: socket.socket) -> trio.abc.Stream:
    """trio's stream (``SocketStream`` sets ``TCP_NODELAY`` and the rest itself)."""
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


def unwrap(listener: trio.SocketListener) -> socket.socket:
    """The stdlib socket inside a trio listener (which is left detached)."""
    sock = listener.socket
    plain = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    plain.setblocking(False)  # as trio had it; the accept loops rely on it
    return plain


def own_listener(sock: socket.socket, wrap: Wrap) -> trio.abc.Listener[trio.abc.Stream]:
    """trio_tcp's own listener for its own stream, if this version has one."""
    if wrap is lean_stream:
        try:
            module = importlib.import_module("trio_tcp._tcplistener")
        except ImportError:
            pass
        else:
            listener: trio.abc.Listener[trio.abc.Stream] = module.TCPListener(sock)
            return listener
    return StdlibAcceptListener(sock, wrap)


async def own_listeners(port: int, wrap: Wrap) -> Listeners:
    """Sockets bound by trio on 127.0.0.1, accepted from by trio_tcp's way of accepting."""
    bound = await trio.open_tcp_listeners(port, host=HOST)
    return [own_listener(unwrap(listener), wrap) for listener in bound]


class Opaque(trio.abc.Listener[trio.abc.Stream]):
    """Forwards to a trio listener, so that ``serve_listeners`` serves it as it is.

    ``serve_listeners`` recognises a plain ``trio.SocketListener`` and serves
    its socket on trio_tcp's own accept path and stream; this variant is here
    to measure trio's.
    """

    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        self.socket = inner.socket  # where a listener's port is read from

    async def accept(self) -> trio.abc.Stream:
        return await self.inner.accept()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def trio_listeners(port: int, wrap: Wrap) -> Listeners:
    """trio's own listeners (``SocketListener`` makes ``SocketStream``; ``wrap`` is unused)."""
    return [Opaque(listener) for listener in await trio.open_tcp_listeners(port, host=HOST)]


async def serve_over(port: int, make: MakeListeners, wrap: Wrap = lean_stream) -> None:
    """Serve the echo service with ``serve_listeners`` over the listeners ``make`` builds."""

    async def start(listener: trio_tcp.Listener, nursery: trio.Nursery) -> None:
        serve = listener.serve_listeners  # type: ignore[attr-defined,unused-ignore]
        await nursery.start(serve, await make(port, wrap))

    await serve_trio_tcp(EchoServer(), port, start=start)


# The three servers: how each builds its listeners and wraps its connections.
VARIANTS: dict[str, tuple[MakeListeners, Wrap]] = {
    "trio_tcp_x_lean": (own_listeners, lean_stream),
    "trio_tcp_x_sockstream": (own_listeners, trio_socket_stream),
    "trio_tcp_x_trio": (trio_listeners, lean_stream),
}


def run(name: str, port: int) -> None:
    """Run the variant ``name`` until a signal stops it."""
    make, wrap = VARIANTS[name]
    trio.run(serve_over, port, make, wrap)
