"""Echo servers: trio_tcp (in several forms and settings), raw Trio, anyio on Trio, asyncio.

Each is written the idiomatic fastest way for its stack and echoes every byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import ssl
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import trio
from _serving import HOST, RECEIVE_SIZE, announce, wait_for_signal

import trio_tcp

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

    def __init__(self, service: type[trio_tcp.ConnectionService] = ReturnEcho) -> None:
        self._service = service

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return self._service()


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


async def serve_raw(handler: Callable[[trio.SocketStream], Awaitable[None]], port: int) -> None:
    """Serve ``handler`` with :func:`trio.serve_tcp` until SIGINT/SIGTERM."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, port, host=HOST))
        announce(listeners[0].socket.getsockname()[1])
        await wait_for_signal()
        nursery.cancel_scope.cancel()


def raw_server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server context a plain trio program would build."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# -- anyio (run on the trio backend) ------------------------------------------------------


async def anyio_echo(stream: anyio.abc.SocketStream) -> None:
    """anyio's echo: iterate over the stream (it ends at EOF), send each chunk back."""
    async with stream:
        # A reset by the peer ends the connection; anything else would end the server.
        with contextlib.suppress(anyio.BrokenResourceError):
            async for data in stream:
                await stream.send(data)


async def serve_anyio(port: int) -> None:
    """Serve with :func:`anyio.create_tcp_listener` until SIGINT/SIGTERM."""
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=port)
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, anyio_echo)
        announce(listener.extra(anyio.abc.SocketAttribute.local_port))
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tasks.cancel_scope.cancel()


def run_anyio(port: int) -> None:
    """anyio on the trio backend, as a trio application using anyio would run."""
    anyio.run(serve_anyio, port, backend="trio")


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


async def serve_asyncio(port: int, protocol: bool) -> None:
    """Serve with asyncio streams or a Protocol until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # trio listens with the system's maximum backlog; give asyncio the same chance.
    backlog = 4096
    if protocol:
        server = await loop.create_server(EchoProtocol, HOST, port, backlog=backlog)
    else:
        server = await asyncio.start_server(stream_echo, HOST, port, backlog=backlog)
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await stop.wait()
