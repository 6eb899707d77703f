"""Run a listener (echo, discard or chat) until Ctrl-C or SIGTERM, logging every connection.

The first line on stdout is ``listening on HOST:PORT`` (with ``--port 0``, the
port the system picked). Then one line per connection event::

    12:00:01 connect 127.0.0.1:53122 (#3)
    12:00:03 close 127.0.0.1:53122 (#3) after 2.1 s, 10 B in, 10 B out

The first Ctrl-C (or SIGTERM) stops accepting and lets connections finish
for up to ``--grace`` seconds; a second one cancels them at once. Either way
the command exits with status 0.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable

import trio

import trio_tcp
from trio_tcp.framing import Delimited, Framing, LengthPrefixed

from ._options import UsageError, count, endpoint, format_bytes, port, positive_seconds, seconds
from ._options import read_password as _read_password

__all__ = ["EPILOG", "HELP", "add_arguments", "check", "run"]

HELP = "run an echo, discard or chat listener until Ctrl-C"
EPILOG = """\
modes:
  echo     send every byte (or message, with --framing) back
  discard  read and drop everything
  chat     relay what each client sends to every other client

examples:
  trio-tcp serve                               # echo on 127.0.0.1:3000
  trio-tcp serve --port 0 --mode discard       # any free port, printed first
  trio-tcp serve --host '*' --mode chat --framing lines
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key
  trio-tcp serve --tls-keystore server.p12 --tls-password-file pw.txt
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key \\
                 --tls-client-ca certs/ca.pem  # mutual TLS: clients need a certificate
"""

#: How long a chat broadcast waits for one slow member before cutting it off
#: (the write is abandoned, which closes that member's connection).
CHAT_SEND_TIMEOUT = 1.0

_FRAMINGS: dict[str, Callable[[], Framing]] = {
    "lines": lambda: Delimited(b"\n"),
    "length4": lambda: LengthPrefixed(4),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-tcp serve``."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; '*' for every interface (default: %(default)s)",
    )
    parser.add_argument(
        "--port", type=port, default=3000, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--mode", choices=("echo", "discard", "chat"), default="echo", help="default: echo"
    )
    parser.add_argument(
        "--framing",
        choices=tuple(_FRAMINGS),
        help="work on messages: newline-delimited lines, or a 4-byte big-endian length prefix",
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
        help="on Ctrl-C, give connections S seconds to finish (default: %(default)g)",
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
    """Reject TLS options that do not fit together."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.tls_keystore is not None and args.tls_cert is not None:
        raise UsageError("use either --tls-cert/--tls-key or --tls-keystore, not both")
    secure = args.tls_cert is not None or args.tls_keystore is not None
    if args.tls_password_file is not None and not secure:
        raise UsageError("--tls-password-file needs --tls-keystore or --tls-cert/--tls-key")
    if args.tls_client_ca is not None and not secure:
        raise UsageError("--tls-client-ca needs --tls-cert/--tls-key or --tls-keystore")


def _secure_socket(args: argparse.Namespace) -> trio_tcp.ListenerSecureSocket | None:
    password = None if args.tls_password_file is None else _read_password(args.tls_password_file)
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


def _log(line: str) -> None:
    try:
        print(time.strftime("%H:%M:%S"), line, flush=True)
    except BrokenPipeError:
        # Nobody reads the log any more (`trio-tcp serve | head`): keep serving,
        # and send the rest, including the unflushed line, to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class _Server(trio_tcp.Service):
    """Numbers and logs every connection, and gives it the mode's connection service."""

    def __init__(self, mode: str, framing: str | None) -> None:
        self.mode = mode
        self.framing: Framing | None = None if framing is None else _FRAMINGS[framing]()
        self.accepted = 0
        #: Chat members, by caller id.
        self.members: dict[str, _Chat] = {}

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.accepted += 1
        connection = _MODES[self.mode](self, caller, self.accepted)
        tls = f", {caller.tls_version} {caller.cipher}" if caller.is_secure else ""
        _log(f"connect {connection.name}{tls}")
        return connection


