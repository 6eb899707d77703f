"""``Listener``: accept, and run every connection in a nursery the caller owns.

Theory of operation
-------------------
The shape is trio's own: :meth:`Listener.serve_listeners` serves the
attached service on any already-open :class:`trio.abc.Listener`, and
:meth:`Listener.serve` is that over TCP sockets it binds itself (as
``trio.serve_tcp`` is ``serve_listeners`` over ``open_tcp_listeners``).
A serve run is two nested nurseries: the outer one holds the connection
tasks, the inner one an accept loop per listener (and, with an idle timeout,
one sweep). Stopping is cancel scopes, not flags:

* ``graceful_stop`` tells every connection the stop has begun (each finishes
  what has reached it, see ``_connection``), cancels the accept scope, and,
  given a timeout, puts a deadline on the connections' scope. Before the
  sockets the listener bound itself are closed, the connections the kernel
  has already completed in their accept queues are accepted and served as
  stopping, so no client whose ``connect()`` succeeded is reset by the stop.
* ``immediate_stop`` cancels both scopes at once.

The accept loops only accept: the PROXY header, the TLS handshake and
``on_connect`` run in each connection's own task. They pause at
``max_connections`` (new clients wait in the kernel's backlog) and, out of
file descriptors, wait and retry with a rate-limited log line, as trio's
``serve_listeners`` does. Each connection's ``on_close`` is shielded from
either stop, under its own deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from ._bind import bind_tcp
from ._config import check_port, check_timeout
from ._connection import Connection, Serving
from ._errors import UsageError
from ._log import RateLimited, log
from ._options import ListenerConfig, ListenerOptions
from ._stats import Counters, ListenerStats
from ._tcplistener import CAPACITY_ERRNOS, TCPListener
from ._tcpstream import from_trio_socket

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._service import Service

__all__ = ["Listener", "serve"]

#: How long an accept loop waits before retrying when the process is out of
#: file descriptors (or memory); trio's serve_listeners waits the same.
_CAPACITY_SLEEP = 0.1
#: At most this many connections are taken from a socket's accept queue when a
#: graceful stop closes it: more than any kernel queues (somaxconn is 4096 by
#: default), and the pass is synchronous, so it must end.
_DRAIN_LIMIT = 65536


class _Slots:
    """``max_connections``: free places, and accept loops waiting for one."""

    __slots__ = ("free", "waiting")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiting = trio.lowlevel.ParkingLot()

    async def wait_free(self) -> None:
        """Wait until a place is free, without taking it."""
        while self.free <= 0:
            await self.waiting.park()

    def give_back(self) -> None:
        self.free += 1
        self.waiting.unpark_all()


class _Run:
    """The state of one serve call: its scopes, its connections, its end."""

    __slots__ = (
        "accept_scope",
        "connections",
        "graceful",
        "handler_scope",
        "handlers",
        "port",
        "serving",
        "slots",
        "started",
        "stopped",
    )

    def __init__(self, slots: _Slots | None) -> None:
        self.port: int | None = None  # known once listening
        self.slots = slots
        self.accept_scope = trio.CancelScope()
        self.handler_scope = trio.CancelScope()
        self.connections: set[Connection] = set()
        self.handlers: trio.Nursery | None = None
        self.serving: Serving | None = None
        self.graceful = False
        self.started = False  # accepting (task_status.started() was called)
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
        secure_socket: serve TLS: a :class:`ListenerSecureSocket`, or a ready
            server-side :class:`ssl.SSLContext` (which gets the default 10 s
            handshake timeout).
        backlog: the kernel's queue of not yet accepted connections
            (``None``: the system maximum).
        max_connections: at most this many connections at once; at the limit
            accepting pauses, and new clients wait in the backlog.
        idle_timeout: close a connection that has neither received nor sent a
            byte for this many seconds while waiting for input (``on_close``
            runs; it is not an error). ``None``: never.
        write_timeout: a write to a caller (a reply, ``write_bytes``, the
            outbox) that makes no progress for this many seconds fails the
            connection: ``on_error`` gets a :class:`WriteTimeoutError`. So a
            peer that stops reading cannot hold ``on_bytes``, or a graceful
            stop, forever. ``None`` (the default): writes wait as long as the
            peer takes.
        proxy_protocol: connections come from a load balancer that opens
            each with a PROXY protocol header (v1 or v2, told apart
            automatically): ``caller.remote_host`` / ``remote_port`` are the
            real client's, and ``caller.proxy`` tells the rest. The header is
            read first, before any TLS handshake, within the
            ``handshake_timeout`` with TLS, else 10 s; a connection without a
            valid one is dropped (logged at INFO, counted in
            ``stats.errors``, no callback).
        trusted_proxies: the addresses and networks (``"10.0.0.0/8"``,
            ``"::1"``, :mod:`ipaddress` objects) allowed to send a PROXY
            header, checked against the TCP peer's own address before a byte
            is read. ``None`` (the default) trusts every peer: then bind the
            port where only the load balancer can reach it.
        untrusted_proxy: what happens to a connection from outside
            ``trusted_proxies``: ``"refuse"`` (the default) closes it at once,
            logged at WARNING (rate-limited) and counted in ``stats.refused``;
            ``"direct"`` serves it as a direct connection with its real
            address, reading no header.
        reuse_port: set ``SO_REUSEPORT`` on the listening sockets, so several
            processes can listen on the same port and the kernel spreads
            connections among them (Linux; the BSDs and macOS allow the bind
            but balance differently).
        outbox_limit: bytes a caller's outbox (:meth:`Caller.send_nowait`) may
            hold before ``outbox_overflow`` applies (default 256 KiB).
        outbox_overflow: ``"close"`` (the default) closes a connection whose
            outbox overflows, reporting an :class:`OutboxFullError` to its
            ``on_error``; ``"raise"`` raises it to the sender instead.

    Raises:
        ConfigurationError: a value out of range (a port above 65535, a
            negative or non-finite timeout, a malformed trusted network), or
            ``reuse_port=True`` where the platform has no ``SO_REUSEPORT``.
        TypeError: a value of the wrong type, or an unknown option.
    """

    def __init__(self, local_port: int, **options: Unpack[ListenerOptions]) -> None:
        self._port = check_port("local_port", local_port)
        self._config = ListenerConfig.from_options(dict(options))
        self._service: Service | None = None
        self._counters = Counters()
        self._run: _Run | None = None

    def __repr__(self) -> str:
        port = self.port
        where = f"{self._config.local_host or '*'}:{port if port is not None else self._port}"
        run = self._run
        state = "stopped" if run is None else "serving" if run.started else "starting"
        return f"<trio_tcp.Listener {where} {state}>"

    @property
    def port(self) -> int | None:
        """The bound TCP port while serving (one number for every address family), else ``None``.

        With :meth:`serve_listeners`, the port of the first listener that has
        one (``None`` for UNIX-domain or in-memory listeners).
        """
        return self._run.port if self._run is not None else None

    @property
    def stats(self) -> ListenerStats:
        """A snapshot of the connection and byte counters."""
        return self._counters.snapshot()

    def attach(self, service: Service) -> None:
        """Hand new connections to ``service``; works whether or not the listener is serving.

        Raises:
            UsageError: a service is already attached (detach it first).
            TypeError: ``service`` has no ``on_connect``.
        """
        if not callable(getattr(service, "on_connect", None)):
            raise TypeError(f"a service needs an on_connect method, got {type(service).__name__}")
        if self._service is not None:
            raise UsageError("a service is already attached to this listener; detach it first")
        self._service = service

    def detach(self, service: Service) -> None:
        """Stop handing new connections to ``service``; its current connections go on.

        Raises:
            UsageError: ``service`` is not the attached service.
        """
        if self._service is not service:
            raise UsageError("that service is not attached to this listener")
        self._service = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, and serve until stopped or cancelled.

        Use it with ``await nursery.start(listener.serve)``, which returns once
        the port is bound (then :attr:`port` is known). A stopped listener can
        serve again. This is :meth:`serve_listeners` over the TCP sockets the
        listener binds itself; owning them, it also empties their accept
        queues on a graceful stop.

        Raises:
            BindError: the address could not be bound.
            ConfigurationError: the ``secure_socket`` is unusable (before binding).
            UsageError: the listener is already serving.
        """
        run = self._begin()
        try:
            ssl_context = self._ssl_context()
            config = self._config
            sockets = await bind_tcp(
                self._port, config.local_host, config.backlog, reuse_port=config.reuse_port
            )
        except BaseException:
            self._end(run)
            raise
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = [
            TCPListener(sock) for sock in sockets
        ]
        await self._serve(run, listeners, ssl_context, owned=True, task_status=task_status)

    async def serve_listeners(
        self,
        listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the attached service on already-open trio listeners, until stopped or cancelled.

        ``listeners`` may be any :class:`trio.abc.Listener`: UNIX-domain
        sockets, a socket inherited from systemd or a supervisor
        (``trio.SocketListener(trio.socket.from_stdlib_socket(sock))``), a
        :class:`trio.SSLListener`, an in-memory listener. Everything
        :meth:`serve` does applies: TLS when ``secure_socket`` is set (not on
        top of a ``trio.SSLListener``, which does its own), the limits, the
        idle and write timeouts, the PROXY protocol, both stops, the stats. A
        plain :class:`trio.SocketListener` is served the way :meth:`serve`
        serves its own sockets, with trio_tcp's lean accept path and stream
        (its socket is taken over).

        Resource handling:
            The listeners belong to this call: they are closed when it
            returns. On a graceful stop they are closed without emptying
            their accept queues first, since other processes may share the
            sockets (use :meth:`serve` for sockets this listener should own).

        Raises:
            ConfigurationError: the ``secure_socket`` is unusable.
            UsageError: the listener is already serving.
        """
        if not listeners:
            raise ValueError("serve_listeners needs at least one listener")
        listeners = [_lean(listener) for listener in listeners]
        try:
            run = self._begin()
        except BaseException:
            await _close_all(listeners)  # they belong to this call, served or not
            raise
        try:
            ssl_context = self._ssl_context()
        except BaseException:
            self._end(run)
            await _close_all(listeners)
            raise
        await self._serve(run, list(listeners), ssl_context, owned=False, task_status=task_status)

    async def graceful_stop(self, timeout: float | None = None) -> None:
        """Stop accepting, serve what has reached each connection, then close it.

        Nothing that has reached the server is lost: connections already
        completed in the kernel's accept queue are accepted and served; a
        connection that has received nothing waits at most a short
        first-byte grace (0.1 s); input that arrived before the stop reached
        a connection is handed to ``on_bytes`` and answered; a running
        ``on_bytes`` finishes; ``on_stop`` may say goodbye; then each
        connection closes in an orderly way (lingering close, so no reply is
        destroyed by a reset). After ``timeout`` seconds the remaining
        connections are cancelled (and may be reset). Returns once
        :meth:`serve` has returned, except when called from one of this
        listener's own connections, where it only starts the stop. Stopping
        a listener that is not serving does nothing.

        Raises:
            ConfigurationError: ``timeout`` is negative or not finite.
        """
        seconds = check_timeout("timeout", timeout)
        run = self._run
        if run is None:
            await trio.lowlevel.checkpoint()
            return
        run.graceful = True
        if run.serving is not None:
            run.serving.stopping = True
        for connection in list(run.connections):
            connection.stop()
        run.accept_scope.cancel()
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

    # -- internals ---------------------------------------------------------------------

    def _begin(self) -> _Run:
        if self._run is not None:
            raise UsageError("this listener is already serving")
        limit = self._config.max_connections
        # Published before binding, so a stop requested meanwhile is not lost:
        # serve then starts with its accept scope already cancelled, and ends.
        run = self._run = _Run(None if limit is None else _Slots(limit))
        return run

    def _end(self, run: _Run) -> None:
        self._run = None
        run.stopped.set()

    async def _serve(
        self,
        run: _Run,
        listeners: list[trio.abc.Listener[trio.abc.Stream]],
        ssl_context: ssl.SSLContext | None,
        *,
        owned: bool,
        task_status: trio.TaskStatus[None],
    ) -> None:
        config = self._config
        try:
            run.port = _port_of(listeners)
            if config.proxy_protocol and config.trusted_proxies is None:
                _warn_if_exposed(listeners)
            with run.handler_scope:
                async with trio.open_nursery() as handlers:
                    run.handlers = handlers
                    serving = run.serving = Serving(
                        config, self._counters, ssl_context, handlers.start_soon
                    )
                    serving.stopping = run.graceful
                    start = self._starter(run, handlers, serving)
                    try:
                        with run.accept_scope:
                            async with trio.open_nursery() as acceptors:
                                for listener in listeners:
                                    acceptors.start_soon(_accept_loop, listener, start, run.slots)
                                if config.idle_timeout is not None:
                                    acceptors.start_soon(_sweep, run, config.idle_timeout)
                                if run.port is not None:
                                    log.info("listening on port %d", run.port)
                                else:
                                    log.debug("serving %d listener(s)", len(listeners))
                                run.started = True
                                task_status.started()
                    finally:
                        # Accepting is over. Before the sockets close (which resets
                        # whatever is still queued in them), take what the kernel
                        # has already completed: those clients' connect() succeeded.
                        drained = (
                            _drain_accept_queues(listeners, start) if owned and run.graceful else 0
                        )
                        await _close_all(listeners)
                        log.debug(
                            "listening sockets closed (%d queued connection(s) accepted first)",
                            drained,
                        )
        finally:
            try:
                await _close_all(listeners)  # if it never got as far as the nurseries
            finally:
                self._end(run)
            if run.port is not None:
                log.info("stopped listening on port %d", run.port)

    def _starter(
        self, run: _Run, handlers: trio.Nursery, serving: Serving
    ) -> Callable[[trio.abc.Stream, bool], None]:
        """Return what the accept loops call with each accepted stream."""
        counters = self._counters
        unattended = RateLimited(logging.WARNING, "no service attached; closing new connections")

        def start(stream: trio.abc.Stream, holds_slot: bool) -> None:
            service = self._service
            if service is None:
                unattended.note()
                if holds_slot and run.slots is not None:
                    run.slots.give_back()
                handlers.start_soon(trio.aclose_forcefully, stream)
                return
            connection = Connection(
                stream, service, serving, finished if holds_slot else finished_extra
            )
            run.connections.add(connection)
            counters.total += 1
            counters.active += 1
            handlers.start_soon(connection.run)

        def finished_extra(connection: Connection) -> None:
            run.connections.discard(connection)
            counters.active -= 1

        def finished(connection: Connection) -> None:
            finished_extra(connection)
            if run.slots is not None:
                run.slots.give_back()

        return start

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
        if secure_socket is None or isinstance(secure_socket, ssl.SSLContext):
            return secure_socket
        from ._tls import build_server_context  # TLS files and cryptography: only when needed

        return build_server_context(secure_socket)


