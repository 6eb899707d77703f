"""Show trio_tcp working, with nothing to prepare: echo listeners and a client, plain and TLS.

Everything runs in this one process on loopback ports the system picks: a
plain and a TLS echo listener (certificates from a throwaway trustme CA, in a
temporary directory), a client that makes a few round trips through each, and
a graceful stop. It prints what happened at every step and exits 0.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import trio

import trio_tcp

from ._certs import write_certs
from ._options import endpoint, format_bytes

__all__ = ["EPILOG", "HELP", "add_arguments", "check", "run"]

HELP = "echo round trips over plain TCP and TLS, nothing to prepare"
EPILOG = """\
example:
  trio-tcp demo

Then try it by hand:
  trio-tcp serve --port 3000                    # in one terminal
  echo hello | trio-tcp connect localhost 3000  # in another
"""

HOST = "127.0.0.1"
#: What the client sends: a short line, and one larger than a single TCP
#: segment to show that read_exactly reassembles it.
MESSAGES = (b"hello, trio_tcp\n", b"ping\n", bytes(range(256)) * 256)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``trio-tcp demo`` has no options of its own."""


def check(args: argparse.Namespace) -> None:
    """Nothing to check."""


def _show(side: str, what: str, detail: str = "") -> None:
    print(f"  {side:<7}{what:<11}{detail}".rstrip(), flush=True)


def _payload(data: bytes) -> str:
    return repr(data) if len(data) <= 32 else f"{format_bytes(len(data))} of binary data"


class _EchoServer(trio_tcp.Service):
    """The demo's echo service; tells the client side when its connection has ended."""

    def __init__(self) -> None:
        self.closed = trio.Event()

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        tls = f" over {caller.tls_version}" if caller.is_secure else ""
        _show("server", "accepted", f"{endpoint(caller.remote_host, caller.remote_port)}{tls}")
        return _Echo(self.closed)


class _Echo(trio_tcp.ConnectionService):
    def __init__(self, closed: trio.Event) -> None:
        self.closed = closed

    async def on_bytes(self, data: bytes) -> bytes:
        return data

    async def on_close(self) -> None:
        _show("server", "closed", "the client left; on_close ran")
        self.closed.set()


async def _session(
    server: _EchoServer, port: int, secure_socket: trio_tcp.ClientSecureSocket | None
) -> None:
    server.closed = trio.Event()
    client = await trio_tcp.Client.connect(HOST, port, timeout=5, secure_socket=secure_socket)
    async with client:
        route = (
            f"{endpoint(client.local_host, client.local_port)} -> "
            f"{endpoint(client.remote_host, client.remote_port)}"
        )
        _show("client", "connected", route)
        if client.is_secure:
            _show("client", "TLS", f"{client.tls_version}, cipher {client.cipher}")
        for message in MESSAGES:
            started = trio.current_time()
            await client.write_bytes(message)
            reply = await client.read_exactly(len(message))
            elapsed = (trio.current_time() - started) * 1000
            _show("client", "sent", _payload(message))
            ok = "the same bytes" if reply == message else f"DIFFERENT bytes: {_payload(reply)}"
            _show("client", "received", f"{ok}, {elapsed:.2f} ms round trip")
    _show("client", "closed")
    with trio.move_on_after(2):
        await server.closed.wait()


async def run(args: argparse.Namespace) -> int:
    """Run the demo; return 0."""
    print("trio-tcp demo: echo listeners and a client on loopback, plain TCP and TLS", flush=True)
    with tempfile.TemporaryDirectory(prefix="trio-tcp-demo-") as tmp:
        files = write_certs(Path(tmp), ["localhost", HOST])
        listener_tls = trio_tcp.ListenerSecureSocket(
            key=trio_tcp.CertKey(cert_file=files.server_cert, key_file=files.server_key)
        )
        client_tls = trio_tcp.ClientSecureSocket(cert=files.ca)
        server = _EchoServer()
        plain = trio_tcp.Listener(0, local_host=HOST)
        secure = trio_tcp.Listener(0, local_host=HOST, secure_socket=listener_tls)
        plain.attach(server)
        secure.attach(server)
        async with trio.open_nursery() as nursery:
            await nursery.start(plain.serve)
            await nursery.start(secure.serve)
            print(f"\nplain TCP, listening on {endpoint(HOST, plain.port)}", flush=True)
            await _session(server, plain.port or 0, None)
            print(
                f"\nTLS, listening on {endpoint(HOST, secure.port)} "
                "(certificate from a throwaway trustme CA)",
                flush=True,
            )
            await _session(server, secure.port or 0, client_tls)
            await plain.graceful_stop(timeout=2)
            await secure.graceful_stop(timeout=2)
    total = [plain.stats, secure.stats]
    print(
        f"\nstopped gracefully: {sum(s.total_connections for s in total)} connections, "
        f"{format_bytes(sum(s.bytes_received for s in total))} echoed, "
        f"{sum(s.errors for s in total)} errors",
        flush=True,
    )
    print("next: trio-tcp serve --help, trio-tcp connect --help, trio-tcp bench --help", flush=True)
    return 0
