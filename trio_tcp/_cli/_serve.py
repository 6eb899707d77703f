"""Run a service -- yours (``APP``) or a built-in echo, discard or chat -- until Ctrl-C or SIGTERM.

The first line on stdout is ``listening on HOST:PORT`` (with ``--port 0``, the
port the system picked); it is the only line there, so a script can read it.
The log goes to stderr: the built-in modes log every connection, and every
run ends with a summary of the listener's counters.

The first Ctrl-C (or SIGTERM) stops accepting and lets connections finish
for up to ``--grace`` seconds; a second one cancels them at once. Either way
each connection's ``on_close`` still runs, under its own deadline, and the
command exits with status 0.
"""

from __future__ import annotations

import argparse
import math
import signal
from collections.abc import Awaitable, Callable

import trio

import trio_tcp

from . import _app
from ._log import log
from ._modes import FRAMINGS, MODES, ModeServer
from ._options import (
    UsageError,
    count,
    endpoint,
    format_bytes,
    port,
    positive_seconds,
    read_password,
    seconds,
)

__all__ = [
    "EPILOG",
    "HELP",
    "ON_CLOSE_TIMEOUT",
    "add_arguments",
    "check",
    "listener_options",
    "load_service",
    "run",
    "serve_until_stopped",
]

HELP = "run your service (APP) or an echo, discard or chat listener until Ctrl-C"
EPILOG = """\
APP is MODULE:ATTRIBUTE, naming a trio_tcp.Service instance, a Service class,
or a function that returns one (MODULE is imported from --app-dir).

built-in modes (without APP):
  echo     send every byte (or message, with --framing) back
  discard  read and drop everything
  chat     relay what each client sends to every other client

examples:
  trio-tcp serve                               # echo on 127.0.0.1:3000
  trio-tcp serve myapp:service --port 4000     # your service, from ./myapp.py
  trio-tcp serve myapp:Service --app-dir src   # a class, from src/myapp.py
  trio-tcp serve --port 0 --mode discard       # any free port, printed first
  trio-tcp serve --host '*' --mode chat --framing lines
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key
  trio-tcp serve --tls-keystore server.p12 --tls-password-file pw.txt
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key \\
                 --tls-client-ca certs/ca.pem  # mutual TLS: clients need a certificate

stopping: the first Ctrl-C or SIGTERM stops accepting and gives connections
--grace seconds to finish, then cancels them; each on_close then still gets
up to 5 s. So a stop takes at most --grace + 5 s. A second signal stops at once.
"""