async def _accept_loop(
    listener: trio.abc.Listener[trio.abc.Stream],
    start: Callable[[trio.abc.Stream, bool], None],
    slots: _Slots | None,
) -> None:
    """Accept connections from ``listener`` until it closes, handing each to ``start``.

    With ``max_connections``, the loop waits for a free place *before*
    accepting (new clients wait in the kernel's backlog) and takes it after:
    with several listeners (IPv4 and IPv6), a loop waiting for a connection
    must not sit on a place another could use. If another loop took the last
    place in between, the accepted connection waits for the next one.
    """
    shortage = RateLimited(logging.ERROR, "accept failed: %s; retrying every %g s")
    while True:
        if slots is not None:
            await slots.wait_free()
        try:
            stream = await listener.accept()
        except trio.ClosedResourceError:
            return  # closed: by a stop, or by its owner
        except OSError as exc:
            if exc.errno not in CAPACITY_ERRNOS:
                raise
            shortage.note(exc.strerror, _CAPACITY_SLEEP)
            await trio.sleep(_CAPACITY_SLEEP)
            continue
        if slots is None:
            start(stream, False)
        else:
            try:
                await slots.wait_free()
            except BaseException:
                start(stream, False)  # stopped while it waited: served, as stopping
                raise
            slots.free -= 1
            start(stream, True)
        # No checkpoint of its own here: every accept is one already (and a
        # flood of ready connections cannot starve the connections themselves).


