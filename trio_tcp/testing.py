"""Test a service without sockets: the real connection driver over in-memory connections.

::

    import trio_tcp.testing

    async def test_echo() -> None:
        async with trio_tcp.testing.open_service_client(EchoServer()) as client:
            await client.write_bytes(b"hello")
            assert await client.read_bytes() == b"hello"

The service runs exactly as behind a :class:`~trio_tcp.Listener` — the same
driver, ``on_connect`` / ``on_bytes`` / ``on_error`` / ``on_close``, framing,
idle and write timeouts, PROXY headers, stops, stats and logging — but its
connections are in memory: no socket is opened, and nothing depends on real
time, so a test of an hour-long ``idle_timeout`` runs in milliseconds under
pytest-trio's ``autojump_clock``. Each direction of a connection holds a
bounded number of bytes, like a socket's buffers, so backpressure and slow
readers can be tested too.

:func:`open_service_client` is the one-client form; :func:`open_memory_server`
serves one service instance to as many clients as a test needs (a chat room)
and gives access to the server-side :class:`~trio_tcp.Caller` of each, the
listener and its stats.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
import trio.testing

from ._caller import Caller
from ._client import Client, _handshake
from ._config import DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT
from ._errors import UsageError
from ._listener import Listener
from ._memory import DEFAULT_BUFFER_SIZE, MemoryListener, MemoryStream
from ._service import Service
from ._stats import ListenerStats
from ._streams import Endpoints

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._framing import Framing
    from ._options import ListenerOptions

__all__ = ["MemoryServer", "MemoryStream", "open_memory_server", "open_service_client"]

#: The address the in-memory server answers on, as its callers and clients see it.
SERVER_HOST = "127.0.0.1"
SERVER_PORT = 3000
# Client ports are handed out from here, one per connection, like ephemeral ports.
_FIRST_CLIENT_PORT = 50000


class MemoryServer:
    """A service served in memory; made by :func:`open_memory_server`.

    Attributes:
        listener: the :class:`~trio_tcp.Listener` serving the service (to stop
            it, read its stats, attach another service).
    """

    def __init__(self, listener: Listener, memory: MemoryListener) -> None:
        self.listener = listener
        self._memory = memory
        self._ports = itertools.count(_FIRST_CLIENT_PORT)

    @property
    def stats(self) -> ListenerStats:
        """The listener's counters."""
        return self.listener.stats

    async def open_stream(
        self, *, remote_host: str = "127.0.0.1", remote_port: int | None = None
    ) -> MemoryStream:
        """Connect and return the client's raw end, for tests that speak bytes themselves.

        The stream is a :class:`trio.abc.HalfCloseableStream` with one more
        method, :meth:`MemoryStream.reset`, which aborts the connection as a
        TCP reset does.

        Args:
            remote_host: the client's address, as the service sees it
                (``caller.remote_host``).
            remote_port: the client's port; by default each connection gets
                its own.
        """
        port = next(self._ports) if remote_port is None else remote_port
        return await self._memory.connect(Endpoints(SERVER_HOST, SERVER_PORT, remote_host, port))

    async def connect(
        self,
        *,
        framing: Framing | None = None,
        remote_host: str = "127.0.0.1",
        remote_port: int | None = None,
        timeout: float | None = DEFAULT_READ_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Client:
        """Connect a :class:`~trio_tcp.Client`, as ``Client.connect`` does over TCP.

        Args:
            framing, timeout, write_timeout: as for ``Client.connect``.
            remote_host, remote_port: as for :meth:`open_stream`.
            ssl_context: a client-side context to speak TLS with the service
                (whose listener then needs ``secure_socket``); the handshake
                is done before this returns.
            server_hostname: the name to verify (SNI); default ``remote_host``
                of the server, ``"127.0.0.1"``.

        Raises:
            ConnectError: the server is stopped.
            TLSError: the TLS handshake failed.
        """
        stream: trio.abc.Stream = await self.open_stream(
            remote_host=remote_host, remote_port=remote_port
        )
        if ssl_context is not None:
            try:
                stream = await _handshake(
                    stream, ssl_context, server_hostname or SERVER_HOST, timeout
                )
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        return Client(stream, timeout=timeout, write_timeout=write_timeout, framing=framing)

    async def caller(self, client: Client | MemoryStream) -> Caller:
        """The server-side :class:`~trio_tcp.Caller` of a connection made by this server.

        ::

            client = await server.connect()
            caller = await server.caller(client)

        It first lets the server get as far as it can
        (:func:`trio.testing.wait_all_tasks_blocked`): a connection just
        made has not been accepted yet.

        Raises:
            LookupError: the connection has not reached ``on_connect`` (its
                PROXY header or TLS handshake is still awaited), or is over.
        """
        await trio.testing.wait_all_tasks_blocked()
        # Matched by the connection itself, not by address: a PROXY header
        # gives the caller another one, and a test may give two clients the same.
        end = client._writer.raw if isinstance(client, Client) else client
        for caller in self.callers:
            server_end = caller._writer.raw
            if isinstance(server_end, MemoryStream) and server_end._is_peer_of(end):
                return caller
        ends = client._endpoints if isinstance(client, Client) else client.endpoints
        raise LookupError(
            f"no caller for {ends.local_host}:{ends.local_port} (before on_connect, or closed)"
        )

    @property
    def callers(self) -> list[Caller]:
        """The callers of the connections being served, in the order they connected."""
        run = self.listener._run
        if run is None:
            return []
        callers = [c._caller for c in run.connections if c._caller is not None]
        return sorted(callers, key=lambda caller: int(caller.id, 16))


@asynccontextmanager
async def open_memory_server(
    service: Service,
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    **listener_options: Unpack[ListenerOptions],
) -> AsyncIterator[MemoryServer]:
    """Serve ``service`` in memory for the duration of the block.

    ::

        async with trio_tcp.testing.open_memory_server(ChatServer()) as server:
            async with await server.connect() as alice, await server.connect() as bob:
                await alice.write_bytes(b"hi\\n")
                assert await bob.read_bytes() == b"hi\\n"

    Args:
        service: the service, as ``listener.attach`` takes it.
        buffer_size: bytes each direction of a connection holds before a
            writer waits (default 64 KiB, about a loopback socket's).
        listener_options: :class:`~trio_tcp.Listener`'s keywords that make
            sense in memory: ``idle_timeout``, ``write_timeout``,
            ``max_connections``, ``proxy_protocol``, ``trusted_proxies``,
            ``secure_socket``, the outbox settings.

    On exit the listener stops gracefully (so every ``on_close`` has run)
    and the block's own failures propagate.
    """
    for name in ("local_host", "backlog", "reuse_port"):
        if name in listener_options:
            raise UsageError(f"{name} has no meaning for an in-memory server")
    listener = Listener(0, **listener_options)
    memory = MemoryListener(buffer_size=buffer_size)
    server = MemoryServer(listener, memory)
    listener.attach(service)
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve_listeners, [memory])
        try:
            yield server
        except BaseException as exc:
            # Raised again below, once the nursery is closed: a failed assert
            # reaches pytest as itself, not wrapped in an exception group.
            failure = exc
        finally:
            with trio.CancelScope(shield=True):
                await listener.graceful_stop(timeout=_STOP_GRACE)
    if failure is not None:
        raise failure


