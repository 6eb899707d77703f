"""A raw trio loopback server for client tests, independent of ``trio_tcp.Listener``.

The test drives the server side of every accepted connection directly: it gets
the accepted :class:`trio.SocketStream` and decides what to send, when to read,
and how to close (FIN, or RST with ``SO_LINGER`` 0). Loopback and port 0 only.
"""

from __future__ import annotations

import math
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio

import trio_tcp

__all__ = [
    "LoopbackServer",
    "causes",
    "connected",
    "eventually",
    "ipv6_loopback_works",
    "loopback_server",
    "open_fds",
    "port_of",
    "read_until_eof",
    "receive_exactly",
    "reset",
]


class LoopbackServer:
    """A listening 127.0.0.1 port whose accepted streams the test takes with :meth:`accept`."""

    def __init__(self, port: int, accepted: trio.MemoryReceiveChannel[trio.SocketStream]) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self._accepted = accepted

    async def accept(self) -> trio.SocketStream:
        """The server side of the next accepted connection."""
        return await self._accepted.receive()


@asynccontextmanager
async def loopback_server() -> AsyncIterator[LoopbackServer]:
    """Serve on 127.0.0.1, port 0; every accepted stream is closed on exit."""
    send, receive = trio.open_memory_channel[trio.SocketStream](math.inf)

    async def handler(stream: trio.SocketStream) -> None:
        send.send_nowait(stream)
        # The test drives the stream; serve_tcp closes it when the server stops.
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield LoopbackServer(port, receive)
        nursery.cancel_scope.cancel()


async def reset(stream: trio.SocketStream) -> None:
    """Close ``stream`` with an RST instead of a FIN (``SO_LINGER`` on, zero seconds)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


def ipv6_loopback_works() -> bool:
    """Whether a socket can bind ``::1`` here (some containers have no IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def read_until_eof(stream: trio.abc.ReceiveStream) -> tuple[bytes, bool]:
    """Everything received until the peer closed, and whether it closed with a reset."""
    received = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(1 << 20)
        except trio.BrokenResourceError:
            return bytes(received), True
        if not chunk:
            return bytes(received), False
        received += chunk


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: causes, contexts and group members."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # Any exception group (builtin or the backport) has .exceptions.
        pending.extend(getattr(current, "exceptions", ()))
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def open_fds() -> int:
    """How many file descriptors this process has open (Linux)."""
    return len(os.listdir("/proc/self/fd"))


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """Exactly ``size`` bytes from ``stream``; fails the test if it ends first."""
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"stream ended after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


@asynccontextmanager
async def connected(**options: Any) -> AsyncIterator[tuple[trio_tcp.Client, trio.SocketStream]]:
    """A :class:`trio_tcp.Client` connected to a fresh loopback server, and the server's side."""
    async with loopback_server() as server:
        client = await trio_tcp.Client.connect(server.host, server.port, **options)
        async with client:
            yield client, await server.accept()


def port_of(listener: trio_tcp.Listener) -> int:
    """The port a serving listener is bound to."""
    port = listener.port
    assert port is not None, "the listener is not serving"
    return port


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait until ``condition()`` holds (the caller's ``fail_after`` bounds the wait)."""
    # Polling: listener stats and recorded callbacks have no event to wait on.
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.005)