#: The library's deadline for each ``on_close`` once a connection ends
#: (``trio_tcp``'s ``ON_CLOSE_TIMEOUT``): it runs even after ``--grace``, so
#: a stop can take this much longer than the grace.
ON_CLOSE_TIMEOUT = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-tcp serve``."""
    parser.add_argument(
        "app",
        metavar="APP",
        nargs="?",
        help="your service as MODULE:ATTRIBUTE (default: a built-in --mode)",
    )
    parser.add_argument(
        "--app-dir",
        metavar="DIR",
        default=".",
        help="import APP's module from DIR, put first on sys.path (default: the current one)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; '*' for every interface (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=port, default=3000, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument("--mode", choices=MODES, help="built-in service (default: echo)")
    parser.add_argument(
        "--framing",
        choices=tuple(FRAMINGS),
        help="built-in modes work on messages: newline-delimited lines, or a 4-byte "
        "big-endian length prefix",
    )
    parser.add_argument(
        "--max-connections", type=count, metavar="N", help="serve at most N at once"
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        metavar="S",
        help="close connections silent for S seconds",
    )
    parser.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY protocol v1/v2 header first (behind HAProxy, nginx, a cloud LB)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, so several serve processes can share the port",
    )
    parser.add_argument(
        "--grace",
        type=seconds,
        default=5.0,
        metavar="S",
        help="on Ctrl-C or SIGTERM, give connections S seconds to finish; with on_close's "
        f"own {ON_CLOSE_TIMEOUT:g} s, a stop takes at most S + {ON_CLOSE_TIMEOUT:g} s "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log TLS handshake failures"
    )
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of --tls-cert")
    tls.add_argument("--tls-keystore", metavar="FILE", help="PKCS#12 key store instead of PEMs")
    tls.add_argument(
        "--tls-password-file",
        metavar="FILE",
        help="file whose first line is the key store's (or encrypted key's) password",
    )
    tls.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates issued by this CA (PEM): mutual TLS",
    )


def check(args: argparse.Namespace) -> None:
    """Reject options that do not fit together, and an APP that is not MODULE:ATTRIBUTE."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_keystore is not None and args.tls_cert is not None:
        raise UsageError("use either --tls-cert/--tls-key or --tls-keystore, not both")
    secure = args.tls_cert is not None or args.tls_keystore is not None
    if args.tls_password_file is not None and not secure:
        raise UsageError("--tls-password-file needs --tls-keystore or --tls-cert/--tls-key")
    if args.tls_client_ca is not None and not secure:
        raise UsageError("--tls-client-ca needs --tls-cert/--tls-key or --tls-keystore")
    if args.app is not None:
        _app.check_spec(args.app)
        if args.mode is not None or args.framing is not None:
            raise UsageError("--mode and --framing choose a built-in service; APP is your own")


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
        proxy_protocol=args.proxy_protocol,
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


async def run(args: argparse.Namespace) -> int:
    """Serve until the first signal; stop gracefully (second signal: at once); return 0."""
    service = load_service(args)
    options = listener_options(args)
    listener = trio_tcp.Listener(args.port, **options)
    listener.attach(service)

    async def announce() -> None:
        print(f"listening on {endpoint(options.get('local_host'), listener.port)}", flush=True)
        log.info("%s; Ctrl-C to stop", describe_service(args, options))

    await serve_until_stopped(listener, listener.serve, grace=args.grace, ready=announce)
    return 0


async def serve_until_stopped(
    listener: trio_tcp.Listener,
    start: Callable[..., Awaitable[None]],
    *,
    grace: float,
    ready: Callable[[], Awaitable[None]],
    stop_when: Callable[[trio.MemorySendChannel[str]], Awaitable[None]] | None = None,
) -> None:
    """Serve with ``start`` (a ``nursery.start``-able serve method) until stopped; log a summary.

    ``ready`` runs once serving. The first SIGINT or SIGTERM -- or the first
    reason ``stop_when`` sends -- stops the listener gracefully within
    ``grace`` seconds; the next one stops it at once.
    """
    # Installed before serving, so a signal that arrives early still stops the
    # listener gracefully instead of raising KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            reasons_in, reasons = trio.open_memory_channel[str](math.inf)

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await start(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: stop waiting for reasons

            async def forward_signals() -> None:
                async for signum in signals:
                    reasons_in.send_nowait(signal.Signals(signum).name)

            nursery.start_soon(forward_signals)
            await nursery.start(serve)
            if stop_when is not None:
                nursery.start_soon(stop_when, reasons_in)
            await ready()
            stopping = False
            async for reason in reasons:
                if not stopping:
                    stopping = True
                    active = listener.stats.active_connections
                    log.info(
                        "%s: stopping; %d connection(s) get %g s to finish (again to stop now)",
                        reason, active, grace,
                    )  # fmt: skip
                    nursery.start_soon(listener.graceful_stop, None if math.isinf(grace) else grace)
                else:
                    log.info("%s: stopping now", reason)
                    await listener.immediate_stop()
    stats = listener.stats
    log.info(
        "stopped: %d connection(s), %s in, %s out, %d error(s)",
        stats.total_connections, format_bytes(stats.bytes_received),
        format_bytes(stats.bytes_sent), stats.errors,
    )  # fmt: skip