def _drain_accept_queues(
    listeners: Sequence[trio.abc.Listener[trio.abc.Stream]],
    start: Callable[[trio.abc.Stream, bool], None],
) -> int:
    """Take every connection the kernel has completed, in one bounded pass; no waiting.

    Returns how many were taken. A connection whose handshake completes
    between the last look and the close is still reset: that window is the
    kernel's, a few microseconds wide (see the stopping guide).
    """
    taken = 0
    for listener in listeners:
        if not isinstance(listener, TCPListener):
            continue
        for _ in range(_DRAIN_LIMIT):
            try:
                stream = listener.accept_nowait()
            except (OSError, trio.ClosedResourceError):
                break  # out of descriptors, say: what is left is reset, as before
            if stream is None:
                break
            start(stream, False)  # beyond max_connections if need be: served as stopping
            taken += 1
    return taken


async def _close_all(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]) -> None:
    """Close every listener, even inside a cancelled scope."""
    for listener in listeners:
        if isinstance(listener, TCPListener):
            listener.close_now()
        else:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(listener)


async def _sweep(run: _Run, idle: float) -> None:
    """Close connections idle for ``idle`` seconds, a few sweeps per timeout.

    One timer per listener instead of one per connection: reads and writes
    cost nothing for it. A connection closes between ``idle`` and ``idle``
    plus one sweep period after its last byte.
    """
    period = min(idle / 4, 1.0)
    while True:
        await trio.sleep(period)
        now = trio.current_time()
        for connection in list(run.connections):
            connection.check_idle(now, idle)


