"""``Listener``: bind, accept, and run every connection in a nursery the caller owns.

Theory of operation
-------------------
``serve`` binds (see ``_accept``), then runs two nested nurseries: the outer
one holds the connection tasks, the inner one the accept loops (one per bound
socket). Stopping is cancel scopes, not flags:

* ``graceful_stop`` cancels the accept scope (the listening sockets close, so
  new connects are refused), asks every connection to finish the chunk in hand
  and close, and, given a timeout, puts a deadline on the connections' scope;
* ``immediate_stop`` cancels both scopes at once.

Each connection's ``on_close`` is shielded from either, under its own deadline.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import trio

from ._accept import accept_loop, bind, close_listening
from ._config import check_count, check_flag, check_host, check_port, check_timeout
from ._connection import Connection, Settings
from ._errors import Error
from ._reuse_port import check_reuse_port
from ._stats import Counters, ListenerStats
from ._tcpstream import TCPStream, prepare_socket
from ._tls import ListenerSecureSocket, build_server_context

if TYPE_CHECKING:
    import ssl

    from typing_extensions import Unpack

    from ._service import Service

__all__ = ["Listener", "ListenerOptions", "serve"]

log = logging.getLogger("trio_tcp")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Config:
    """A listener's validated settings."""

    port: int
    host: str | None
    secure_socket: ListenerSecureSocket | None
    backlog: int | None
    max_connections: int | None
    idle_timeout: float | None
    proxy_protocol: bool = False
    reuse_port: bool = False


class _Run:
    """The state of one ``serve`` call: its scopes, its connections, its end."""

    __slots__ = (
        "accept_scope",
        "connections",
        "handler_scope",
        "handlers",
        "limit",
        "port",
        "stopped",
    )

    def __init__(self, limit: trio.Semaphore | None) -> None:
        self.port: int | None = None  # known once bound
        self.limit = limit
        self.accept_scope = trio.CancelScope()
        self.handler_scope = trio.CancelScope()
        self.connections: set[Connection] = set()
        self.handlers: trio.Nursery | None = None
        self.stopped = trio.Event()