# How long the closing stop of an in-memory server may take before what is left
# is cancelled (simulated time under a mock clock).
_STOP_GRACE = 10.0


@asynccontextmanager
async def open_service_client(
    service: Service,
    *,
    framing: Framing | None = None,
    remote_host: str = "127.0.0.1",
    remote_port: int | None = None,
    timeout: float | None = DEFAULT_READ_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    **listener_options: Unpack[ListenerOptions],
) -> AsyncIterator[Client]:
    """A :class:`~trio_tcp.Client` connected to ``service``, served in memory.

    ::

        async def test_upper(autojump_clock) -> None:
            async with open_service_client(Upper(), framing=Delimited(b"\\n")) as client:
                await client.write_message(b"hi")
                assert await client.read_message() == b"HI"

    Args:
        service: the service under test.
        framing: the client's framing, for ``read_message``/``write_message``.
        remote_host: the client's address, as the service sees it.
        remote_port: the client's port (default: one of its own).
        timeout: the client's read timeout, as for ``Client.connect``
            (``None`` for a test that waits longer than its 300 s in
            simulated time).
        ssl_context: a client-side context, for a service served with
            ``secure_socket`` (see :meth:`MemoryServer.connect`).
        listener_options: as for :func:`open_memory_server`.

    On exit the client closes, and the block waits for the service's
    ``on_close``.

    Raises:
        UsageError: ``secure_socket`` without an ``ssl_context`` (the
            client would speak plaintext to a TLS service).
    """
    if listener_options.get("secure_socket") is not None and ssl_context is None:
        raise UsageError("the service is served with secure_socket: pass an ssl_context too")
    async with open_memory_server(service, **listener_options) as server:
        client = await server.connect(
            framing=framing,
            remote_host=remote_host,
            remote_port=remote_port,
            timeout=timeout,
            ssl_context=ssl_context,
        )
        async with client:
            yield client
        # Leaving the server's block stops it, which waits for on_close.


# Shown as trio_tcp.testing.MemoryStream in reprs and tracebacks, where users import it.
MemoryStream.__module__ = __name__