class _Connection(trio_tcp.ConnectionService):
    """Counts and logs one connection; the subclasses say what happens to the bytes."""

    def __init__(self, server: _Server, caller: trio_tcp.Caller, number: int) -> None:
        self.server = server
        self.caller = caller
        self.framing = server.framing
        self.name = f"{endpoint(caller.remote_host, caller.remote_port)} (#{number})"
        self.started = trio.current_time()
        self.received = self.sent = 0

    async def on_error(self, err: trio_tcp.Error) -> None:
        _log(f"error {self.name}: {err}")

    async def on_close(self) -> None:
        elapsed = trio.current_time() - self.started
        _log(
            f"close {self.name} after {elapsed:.1f} s, "
            f"{format_bytes(self.received)} in, {format_bytes(self.sent)} out"
        )


class _Echo(_Connection):
    async def on_bytes(self, data: bytes) -> bytes:
        self.received += len(data)
        self.sent += len(data)
        return data


class _Discard(_Connection):
    async def on_bytes(self, data: bytes) -> None:
        self.received += len(data)


class _Chat(_Connection):
    def __init__(self, server: _Server, caller: trio_tcp.Caller, number: int) -> None:
        super().__init__(server, caller, number)
        server.members[caller.id] = self

    async def on_bytes(self, data: bytes) -> None:
        self.received += len(data)
        payload = data if self.framing is None else self.framing.encode(data)
        async with trio.open_nursery() as nursery:
            for member in list(self.server.members.values()):
                if member is not self:
                    nursery.start_soon(member.send, payload, len(data))

    async def send(self, payload: bytes, size: int) -> None:
        # Cut short, the write closes this member's connection: a slow reader
        # is dropped rather than allowed to stall everyone's messages.
        with trio.move_on_after(CHAT_SEND_TIMEOUT):
            try:
                await self.caller.write_bytes(payload)
            except trio_tcp.ConnectionClosedError:
                return  # it left meanwhile; its on_close removes it
            self.sent += size

    async def on_close(self) -> None:
        self.server.members.pop(self.caller.id, None)
        await super().on_close()


_MODES: dict[str, type[_Connection]] = {"echo": _Echo, "discard": _Discard, "chat": _Chat}


async def run(args: argparse.Namespace) -> int:
    """Serve until the first signal; stop gracefully (second signal: at once); return 0."""
    secure_socket = _secure_socket(args)
    host = None if args.host in ("*", "") else args.host
    listener = trio_tcp.Listener(
        args.port,
        local_host=host,
        secure_socket=secure_socket,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        proxy_protocol=args.proxy_protocol,
        reuse_port=args.reuse_port,
    )
    listener.attach(_Server(args.mode, args.framing))
    # Installed before binding, so a signal that arrives early still stops
    # the listener gracefully instead of raising KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await listener.serve(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: stop waiting for signals

            await nursery.start(serve)
            print(f"listening on {endpoint(host, listener.port)}", flush=True)
            framing = f", {args.framing} framing" if args.framing else ""
            _log(
                f"{args.mode} mode, {'TLS' if secure_socket else 'plain TCP'}{framing}; "
                "Ctrl-C to stop"
            )
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stopping:
                    stopping = True
                    active = listener.stats.active_connections
                    _log(
                        f"{name}: stopping; {active} connection(s) get {args.grace:g} s "
                        "to finish (again to stop now)"
                    )
                    nursery.start_soon(listener.graceful_stop, args.grace)
                else:
                    _log(f"{name}: stopping now")
                    await listener.immediate_stop()
    stats = listener.stats
    _log(
        f"stopped: {stats.total_connections} connection(s), {format_bytes(stats.bytes_received)} "
        f"in, {format_bytes(stats.bytes_sent)} out, {stats.errors} error(s)"
    )
    return 0