class Listener:
    """A TCP (or TLS) server that hands each connection to the attached service.

    ::

        listener = trio_tcp.Listener(3000)
        listener.attach(EchoServer())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            ...
            await listener.graceful_stop()

    Args:
        local_port: the port to listen on, 0 for any free port (see :attr:`port`).
        local_host: the interface or address to bind; ``None`` binds every
            interface, IPv4 and IPv6 alike, on one port number.
        secure_socket: a :class:`ListenerSecureSocket` to serve TLS.
        backlog: the kernel's queue of not yet accepted connections
            (``None``: trio's default, the system maximum).
        max_connections: at most this many connections at once; at the limit
            accepting pauses, and new clients wait in the backlog.
        idle_timeout: close a connection that has neither received nor sent a
            byte for this many seconds while waiting for input (``on_close``
            runs; it is not an error). ``None``: never.
        proxy_protocol: every connection comes from a load balancer that
            opens it with a PROXY protocol header (v1 or v2, told apart
            automatically): ``caller.remote_host`` / ``remote_port`` (and the
            local ones) are the real client's from the header. The header is
            read first, before any TLS handshake, within the
            ``handshake_timeout`` with TLS, else 10 s; a connection without a
            valid one is dropped (logged at INFO, counted in ``stats.errors``,
            no callback). Only for a port that nothing but the load balancer
            can reach: the header is trusted as sent.
        reuse_port: set ``SO_REUSEPORT`` on the listening sockets, so several
            processes (workers) can listen on the same port and the kernel
            spreads connections among them (Linux; the BSDs and macOS allow
            the bind but balance differently).

    Raises:
        ConfigurationError: a value out of range (a port above 65535, a
            negative or non-finite timeout), or ``reuse_port=True`` where the
            platform has no ``SO_REUSEPORT``.
        TypeError: a value of the wrong type.
    """

    def __init__(
        self,
        local_port: int,
        *,
        local_host: str | None = None,
        secure_socket: ListenerSecureSocket | None = None,
        backlog: int | None = None,
        max_connections: int | None = None,
        idle_timeout: float | None = None,
        proxy_protocol: bool = False,
        reuse_port: bool = False,
    ) -> None:
        self._config = _Config(
            port=check_port("local_port", local_port),
            host=check_host("local_host", local_host),
            secure_socket=_check_secure_socket(secure_socket),
            backlog=check_count("backlog", backlog),
            max_connections=check_count("max_connections", max_connections),
            idle_timeout=check_timeout("idle_timeout", idle_timeout, allow_zero=False),
            proxy_protocol=check_flag("proxy_protocol", proxy_protocol),
            reuse_port=check_reuse_port(check_flag("reuse_port", reuse_port)),
        )
        self._service: Service | None = None
        self._counters = Counters()
        self._run: _Run | None = None

    def __repr__(self) -> str:
        port = self.port
        where = f"{self._config.host or '*'}:{port if port is not None else self._config.port}"
        state = "stopped" if self._run is None else "binding" if port is None else "serving"
        return f"<trio_tcp.Listener {where} {state}>"

    @property
    def port(self) -> int | None:
        """The bound port while serving (one number for every address family), else ``None``."""
        return self._run.port if self._run is not None else None

    @property
    def stats(self) -> ListenerStats:
        """A snapshot of the connection and byte counters."""
        return self._counters.snapshot()

    def attach(self, service: Service) -> None:
        """Hand new connections to ``service``; works whether or not the listener is serving.

        Raises:
            Error: a service is already attached (detach it first).
            TypeError: ``service`` has no ``on_connect``.
        """
        if not callable(getattr(service, "on_connect", None)):
            raise TypeError(f"a service needs an on_connect method, got {type(service).__name__}")
        if self._service is not None:
            raise Error("a service is already attached to this listener; detach it first")
        self._service = service

    def detach(self, service: Service) -> None:
        """Stop handing new connections to ``service``; its current connections go on.

        Raises:
            Error: ``service`` is not the attached service.
        """
        if self._service is not service:
            raise Error("that service is not attached to this listener")
        self._service = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, and serve until stopped or cancelled.

        Use it with ``await nursery.start(listener.serve)``, which returns once
        the port is bound (then :attr:`port` is known). A stopped listener can
        serve again.

        Raises:
            BindError: the address could not be bound.
            ConfigurationError: the ``secure_socket`` is unusable (before binding).
            Error: the listener is already serving.
        """
        if self._run is not None:
            raise Error("this listener is already serving")
        config = self._config
        limit = None if config.max_connections is None else trio.Semaphore(config.max_connections)
        # Published before binding, so a stop requested meanwhile is not lost:
        # serve then starts with its accept scope already cancelled, and ends.
        run = self._run = _Run(limit)
        listeners: list[socket.socket] = []
        try:
            ssl_context = self._ssl_context()
            listeners = await bind(
                config.port, config.host, config.backlog, reuse_port=config.reuse_port
            )
            run.port = listeners[0].getsockname()[1]
            settings = Settings(
                self._counters,
                idle_timeout=config.idle_timeout,
                handshake_timeout=(
                    config.secure_socket.handshake_timeout if config.secure_socket else None
                ),
                proxy_protocol=config.proxy_protocol,
            )
            with run.handler_scope:
                async with trio.open_nursery() as handlers:
                    run.handlers = handlers
                    start = self._starter(run, handlers, settings, ssl_context)
                    try:
                        with run.accept_scope:
                            async with trio.open_nursery() as acceptors:
                                for listener in listeners:
                                    acceptors.start_soon(accept_loop, listener, start, limit)
                                log.info("listening on port %d", run.port)
                                task_status.started()
                    finally:
                        # Close the listening sockets as soon as accepting ends,
                        # so new connects are refused while connections finish.
                        close_listening(listeners)
        finally:
            close_listening(listeners)  # if it never got as far as the nurseries
            self._run = None
            run.stopped.set()
            if run.port is not None:
                log.info("stopped listening on port %d", run.port)

    def _starter(
        self,
        run: _Run,
        handlers: trio.Nursery,
        settings: Settings,
        ssl_context: ssl.SSLContext | None,
    ) -> Callable[[socket.socket], None]:
        """Return what the accept loops call with each accepted socket."""
        counters = self._counters

        unattended = _Complaints("no service attached; closing new connections")

        def start(sock: socket.socket) -> None:
            service = self._service
            if service is None:
                sock.close()
                unattended.note()
                if run.limit is not None:
                    run.limit.release()
                return
            prepare_socket(sock)
            stream: trio.abc.Stream = TCPStream(sock)
            if ssl_context is not None:
                # Only wrapped here; the handshake runs in the connection's task.
                stream = trio.SSLStream(stream, ssl_context, server_side=True)
            connection = Connection(stream, service, settings, finished)
            if run.accept_scope.cancel_called:
                # Accepted in the same instant a stop began: it is served, but
                # must not keep a graceful stop waiting for its client to leave.
                connection.stop_reading()
            run.connections.add(connection)
            counters.total += 1
            counters.active += 1
            handlers.start_soon(connection.run)

        def finished(connection: Connection) -> None:
            run.connections.discard(connection)
            counters.active -= 1
            if run.limit is not None:
                run.limit.release()

        return start

    async def graceful_stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let each connection finish the data in hand, then close it.

        A connection waiting for input is closed at once; one inside
        ``on_bytes`` closes when that call (and its write-back) returns. After
        ``timeout`` seconds the remaining connections are cancelled. Returns
        once :meth:`serve` has returned, except when called from one of this
        listener's own connections, where it only starts the stop. Stopping a
        listener that is not serving does nothing.

        Raises:
            ConfigurationError: ``timeout`` is negative or not finite.
        """
        seconds = check_timeout("timeout", timeout)
        run = self._run
        if run is None:
            await trio.lowlevel.checkpoint()
            return
        run.accept_scope.cancel()
        for connection in list(run.connections):
            connection.stop_reading()
        if seconds is not None:
            deadline = trio.current_time() + seconds
            run.handler_scope.deadline = min(run.handler_scope.deadline, deadline)
        await self._wait_stopped(run)

    async def immediate_stop(self) -> None:
        """Stop accepting and cancel every connection now (``on_close`` still runs).

        Returns once :meth:`serve` has returned. Stopping a listener that is
        not serving does nothing.
        """
        run = self._run
        if run is None:
            await trio.lowlevel.checkpoint()
            return
        run.accept_scope.cancel()
        run.handler_scope.cancel()
        await self._wait_stopped(run)

    @staticmethod
    async def _wait_stopped(run: _Run) -> None:
        # A stop requested from one of the listener's own connections (or a
        # task they started) must not wait for serve() to end: it would wait
        # for itself.
        if _runs_under(run.handlers):
            await trio.lowlevel.checkpoint()
        else:
            await run.stopped.wait()

    def _ssl_context(self) -> ssl.SSLContext | None:
        secure_socket = self._config.secure_socket
        if secure_socket is None:
            return None
        return build_server_context(secure_socket)


