"""Run a service -- yours (APP) or a built-in echo, discard or chat -- until Ctrl-C or SIGTERM.

The first line on stdout is ``listening on HOST:PORT`` (with ``--port 0``, the
port the system picked); it is the only line there, so a script can read it.
The log goes to stderr: the built-in modes log every connection, and every
run ends with a summary of the listener's counters.

The first Ctrl-C (or SIGTERM) stops accepting and lets connections finish
for up to ``--grace`` seconds; a second one cancels them at once. Either way
each connection's ``on_close`` still runs, under its own deadline, and the
command exits with status 0.

This module is the command line; the work is done by :mod:`._serving` (one
process), :mod:`._supervisor` and :mod:`._worker` (``--workers N``), with
sockets from :mod:`._sockets` (``--fd``, systemd socket activation).
"""

from __future__ import annotations

import argparse
import ipaddress
import socket

from . import _app, _sockets, _supervisor, _worker
from ._modes import FRAMINGS, MODES
from ._options import UsageError, count, port, positive_seconds, seconds
from ._serving import ON_CLOSE_TIMEOUT, serve_here

__all__ = ["EPILOG", "HELP", "add_arguments", "check", "inherited_sockets", "run"]

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
  trio-tcp serve myapp:service --workers 4     # 4 processes, one socket
  trio-tcp serve myapp:service --fd 3          # a listening socket inherited as fd 3
  trio-tcp serve --port 0 --mode discard       # any free port, printed first
  trio-tcp serve --host '*' --mode chat --framing lines
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key
  trio-tcp serve --tls-keystore server.p12 --tls-password-file pw.txt
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key \\
                 --tls-client-ca certs/ca.pem  # mutual TLS: clients need a certificate

stopping: the first Ctrl-C or SIGTERM stops accepting and gives connections
--grace seconds to finish, then cancels them; each on_close then still gets
up to 5 s. So a stop takes at most --grace + 5 s. A second signal stops at once.

workers: with --workers N a supervisor owns the listening socket and runs N
worker processes that accept on it. It restarts a worker that dies (with a
growing delay), SIGHUP replaces the workers one by one with fresh ones that
import APP again (the new one serving before the old one stops; if the new
code fails, the old workers keep serving), and SIGTERM or Ctrl-C stops them
all within the same bound. Under systemd socket activation (LISTEN_FDS) the
supervisor, or the single process, serves the sockets systemd passed.
"""


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
    parser.add_argument(
        "--workers",
        type=count,
        default=1,
        metavar="N",
        help="run N worker processes on one listening socket, under a supervisor "
        "(default: %(default)s, in this process)",
    )
    parser.add_argument(
        "--fd",
        type=_descriptor,
        action="append",
        metavar="N",
        help="serve the listening socket inherited as file descriptor N (repeatable); "
        "--host and --port are then unused",
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
        "--write-timeout",
        type=positive_seconds,
        metavar="S",
        help="fail a connection whose writes make no progress for S seconds "
        "(a peer that stopped reading)",
    )
    parser.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="expect a PROXY protocol v1/v2 header first (behind HAProxy, nginx, a cloud LB)",
    )
    parser.add_argument(
        "--trusted-proxy",
        type=_network,
        action="append",
        metavar="CIDR",
        help="with --proxy-protocol, accept headers only from this address or network "
        "(repeatable; others are refused); default: from anyone who can connect",
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
    # How a supervisor hands a worker its sockets and its control socket (see _worker).
    parser.add_argument("--worker-control", type=_descriptor, help=argparse.SUPPRESS)
    parser.add_argument("--worker-sockets", type=_descriptors, help=argparse.SUPPRESS)
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
    if args.workers > 1 and args.mode == "chat":
        raise UsageError("--mode chat keeps its members in one process: it cannot use --workers")
    if args.trusted_proxy and not args.proxy_protocol:
        raise UsageError("--trusted-proxy needs --proxy-protocol")
    if args.fd and args.reuse_port:
        raise UsageError("--reuse-port applies to a socket trio-tcp binds, not to --fd")


def _descriptor(text: str) -> int:
    """A file descriptor number (0 or more)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _network(text: str) -> str:
    """An address or network in CIDR notation: ``10.0.0.0/8``, ``192.0.2.7``, ``::1``."""
    ipaddress.ip_network(text, strict=False)  # ValueError: argparse's one-line error
    return text


def _descriptors(text: str) -> list[int]:
    return [_descriptor(part) for part in text.split(",")]


_descriptor.__name__ = "file descriptor"
_network.__name__ = "network"


async def run(args: argparse.Namespace) -> int:
    """Serve: as a worker of a supervisor, as the supervisor of workers, or alone."""
    if args.worker_control is not None:
        return await _worker.run(args)
    sockets = inherited_sockets(args)
    if args.workers > 1:
        return await _supervisor.run(args, sockets)
    return await serve_here(args, sockets)


def inherited_sockets(args: argparse.Namespace) -> list[socket.socket] | None:
    """The listening sockets of ``--fd`` or systemd socket activation, or ``None``.

    Raises:
        CommandError: a descriptor is not a listening stream socket.
    """
    activated = _sockets.systemd_fds()  # read (and unset) even with --fd: not for a child
    if args.fd:
        return _sockets.from_fds(args.fd, source="--fd")
    if activated:
        return _sockets.from_fds(activated, source="LISTEN_FDS")
    return None
