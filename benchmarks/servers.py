"""Echo servers under benchmark, each written the idiomatic fastest way for its stack.

Run one by name; it binds 127.0.0.1 (port 0 picks a free port), prints
``listening on 127.0.0.1:PORT`` and serves until SIGTERM or SIGINT::

    python benchmarks/servers.py trio_tcp --port 0
    python benchmarks/servers.py trio_raw_tls --cert server.pem --key server.key

Kinds:

- ``trio_tcp``: a :class:`trio_tcp.Listener` whose ``on_bytes(data)`` returns the data.
- ``trio_tcp_caller``: the same with ``on_bytes(caller, data)`` calling
  ``caller.write_bytes(data)`` and returning ``None``.
- ``trio_raw``: :func:`trio.serve_tcp` with a ``receive_some``/``send_all`` loop.
- ``asyncio_streams``: :func:`asyncio.start_server` with ``read``/``write``/``drain``.
- ``asyncio_protocol``: an :class:`asyncio.Protocol` writing back in ``data_received``.
- ``trio_tcp_tls`` and ``trio_raw_tls``: the TLS forms of ``trio_tcp`` and ``trio_raw``.

The servers log nothing per connection and print nothing after the first line:
the runner reads their memory from ``/proc`` and their results from the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio

import trio_tcp

HOST = "127.0.0.1"
# trio's own default receive size; every server reads in chunks of at most this.
RECEIVE_SIZE = 65536

PLAIN_KINDS = ("trio_tcp", "trio_tcp_caller", "trio_raw", "asyncio_streams", "asyncio_protocol")
TLS_KINDS = ("trio_tcp_tls", "trio_raw_tls")
KINDS = PLAIN_KINDS + TLS_KINDS


def announce(port: int) -> None:
    """Tell the runner where the server listens (the one line it waits for)."""
    print(f"listening on {HOST}:{port}", flush=True)


# -- trio_tcp -----------------------------------------------------------------------------


class ReturnEcho(trio_tcp.ConnectionService):
    """Echo by returning each chunk from ``on_bytes``."""

    async def on_bytes(self, data: bytes) -> bytes:
        return data


class CallerEcho(trio_tcp.ConnectionService):
    """Echo by writing each chunk through the caller."""

    async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> None:
        await caller.write_bytes(data)


class EchoServer(trio_tcp.Service):
    """Hands every connection a new echo service of the chosen form."""

    def __init__(self, service: type[trio_tcp.ConnectionService]) -> None:
        self._service = service

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return self._service()


async def run_trio_tcp(
    port: int, service: type[trio_tcp.ConnectionService], tls: trio_tcp.ListenerSecureSocket | None
) -> None:
    """Serve with a trio_tcp Listener until SIGINT/SIGTERM, then stop it at once."""
    listener = trio_tcp.Listener(port, local_host=HOST, secure_socket=tls)
    listener.attach(EchoServer(service))
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        assert listener.port is not None  # known while serving
        announce(listener.port)
        await wait_for_signal()
        await listener.immediate_stop()


# -- raw trio -----------------------------------------------------------------------------


async def raw_echo(stream: trio.abc.Stream) -> None:
    """The plain trio echo loop; a reset by the peer just ends the connection."""
    try:
        while data := await stream.receive_some(RECEIVE_SIZE):
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


def raw_tls_handler(context: ssl.SSLContext) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A handler that runs the TLS handshake in the connection's task, then echoes."""

    async def handler(stream: trio.SocketStream) -> None:
        await raw_echo(trio.SSLStream(stream, context, server_side=True))

    return handler


async def run_trio_raw(port: int, context: ssl.SSLContext | None) -> None:
    """Serve with :func:`trio.serve_tcp` until SIGINT/SIGTERM."""
    handler = raw_echo if context is None else raw_tls_handler(context)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, port, host=HOST))
        announce(listeners[0].socket.getsockname()[1])
        await wait_for_signal()
        nursery.cancel_scope.cancel()


async def wait_for_signal() -> None:
    """Return at the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


# -- asyncio ------------------------------------------------------------------------------


async def stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The asyncio streams echo loop."""
    try:
        while data := await reader.read(RECEIVE_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class EchoProtocol(asyncio.Protocol):
    """Writes back in ``data_received``; stops reading while the transport is full."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


async def run_asyncio(port: int, kind: str) -> None:
    """Serve with asyncio streams or a Protocol until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # trio listens with the system's maximum backlog; give asyncio the same chance.
    backlog = 4096
    if kind == "asyncio_streams":
        server = await asyncio.start_server(stream_echo, HOST, port, backlog=backlog)
    else:
        server = await loop.create_server(EchoProtocol, HOST, port, backlog=backlog)
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await stop.wait()


# -- entry point --------------------------------------------------------------------------


def raw_server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server context a plain trio program would build."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def tls_files(kind: str, cert: str | None, key: str | None) -> tuple[str, str]:
    """The certificate and key paths a TLS kind needs (exit with a message without them)."""
    if cert is None or key is None:
        sys.exit(f"{kind} needs --cert and --key")
    return cert, key


def serve(kind: str, port: int, cert: str | None, key: str | None) -> None:
    """Run the server ``kind`` on ``port`` until a signal stops it."""
    if kind == "trio_tcp":
        trio.run(run_trio_tcp, port, ReturnEcho, None)
    elif kind == "trio_tcp_caller":
        trio.run(run_trio_tcp, port, CallerEcho, None)
    elif kind == "trio_tcp_tls":
        cert_file, key_file = tls_files(kind, cert, key)
        key_pair = trio_tcp.CertKey(cert_file=cert_file, key_file=key_file)
        trio.run(run_trio_tcp, port, ReturnEcho, trio_tcp.ListenerSecureSocket(key=key_pair))
    elif kind == "trio_raw":
        trio.run(run_trio_raw, port, None)
    elif kind == "trio_raw_tls":
        trio.run(run_trio_raw, port, raw_server_context(*tls_files(kind, cert, key)))
    else:
        asyncio.run(run_asyncio(port, kind))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments: the kind, the port and the TLS files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, default=0, help="port, 0 for any (default: 0)")
    parser.add_argument("--cert", help="PEM certificate chain (TLS kinds)")
    parser.add_argument("--key", help="PEM private key (TLS kinds)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    serve(args.kind, args.port, args.cert, args.key)
