"""Listening sockets that ``trio-tcp serve`` inherits, or binds for its workers.

Three sources, in this order:

* ``--fd N`` (repeatable): descriptors the parent process left open.
* systemd socket activation: ``LISTEN_FDS`` descriptors from 3 up, honoured
  only if ``LISTEN_PID`` is this process (as ``sd_listen_fds`` does); the
  variables are removed once read, so a child never mistakes them for its own.
* :func:`bind`, for the supervisor of ``--workers``: the one socket (one per
  address family) that every worker inherits.

Without any of them, a single-process ``serve`` lets :class:`trio_tcp.Listener`
bind. Each socket is checked to be a listening stream socket, since serving a
connected or datagram socket would fail only at the first ``accept``.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence

import trio

import trio_tcp

from ._options import CommandError, endpoint

__all__ = [
    "SD_LISTEN_FDS_START",
    "address",
    "bind",
    "close_all",
    "from_fds",
    "systemd_fds",
    "trio_listeners",
]

#: The first descriptor systemd passes (after stdin, stdout and stderr).
SD_LISTEN_FDS_START = 3
#: The backlog of the sockets bound for workers when none is given: the
#: kernel caps it to net.core.somaxconn, as trio's own default does.
DEFAULT_BACKLOG = 65535
# Port 0 on several address families: the others are bound on the first one's
# port, which another process may take in between; then start over.
_SAME_PORT_ATTEMPTS = 8


def systemd_fds() -> list[int]:
    """The descriptors systemd passed to this process, or ``[]``; unsets the variables.

    Raises:
        CommandError: ``LISTEN_FDS`` is set for this process but not a number.
    """
    pid, count = os.environ.pop("LISTEN_PID", None), os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid is None or count is None:
        return []
    try:
        if int(pid) != os.getpid():
            return []  # meant for the process that started us, not for us
        number = int(count)
    except ValueError:
        raise CommandError(f"LISTEN_PID={pid!r} LISTEN_FDS={count!r}: not numbers") from None
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + number))


def from_fds(fds: Sequence[int], *, source: str) -> list[socket.socket]:
    """Adopt inherited listening sockets; ``source`` says where they came from, for errors.

    They are made non-inheritable: a worker gets them only through ``pass_fds``.

    Raises:
        CommandError: a descriptor is not open, or not a listening stream socket.
    """
    sockets: list[socket.socket] = []
    try:
        sockets.extend(_adopt(fd, source) for fd in fds)
    except BaseException:
        for sock in sockets:
            sock.detach()  # not ours to close: the descriptor stays as it was
        raise
    return sockets


def _adopt(fd: int, source: str) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        reason = "not a socket" if exc.errno == errno.ENOTSOCK else exc.strerror
        raise CommandError(f"{source} {fd}: {reason}") from None
    listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    )
    if not listening:
        sock.detach()
        raise CommandError(f"{source} {fd}: not a listening stream socket")
    sock.set_inheritable(False)
    return sock


async def bind(
    host: str | None, port: int, *, backlog: int | None, reuse_port: bool
) -> list[socket.socket]:
    """Listen on every address of ``host`` (``None``: every interface), all on one port.

    Raises:
        BindError: the address is in use, not local, not permitted, or unknown.
    """
    where = endpoint(host, port)
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise trio_tcp.BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
    addresses = list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))
    for _ in range(_SAME_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        try:
            chosen = port
            for family, sockaddr in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    # One socket per family, as trio does: never a dual-stack
                    # socket that would collide with the IPv4 one.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((sockaddr[0], chosen, *sockaddr[2:]))
                sock.listen(backlog or DEFAULT_BACKLOG)
                chosen = sock.getsockname()[1]
        except OSError as exc:
            close_all(sockets)
            if port == 0 and len(sockets) > 1 and exc.errno == errno.EADDRINUSE:
                continue  # the port chosen for the first family was taken for another
            raise trio_tcp.BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        return sockets
    raise trio_tcp.BindError(f"cannot listen on {where}: no port free on every address family")


def trio_listeners(sockets: Sequence[socket.socket]) -> list[trio.SocketListener]:
    """Wrap listening sockets for :meth:`trio_tcp.Listener.serve_listeners`."""
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]


def address(sock: socket.socket) -> str:
    """``127.0.0.1:3000``, ``[::]:3000``, or a UNIX socket's path."""
    name = sock.getsockname()
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return endpoint(name[0], name[1])
    return name if isinstance(name, str) and name else repr(name)


def close_all(sockets: Sequence[socket.socket]) -> None:
    """Close every socket in ``sockets``."""
    for sock in sockets:
        sock.close()
