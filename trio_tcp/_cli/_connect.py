"""Connect to a server, netcat style: stdin goes to the server, the server's bytes to stdout.

It ends when the server closes the connection, or after stdin ends: then the
server's remaining output is still printed until it has been silent for
``--wait`` seconds (TCP gives no way to know that an echo is complete, and a
trio_tcp client cannot half-close). ``--wait inf`` waits for the server to close.

A plain connection to a TLS server is easy to make by mistake and would look
like silence. So when the server's first bytes are a TLS record, or when it
was sent bytes but closed or stayed silent without a reply, the command asks
(a TLS handshake on a second connection, for at most two seconds) and, if the
server speaks TLS, says so, suggests ``--tls``, and exits 1.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import ssl
import sys

import trio

import trio_tcp

from ._options import (
    CommandError,
    UsageError,
    add_client_tls_arguments,
    client_secure_socket,
    endpoint,
    port,
    positive_seconds,
    say,
    seconds,
    wants_client_tls,
)

__all__ = ["EPILOG", "HELP", "add_arguments", "check", "run"]

HELP = "netcat-like client: stdin to the server, the server to stdout"
EPILOG = """\
examples:
  trio-tcp connect localhost 3000                  # type lines; Ctrl-D to end
  echo hello | trio-tcp connect localhost 3000     # prints the echo, then exits
  trio-tcp connect localhost 3000 < request.bin > reply.bin
  trio-tcp connect example.com 443 --tls           # trusts the system CAs
  trio-tcp connect localhost 3000 --cafile certs/ca.pem
  trio-tcp connect localhost 3000 --cafile certs/ca.pem \\
                   --cert certs/client.pem --key certs/client.key

Status lines ("connected to ...") go to stderr when stdin is a terminal, or with -v.
Ctrl-C exits with status 130; a refused connection or a TLS failure with 1.
"""

#: Largest chunk read from stdin at once (a pipe holds 64 KiB on Linux).
STDIN_CHUNK = 65536
#: How long the TLS check of a server that gave a plain client no reply may
#: take: a ServerHello comes within one round trip (plus the server's signing,
#: slower on a busy machine), and a plain server that reads without answering
#: (discard) must not delay the exit much.
TLS_PROBE_TIMEOUT = 2.0
#: TLS record content types (change_cipher_spec, alert, handshake,
#: application_data); a record starts with one, then version 3.x.
_TLS_RECORD_TYPES = frozenset({20, 21, 22, 23})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-tcp connect``."""
    parser.add_argument("host", metavar="HOST", help="server name or address")
    parser.add_argument("port", metavar="PORT", type=port, help="server port")
    parser.add_argument("--local-host", metavar="H", help="bind the local end to this address")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="give up connecting (TCP and TLS) after S seconds (default: %(default)g)",
    )
    parser.add_argument(
        "-q",
        "--wait",
        type=seconds,
        default=1.0,
        metavar="S",
        help="after stdin ends, exit once the server is silent for S seconds "
        "(default: %(default)g; 'inf': until the server closes)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="status lines on stderr, even in a pipe"
    )
    add_client_tls_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """Reject a lone --cert or --key, and port 0."""
    wants_client_tls(args)
    if args.port == 0:
        raise UsageError("argument PORT: port 0 cannot be connected to")


class _Session:
    """What the relay has seen: when the server last sent something, and how much went each way.

    After stdin ends, silence ends the session; the counts tell a TLS server
    that dropped a plain client apart from one that had nothing to say.
    """

    __slots__ = ("last", "received", "sent")

    def __init__(self) -> None:
        self.last = trio.current_time()
        self.sent = 0
        self.received = 0


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record (type 20-23, then version 3.0 to 3.4)."""
    return len(data) >= 3 and data[0] in _TLS_RECORD_TYPES and data[1] == 3 and data[2] <= 4


async def speaks_tls(host: str, port: int) -> bool:
    """Whether the server answers a TLS handshake (certificates unchecked) in time."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only the protocol is in question, not the identity
    with trio.move_on_after(TLS_PROBE_TIMEOUT):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        tls = trio.SSLStream(stream, context, server_hostname=host)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as exc:
            # A TLS alert (a client certificate required, no shared cipher) is
            # still TLS; a plain server's bytes fail as "wrong version number".
            return isinstance(exc.__cause__, ssl.SSLError) and "ALERT" in str(exc.__cause__)
        else:
            return True
        finally:
            await trio.aclose_forcefully(tls)
    return False


