"""Binding a listener's TCP sockets: every address family on one port number.

This does what :func:`trio.open_tcp_listeners` does — a passive
``getaddrinfo`` (``host=None`` gives every interface, IPv4 and IPv6),
``SO_REUSEADDR`` so a restarted server can bind while old connections sit in
TIME_WAIT, ``IPV6_V6ONLY`` so each family has its own socket, the system's
largest backlog unless told otherwise — and adds what a listener needs and
trio cannot give:

* **one port number for every family**, even with port 0 (trio would give
  IPv4 and IPv6 different ephemeral ports): the first socket picks the port,
  the others bind to it, and if another process took it for some family in
  between, the whole set is tried again with a fresh port;
* **``SO_REUSEPORT``** on request, which must be set before ``bind``, so
  several processes can share the port.

The result is plain non-blocking stdlib sockets, served by
:class:`~trio_tcp._tcplistener.TCPListener`.
"""

from __future__ import annotations

import errno
import socket

import trio

from ._config import check_count, check_flag, check_host, check_port
from ._errors import BindError
from ._options import check_reuse_port

__all__ = ["bind_tcp", "open_tcp_listeners"]

# More than any kernel allows, so the kernel's own maximum applies
# (net.core.somaxconn on Linux): trio's default too.
_MAX_BACKLOG = 0xFFFF
# Port 0 re-binding may lose a race with another process for the chosen port.
_SAME_PORT_ATTEMPTS = 8


async def bind_tcp(
    port: int, host: str | None, backlog: int | None, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Listen on every address of ``host`` (``None``: every interface), all on one port.

    Returns:
        Non-blocking listening sockets, IPv4 first where both families are bound.

    Raises:
        BindError: the host is unknown, or an address is in use, not local or
            not permitted.
    """
    where = f"{host or '*'}:{port}"
    try:
        addresses = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    # getaddrinfo may list an address twice (once per protocol on some systems).
    unique = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in addresses))
    unique.sort(key=lambda item: item[0] != socket.AF_INET)  # IPv4 first: it picks the port
    queue = _MAX_BACKLOG if backlog is None else min(backlog, _MAX_BACKLOG)
    for _ in range(_SAME_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        chosen = port
        try:
            for family, sockaddr in unique:
                sock = _open(family, reuse_port=reuse_port)
                if sock is None:
                    continue
                sockets.append(sock)
                sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                sock.listen(queue)
                chosen = sock.getsockname()[1]  # port 0: the rest take the first one's
        except OSError as exc:
            _close(sockets)
            if port == 0 and exc.errno == errno.EADDRINUSE and len(sockets) > 1:
                continue  # the chosen port is taken on a later family: try a fresh one
            raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        if not sockets:
            raise BindError(f"cannot listen on {where}: no supported address family")
        return sockets
    raise BindError(f"cannot listen on {where}: no port free on every address family")


def _open(family: int, *, reuse_port: bool) -> socket.socket | None:
    """A non-blocking TCP socket with the options set; ``None`` if the family is missing."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None  # no IPv6 on this machine, say: skip the family, as trio does
        raise
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


async def open_tcp_listeners(
    port: int, *, host: str | None = None, backlog: int | None = None, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Open TCP listeners on every address of ``host``, all on one port number.

    What :func:`trio.open_tcp_listeners` does, plus what a server that runs
    several processes needs: port 0 picks one port for every address family
    (trio's picks one per family), and ``reuse_port=True`` sets
    ``SO_REUSEPORT`` before binding. Hand them to
    :meth:`Listener.serve_listeners`, or open them before starting worker
    processes that inherit their sockets.

    Args:
        port: the port, 0 for any free one (the same for every family).
        host: the interface or address; ``None``: every interface, IPv4 and IPv6.
        backlog: the kernel's queue of connections not yet accepted
            (``None``: the system's maximum).
        reuse_port: set ``SO_REUSEPORT`` (several processes on one port).

    Raises:
        BindError: the host is unknown, or an address is in use, not local or
            not permitted.
        ConfigurationError: a port outside 0-65535, a backlog below 1, or
            ``reuse_port`` where the platform has no ``SO_REUSEPORT``.
    """
    check_port("port", port)
    check_host("host", host)
    check_count("backlog", backlog)
    check_reuse_port(check_flag("reuse_port", reuse_port))
    sockets = await bind_tcp(port, host, backlog, reuse_port=reuse_port)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