class _Complaints:
    """A warning that a flood could repeat: logged at most once a second, with a count."""

    __slots__ = ("_last", "_message", "_suppressed")

    def __init__(self, message: str) -> None:
        self._message = message
        self._last = -math.inf
        self._suppressed = 0

    def note(self) -> None:
        now = trio.current_time()
        if now - self._last < 1.0:
            self._suppressed += 1
            return
        log.warning("%s (%d more since the last report)", self._message, self._suppressed)
        self._last, self._suppressed = now, 0


def _check_secure_socket(value: object) -> ListenerSecureSocket | None:
    if value is None or isinstance(value, ListenerSecureSocket):
        return value
    raise TypeError(
        f"secure_socket must be a ListenerSecureSocket or None, got {type(value).__name__}"
    )


def _runs_under(nursery: trio.Nursery | None) -> bool:
    """Whether the current task descends from ``nursery``."""
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None and nursery is not None:
        parent = task.parent_nursery
        if parent is nursery:
            return True
        task = parent.parent_task if parent is not None else None
    return False


class ListenerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Listener`, for :func:`serve`."""

    local_host: str | None
    secure_socket: ListenerSecureSocket | None
    backlog: int | None
    max_connections: int | None
    idle_timeout: float | None
    proxy_protocol: bool
    reuse_port: bool


async def serve(
    local_port: int,
    service: Service,
    *,
    task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ListenerOptions],
) -> None:
    """Serve ``service`` on ``local_port`` until cancelled: the one-line form for scripts.

    ::

        await trio_tcp.serve(3000, EchoServer())                  # runs until cancelled
        listener = await nursery.start(trio_tcp.serve, 0, EchoServer())  # the Listener

    ``options`` are :class:`Listener`'s keyword arguments. With
    ``nursery.start`` it returns the serving :class:`Listener`, to read its
    :attr:`~Listener.port` or stop it.
    """
    listener = Listener(local_port, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        task_status.started(listener)
