"""A TLS echo server: every byte a client sends comes straight back, encrypted.

With your own certificate and key (PEM files)::

    python examples/tls_echo_server.py --cert public.crt --key private.key

With neither, it makes a throwaway CA and a certificate for localhost,
127.0.0.1 and ::1 (this needs ``pip install trustme``). Everything goes into a
temporary directory that is removed at exit; the server prints the path of the
CA certificate, for the client to trust (``--write-ca PATH`` puts it elsewhere)::

    python examples/tls_echo_server.py                   # listens on 127.0.0.1:9002
    python examples/tls_echo_client.py --cafile /tmp/trio-tcp-demo-k2j4x8/ca.pem

Add ``--require-client-cert CA.pem`` for mutual TLS. Stop it with Ctrl-C (or
SIGTERM): the listener stops gracefully, and TLS clients see close_notify.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from pathlib import Path

import trio

import trio_tcp

log = logging.getLogger("tls_echo_server")


class EchoService(trio_tcp.ConnectionService):
    """Handles one client: writes every chunk back."""

    async def on_bytes(self, data: bytes) -> bytes:
        return data

    async def on_error(self, err: trio_tcp.Error) -> None:
        # A TLSError here is e.g. a client that closed without close_notify.
        log.warning("connection error: %s", err)

    async def on_close(self) -> None:
        print("Client left", flush=True)


class EchoServer(trio_tcp.Service):
    """Gives every new connection its own EchoService, once its handshake is done."""

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        who = "anonymous"
        if caller.peer_certificate is not None:  # only with --require-client-cert
            who = str(caller.peer_certificate.get("subjectAltName", "certificate"))
        print(
            f"Client connected: {caller.remote_port} ({caller.tls_version}, "
            f"{caller.cipher}, {who})",
            flush=True,
        )
        return EchoService()


def demo_certificate(directory: Path, ca_path: Path) -> trio_tcp.CertKey:
    """Make a CA and a certificate for localhost.

    The CA certificate goes to ``ca_path`` (for the client); the server's
    certificate and key go to ``directory``, removed when the server exits.
    """
    try:
        import trustme
    except ImportError:
        sys.exit("no --cert/--key given, and trustme is not installed: pip install trustme")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    ca.cert_pem.write_to_path(str(ca_path))
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    for blob in server.cert_chain_pems:
        blob.write_to_path(str(cert_file), append=True)
    server.private_key_pem.write_to_path(str(key_file))
    print(f"CA certificate written to {ca_path}", flush=True)
    print(f"  try: python examples/tls_echo_client.py --cafile {ca_path}", flush=True)
    return trio_tcp.CertKey(cert_file=cert_file, key_file=key_file)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="trio-tcp-demo-") as scratch:
        if args.cert is None:
            ca_path = Path(args.write_ca or Path(scratch) / "ca.pem")
            key = demo_certificate(Path(scratch), ca_path)
        else:
            key = trio_tcp.CertKey(cert_file=args.cert, key_file=args.key)
        secure_socket = trio_tcp.ListenerSecureSocket(
            key=key,
            handshake_timeout=args.handshake_timeout,
            client_auth="require" if args.require_client_cert else "none",
            client_cert=args.require_client_cert,
        )
        listener = trio_tcp.Listener(args.port, local_host=args.host, secure_socket=secure_socket)
        listener.attach(EchoServer())
        async with trio.open_nursery() as nursery:
            # Every file is read and checked here, before the port is bound: a bad
            # certificate or key is a ConfigurationError naming it.
            await nursery.start(listener.serve)
            print(f"TLS echo server listening on {args.host}:{listener.port}", flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    await listener.graceful_stop(timeout=2)
                    break


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=9002, help="port, 0 for any (default: %(default)s)"
    )
    parser.add_argument("--cert", help="certificate (chain) PEM file; needs --key")
    parser.add_argument("--key", help="private key PEM file; needs --cert")
    parser.add_argument(
        "--write-ca",
        metavar="PATH",
        help="without --cert/--key: where to write the demo CA certificate "
        "(default: the server's temporary directory, removed at exit)",
    )
    parser.add_argument(
        "--require-client-cert",
        metavar="CA",
        help="mutual TLS: require client certificates issued by this CA (PEM file)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=10.0,
        help="seconds a client gets to finish its handshake (default: %(default)s)",
    )
    args = parser.parse_args()
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        trio.run(main, arguments)
    except Exception as exc:
        # trio reports what failed inside the nursery as a group of one.
        inner = getattr(exc, "exceptions", [exc])
        if len(inner) == 1 and isinstance(inner[0], trio_tcp.ConfigurationError):
            sys.exit(f"configuration error: {inner[0]}")
        raise
