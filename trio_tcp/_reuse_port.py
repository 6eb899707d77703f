"""Listening sockets with ``SO_REUSEPORT``: several processes serving one port.

:func:`trio.open_tcp_listeners` cannot set socket options before it binds, and
``SO_REUSEPORT`` only works if set before ``bind``. So for
``Listener(..., reuse_port=True)`` the sockets are built here by hand, doing
what trio does (passive ``getaddrinfo``, ``SO_REUSEADDR``, ``IPV6_V6ONLY`` so
IPv4 and IPv6 are separate sockets, the same default backlog) plus the one
option, and the same rule as the default path: one port number for every
address family, even with port 0. Everything else keeps using trio.

On Linux the kernel then spreads incoming connections across every socket
bound to the port with ``SO_REUSEPORT`` by the same user: one per worker
process. (On the BSDs and macOS the option lets the processes bind, but the
last one to bind may receive all new connections.)
"""

from __future__ import annotations

import errno
import socket
import sys

import trio

from ._errors import BindError, ConfigurationError

__all__ = ["bind_reuse_port", "check_reuse_port"]

# trio's default backlog: more than any kernel allows, so the kernel's own
# maximum (net.core.somaxconn on Linux) applies, as on the default path.
_MAX_BACKLOG = 0xFFFF
# Port 0 re-binding may lose a race with another process for the chosen port.
_SAME_PORT_ATTEMPTS = 8


def check_reuse_port(value: bool) -> bool:
    """Refuse ``reuse_port=True`` where the system has no ``SO_REUSEPORT`` (Windows)."""
    if value and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError(
            f"reuse_port=True is not supported on this platform ({sys.platform}: no SO_REUSEPORT)"
        )
    return value


async def bind_reuse_port(port: int, host: str | None, backlog: int | None) -> list[socket.socket]:
    """Listen on every address of ``host`` with ``SO_REUSEPORT``, all on one port number.

    Returns non-blocking stdlib sockets, as :func:`~trio_tcp._accept.bind` does.

    Raises:
        BindError: the address is unknown, not local, in use without
            ``SO_REUSEPORT`` (or by another user), or not permitted.
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
    queue = min(_MAX_BACKLOG, _MAX_BACKLOG if backlog is None else backlog)
    for _ in range(_SAME_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        chosen = port
        try:
            for family, sockaddr in unique:
                sock = _open(family)
                if sock is None:
                    continue
                sockets.append(sock)
                # Once the first socket has a port (port 0), the rest take it too.
                sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                sock.listen(queue)
                chosen = sock.getsockname()[1]
        except OSError as exc:
            _close(sockets)
            if port == 0 and exc.errno == errno.EADDRINUSE and len(sockets) > 1:
                continue  # the chosen port is taken on a later family; try a fresh one
            raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        if not sockets:
            raise BindError(f"cannot listen on {where}: no supported address family")
        return sockets
    raise BindError(f"cannot listen on {where}: no port free on every address family")


def _open(family: int) -> socket.socket | None:
    """A non-blocking listening socket with the options set; ``None`` if the family is missing."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT:
            return None  # no IPv6 on this machine, say: as trio, skip the family
        raise
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
