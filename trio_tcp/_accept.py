"""Binding listening sockets, and the accept loop: it only accepts.

``bind`` reuses :func:`trio.open_tcp_listeners` (address resolution, dual
stack, ``SO_REUSEADDR``, ``IPV6_V6ONLY``) and fixes one thing: with port 0 on
several address families each would get its own port, so they are re-bound
on the first one's port. The sockets are then taken out of trio's wrappers:
the accept loop runs on the stdlib sockets with trio's low-level readiness
waits, which is lighter per connection than :class:`trio.SocketListener`, and
hands over plain connected sockets for :class:`~trio_tcp._tcpstream.TCPStream`.

The loop is trio_tcp's own rather than :func:`trio.serve_listeners`'s because
it must pause at ``max_connections`` (leaving new clients in the kernel's
backlog) and rate-limit its log when the process runs out of file
descriptors, instead of logging every failed ``accept``.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
from collections.abc import Callable

import trio
from trio.lowlevel import checkpoint, notify_closing, wait_readable

from ._errors import BindError
from ._reuse_port import bind_reuse_port
from ._tcpstream import from_trio_socket

__all__ = ["accept_loop", "bind", "close_listening"]

log = logging.getLogger("trio_tcp")

# accept() failures that concern only the connection being accepted (it was
# aborted or refused by a firewall before we got to it): skip it, as trio does.
_SKIP_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED", "EPERM", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
        "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)  # fmt: skip
# accept() failures that mean "out of resources right now", not "broken socket":
# wait and retry.
_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_SLEEP = 0.1
#: At most one "out of file descriptors" log line per this many seconds.
_CAPACITY_LOG_INTERVAL = 1.0
# Port 0 re-binding may lose a race with another process for the chosen port.
_SAME_PORT_ATTEMPTS = 8


async def bind(
    port: int, host: str | None, backlog: int | None, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Listen on every address of ``host``, all on one port number.

    With ``reuse_port``, the sockets are built by ``_reuse_port`` instead (trio
    cannot set ``SO_REUSEPORT``).

    Raises:
        BindError: the address is in use, not local, not permitted, or unknown.
    """
    if reuse_port:
        return await bind_reuse_port(port, host, backlog)
    where = f"{host or '*'}:{port}"
    for _ in range(_SAME_PORT_ATTEMPTS):
        try:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
        except OSError as exc:
            raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
        ports = {listener.socket.getsockname()[1] for listener in listeners}
        if len(ports) > 1:
            # Port 0 on several families: each got its own port. Re-bind them
            # all on the first one's port.
            first = listeners[0].socket.getsockname()[1]
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            try:
                listeners = await trio.open_tcp_listeners(first, host=host, backlog=backlog)
            except OSError:
                continue  # taken in between; try a fresh pair
        return [from_trio_socket(listener.socket) for listener in listeners]
    raise BindError(f"cannot listen on {where}: no port free on every address family")


def close_listening(sockets: list[socket.socket]) -> None:
    """Close listening sockets; new connects are refused from now on."""
    for sock in sockets:
        if sock.fileno() != -1:
            notify_closing(sock)
            sock.close()


async def accept_loop(
    sock: socket.socket,
    start: Callable[[socket.socket], None],
    limit: trio.Semaphore | None,
) -> None:
    """Accept connections on ``sock`` forever, handing each to ``start``.

    With a ``limit``, a token is taken before each accept and ``start`` owns
    it from then on (the connection gives it back when it ends). A loop holds
    no token while it waits for a connection: with several listening sockets
    (IPv4 and IPv6), an idle one must not sit on a token another could use.
    """
    last_complaint = -math.inf
    suppressed = 0
    while True:
        if limit is not None:
            await limit.acquire()  # at the limit: pause, new clients wait in the backlog
        try:
            connection, _ = sock.accept()
        except BlockingIOError:
            pass  # wait below, not inside the handler (it would pin the exception)
        except OSError as exc:
            if limit is not None:
                limit.release()
            if exc.errno in _SKIP_ERRNOS:
                continue
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            now = trio.current_time()
            if now - last_complaint >= _CAPACITY_LOG_INTERVAL:
                log.error(
                    "accept failed: %s; retrying every %g s (%d similar failures not logged)",
                    exc.strerror, _CAPACITY_SLEEP, suppressed,
                )  # fmt: skip
                last_complaint, suppressed = now, 0
            else:
                suppressed += 1
            await trio.sleep(_CAPACITY_SLEEP)
            continue
        else:
            start(connection)
            # A flood of ready connections must not starve the connections themselves.
            await checkpoint()
            continue
        if limit is not None:
            limit.release()
        await wait_readable(sock)