async def _check_not_tls(args: argparse.Namespace, what: str) -> None:
    """Raise a :class:`CommandError` suggesting ``--tls`` if the server speaks TLS."""
    if await speaks_tls(args.host, args.port):
        where = endpoint(args.host, args.port)
        raise CommandError(f"{where} {what}: it expects TLS (try --tls)")


async def run(args: argparse.Namespace) -> int:
    """Relay stdin and stdout until either side is done; return the exit status."""
    secure_socket = client_secure_socket(args)
    if sys.stdin is None or sys.stdout is None:
        # Python saw fd 0 or 1 closed at startup; by now another file (trio's
        # own, or the socket) may sit on that number, so never touch it.
        raise OSError("stdin or stdout is closed (use < /dev/null for no input)")
    verbose = args.verbose or os.isatty(0)
    client = await trio_tcp.Client.connect(
        args.host,
        args.port,
        local_host=args.local_host,
        timeout=None,  # an interactive session may sit idle for any time
        connect_timeout=args.timeout,
        secure_socket=secure_socket,
    )
    if verbose:
        tls = f" with {client.tls_version} {client.cipher}" if client.is_secure else ""
        say(
            f"connected to {endpoint(client.remote_host, client.remote_port)} "
            f"from {endpoint(client.local_host, client.local_port)}{tls}"
        )
    # FdStream puts the descriptions behind fds 0 and 1 into non-blocking mode;
    # on a terminal they are one description shared with the shell, so put
    # back exactly what was there (each FdStream only restores its own view).
    blocking = {fd: os.get_blocking(fd) for fd in (0, 1)}
    status = 0
    try:
        async with (
            client,
            trio.lowlevel.FdStream(os.dup(0)) as stdin,
            trio.lowlevel.FdStream(os.dup(1)) as stdout,
        ):
            status = await _relay(client, stdin, stdout, args)
    finally:
        for fd, mode in blocking.items():
            os.set_blocking(fd, mode)
    if verbose and status == 0:
        say("connection closed")
    return status


async def _read_stdin(stdin: trio.lowlevel.FdStream) -> bytes:
    try:
        return await stdin.receive_some(STDIN_CHUNK)
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        raise OSError(f"cannot read stdin: {reason}") from exc


async def _relay(
    client: trio_tcp.Client,
    stdin: trio.lowlevel.FdStream,
    stdout: trio.lowlevel.FdStream,
    args: argparse.Namespace,
) -> int:
    session = _Session()
    status = 0

    def unanswered() -> bool:
        return not client.is_secure and session.sent > 0 and session.received == 0

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupted() -> None:
                nonlocal status
                async for _ in signals:
                    status = 130
                    nursery.cancel_scope.cancel()

            async def to_stdout() -> None:
                try:
                    async for chunk in client:
                        if not (client.is_secure or session.received) and looks_like_tls(chunk):
                            await _check_not_tls(args, "answered with a TLS record")
                        session.received += len(chunk)
                        session.last = trio.current_time()
                        await stdout.send_all(chunk)
                except trio.BrokenResourceError:
                    pass  # stdout's reader left (`| head -1`): nothing more to do
                except trio_tcp.ConnectionClosedError:
                    if unanswered():
                        await _check_not_tls(args, "reset the connection without a reply")
                    raise
                if unanswered():
                    await _check_not_tls(args, "closed the connection without a reply")
                nursery.cancel_scope.cancel()

            async def from_stdin() -> None:
                while chunk := await _read_stdin(stdin):
                    # Counted first: the server may answer, or close, before
                    # this task runs again after the write.
                    session.sent += len(chunk)
                    await client.write_bytes(chunk)
                session.last = max(session.last, trio.current_time())
                wait = args.wait
                while (remaining := session.last + wait - trio.current_time()) > 0:
                    if math.isinf(remaining):
                        await trio.sleep_forever()
                    await trio.sleep(remaining)
                if unanswered():
                    await _check_not_tls(args, "sent no reply")
                nursery.cancel_scope.cancel()

            nursery.start_soon(interrupted)
            nursery.start_soon(to_stdout)
            nursery.start_soon(from_stdin)
    if status:
        sys.stderr.write("\n" if os.isatty(2) else "")
    return status
