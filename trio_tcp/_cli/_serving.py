"""Serving one listener in this process until a signal: the part of ``serve`` its workers share.

``trio-tcp serve`` without ``--workers`` runs :func:`serve_here`; each worker
of ``--workers N`` runs :func:`serve_until_stopped` on the sockets it
inherits. Both build the listener from the same options
(:func:`listener_options`) and load the same service (:func:`load_service`).
"""

from __future__ import annotations

import argparse
import math
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import trio

import trio_tcp

from . import _app, _sockets
from ._log import log
from ._modes import ModeServer
from ._options import endpoint, format_bytes, read_password

__all__ = [
    "ON_CLOSE_TIMEOUT",
    "Stop",
    "describe_service",
    "host_of",
    "listener_options",
    "load_service",
    "serve_here",
    "serve_until_stopped",
]

#: The library's deadline for each ``on_close`` once a connection ends
#: (``trio_tcp``'s ``ON_CLOSE_TIMEOUT``): it runs even after ``--grace``, so
#: a stop can take this much longer than the grace.
ON_CLOSE_TIMEOUT = 5.0


def _secure_socket(args: argparse.Namespace) -> trio_tcp.ListenerSecureSocket | None:
    password = None if args.tls_password_file is None else read_password(args.tls_password_file)
    key: trio_tcp.CertKey | trio_tcp.KeyStore
    if args.tls_keystore is not None:
        key = trio_tcp.KeyStore(path=args.tls_keystore, password=password)
    elif args.tls_cert is not None:
        key = trio_tcp.CertKey(
            cert_file=args.tls_cert, key_file=args.tls_key, key_password=password
        )
    else:
        return None
    if args.tls_client_ca is None:
        return trio_tcp.ListenerSecureSocket(key=key)
    return trio_tcp.ListenerSecureSocket(
        key=key, client_auth="require", client_cert=args.tls_client_ca
    )


def host_of(args: argparse.Namespace) -> str | None:
    """The address to bind: ``None`` for every interface."""
    return None if args.host in ("*", "") else str(args.host)


def listener_options(args: argparse.Namespace) -> trio_tcp.ListenerOptions:
    """The :class:`trio_tcp.Listener` keywords the options ask for (TLS files are read here)."""
    return trio_tcp.ListenerOptions(
        local_host=host_of(args),
        secure_socket=_secure_socket(args),
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        write_timeout=args.write_timeout,
        proxy_protocol=args.proxy_protocol,
        trusted_proxies=args.trusted_proxy,
        reuse_port=args.reuse_port,
    )


def load_service(args: argparse.Namespace) -> trio_tcp.Service:
    """The service to serve: APP, imported now, or the built-in mode.

    Raises:
        CommandError: (status 2) APP cannot be loaded.
    """
    if args.app is not None:
        return _app.load(args.app, args.app_dir)
    return ModeServer(args.mode or "echo", args.framing)


def describe_service(args: argparse.Namespace, listener_options: trio_tcp.ListenerOptions) -> str:
    """``echo mode, plain TCP`` or ``myapp:service, TLS``: the log's first words."""
    what = args.app if args.app is not None else f"{args.mode or 'echo'} mode"
    tls = "TLS" if listener_options.get("secure_socket") is not None else "plain TCP"
    framing = f", {args.framing} framing" if args.framing else ""
    return f"{what}, {tls}{framing}"


async def serve_here(args: argparse.Namespace, sockets: list[socket.socket] | None) -> int:
    """Serve in this process -- on ``sockets`` if inherited, else on a port the listener
    binds -- until the first signal; stop gracefully (second signal: at once); return 0.
    """
    service = load_service(args)
    options = listener_options(args)
    listener = trio_tcp.Listener(args.port, **options)
    listener.attach(service)
    if sockets is None:
        start: Callable[..., Awaitable[None]] = listener.serve
        where = None
    else:
        where = _sockets.address(sockets[0])  # now: serve_listeners closes them at the end

        async def start(*, task_status: trio.TaskStatus[None]) -> None:
            await listener.serve_listeners(
                _sockets.trio_listeners(sockets), task_status=task_status
            )

    async def announce() -> None:
        address = where or endpoint(options.get("local_host"), listener.port)
        print(f"listening on {address}", flush=True)
        log.info("%s; Ctrl-C to stop", describe_service(args, options))

    await serve_until_stopped(listener, start, grace=args.grace, ready=announce)
    return 0


class Stop(NamedTuple):
    """A request to stop, and how: ``now`` True (at once), False (gracefully, however
    often asked), or None (a signal: gracefully the first time, at once the next).
    """

    reason: str
    now: bool | None = None


async def serve_until_stopped(
    listener: trio_tcp.Listener,
    start: Callable[..., Awaitable[None]],
    *,
    grace: float,
    ready: Callable[[], Awaitable[None]],
    stop_when: Callable[[trio.MemorySendChannel[Stop]], Awaitable[None]] | None = None,
) -> None:
    """Serve with ``start`` (a ``nursery.start``-able serve method) until stopped; log a summary.

    ``ready`` runs once serving. The first SIGINT or SIGTERM stops the
    listener gracefully within ``grace`` seconds; the next one stops it at
    once. ``stop_when`` may send other :class:`Stop` requests.
    """
    # Installed before serving, so a signal that arrives early still stops the
    # listener gracefully instead of raising KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            requests_in, requests = trio.open_memory_channel[Stop](math.inf)

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await start(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: stop waiting for requests

            async def forward_signals() -> None:
                async for signum in signals:
                    requests_in.send_nowait(Stop(signal.Signals(signum).name))

            nursery.start_soon(forward_signals)
            await nursery.start(serve)
            if stop_when is not None:
                nursery.start_soon(stop_when, requests_in)
            await ready()
            stopping = False
            async for request in requests:
                if request.now or (stopping and request.now is None):
                    log.info("%s: stopping now", request.reason)
                    await listener.immediate_stop()
                elif not stopping:
                    stopping = True
                    active = listener.stats.active_connections
                    again = " (again to stop now)" if request.now is None else ""
                    log.info(
                        "%s: stopping; %d connection(s) get %g s to finish%s",
                        request.reason, active, grace, again,
                    )  # fmt: skip
                    timeout = None if math.isinf(grace) else grace
                    nursery.start_soon(listener.graceful_stop, timeout)
    stats = listener.stats
    probes = f" ({stats.aborted} without data)" if stats.aborted else ""
    log.info(
        "stopped: %d connection(s)%s, %s in, %s out, %d error(s)",
        stats.total_connections, probes, format_bytes(stats.bytes_received),
        format_bytes(stats.bytes_sent), stats.errors,
    )  # fmt: skip