def _lean(listener: trio.abc.Listener[trio.abc.Stream]) -> trio.abc.Listener[trio.abc.Stream]:
    """A plain ``trio.SocketListener`` as a ``TCPListener`` over the same socket.

    The socket (inherited from systemd or a supervisor, say) then costs what
    the listener's own sockets cost: trio's ``SocketStream`` is general and
    pays for it on every operation. Any other listener is served as it is.
    """
    if type(listener) is not trio.SocketListener:
        return listener
    sock = from_trio_socket(listener.socket)  # detaches trio's wrapper
    sock.setblocking(False)  # trio had the descriptor non-blocking already
    return TCPListener(sock)


def _warn_if_exposed(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]) -> None:
    """Say it once if any peer beyond this host could send a PROXY header that is trusted."""
    for listener in listeners:
        layer: object = listener
        while isinstance(layer, trio.SSLListener):
            layer = layer.transport_listener
        sock = getattr(layer, "socket", None)
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue  # a UNIX socket: reachable only through its file's permissions
        host = sock.getsockname()[0]
        if not ipaddress.ip_address(host.partition("%")[0]).is_loopback:
            log.warning(
                "proxy_protocol=True without trusted_proxies, listening on %s: any peer that"
                " can reach this port can claim any client address in a PROXY header;"
                " set trusted_proxies to the load balancer's addresses",
                host,
            )
            return


def _port_of(listeners: Sequence[trio.abc.Listener[trio.abc.Stream]]) -> int | None:
    """The TCP port of the first listener that has one (through TLS listeners)."""
    for listener in listeners:
        layer: object = listener
        while isinstance(layer, trio.SSLListener):
            layer = layer.transport_listener
        sock = getattr(layer, "socket", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            port: int = sock.getsockname()[1]
            return port
    return None


def _runs_under(nursery: trio.Nursery | None) -> bool:
    """Whether the current task descends from ``nursery``."""
    task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    while task is not None and nursery is not None:
        parent = task.parent_nursery
        if parent is nursery:
            return True
        task = parent.parent_task if parent is not None else None
    return False


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
