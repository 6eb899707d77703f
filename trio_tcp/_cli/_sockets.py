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

    The library's own binder (that of :func:`trio_tcp.open_tcp_listeners`), as
    plain sockets: the supervisor hands their file descriptors to its workers.

    Raises:
        BindError: the address is in use, not local, not permitted, or unknown.
    """
    listeners = await trio_tcp.open_tcp_listeners(
        port, host=host, backlog=backlog, reuse_port=reuse_port
    )
    # Unwrapped into stdlib sockets: those are what workers inherit by descriptor.
    sockets = []
    for listener in listeners:
        wrapped = listener.socket
        family, kind, proto = wrapped.family, wrapped.type, wrapped.proto
        sockets.append(socket.socket(family, kind, proto, fileno=wrapped.detach()))
    return sockets


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
