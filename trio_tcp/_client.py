"""``Client``: one outgoing connection that writes and reads bytes (or messages).

Theory of operation
-------------------
Writes go through the shared :class:`~trio_tcp._writer.Writer` (serialised,
all-or-abort; a write timeout closes the client). Reads are one task at a time
and share one :class:`~trio_tcp._buffer.ReceiveBuffer`, so ``read_exactly`` and
``read_until`` never lose bytes that arrived beyond what they return, and a
timed-out or cancelled read keeps everything received so far. The read timeout
is an inactivity timeout: it restarts with every chunk received. Cancelling a
read is safe (trio's receive side is cancellation-safe, TLS included), which is
why a read timeout leaves the client usable while a write timeout does not.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import ssl
import sys
from collections import deque
from typing import TYPE_CHECKING

import trio

from ._buffer import ReceiveBuffer
from ._config import (
    DEFAULT_MAX_LINE,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_WRITE_TIMEOUT,
    RECEIVE_SIZE,
    check_count,
    check_host,
    check_port,
    check_timeout,
)
from ._errors import (
    STREAM_ERRORS,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    Error,
    FramingError,
    ReadTimeoutError,
    UsageError,
    stream_error,
)
from ._framing import check_framing
from ._handshake import handshake
from ._info import ConnectionInfo
from ._streams import Bytes, Endpoints, close_stream, endpoints
from ._tcpstream import TCPStream, from_trio_socket, prepare_socket
from ._writer import Writer, check_bytes

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from ._framing import Decoder, Framing
    from ._tls import ClientSecureSocket

__all__ = ["Client"]


class Client(ConnectionInfo, trio.abc.AsyncResource):
    """A TCP (or TLS) connection to a server. Create one with :meth:`connect`.

    ::

        async with await trio_tcp.Client.connect("localhost", 3000) as client:
            await client.write_bytes(b"Hello")
            print(await client.read_bytes())

    Resource handling:
        ``Client`` is a :class:`trio.abc.AsyncResource`: ``aclose()`` (or its
        alias ``close()``) is idempotent, sends TLS close_notify on a secure
        connection, and is what ``async with`` calls on exit.

    Error handling:
        Every I/O failure is a :class:`~trio_tcp.Error`: the end of the stream,
        a reset, or use after close raise
        :class:`~trio_tcp.ConnectionClosedError`. Two tasks reading at once is
        a programming error and raises :class:`trio.BusyResourceError`.

    .. warning::
       A write that times out, fails or is cancelled closes the client: the
       peer may have received part of it, and no protocol can resume from an
       unknown point. Reads have no such problem.
    """

    __slots__ = (
        "_buffer",
        "_decoder",
        "_endpoints",
        "_eof",
        "_framing",
        "_framing_error",
        "_messages",
        "_reading",
        "_stream",
        "_timeout",
        "_waited",
        "_writer",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        timeout: float | None = DEFAULT_READ_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        framing: Framing | None = None,
    ) -> None:
        """Wrap a connected ``stream``. Most code wants :meth:`connect` instead.

        ``stream`` may be any trio stream: a :class:`trio.SocketStream`, a
        :class:`trio.SSLStream` whose handshake is done, a UNIX-domain
        socket stream, or an in-memory stream in a test. The client owns it
        from now on.
        """
        self._stream = stream
        self._writer = Writer(
            stream,
            _innermost(stream),
            timeout=check_timeout("write_timeout", write_timeout),
        )
        self._endpoints: Endpoints = endpoints(stream)
        self._timeout = check_timeout("timeout", timeout)
        self._buffer = ReceiveBuffer()
        self._reading = False
        self._waited = False
        self._eof = False
        self._framing = None if framing is None else check_framing(framing)
        self._decoder: Decoder | None = None if self._framing is None else self._framing.decoder()
        # Messages decoded from one chunk beyond the one a read_message returned.
        self._messages: deque[bytes] = deque()
        # Set once the peer broke the framing: message boundaries are lost for good.
        self._framing_error: FramingError | None = None

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        local_host: str | None = None,
        timeout: float | None = DEFAULT_READ_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        connect_timeout: float | None = None,
        secure_socket: ClientSecureSocket | ssl.SSLContext | None = None,
        framing: Framing | None = None,
    ) -> Self:
        """Connect to ``host``:``port`` and return the client once the connection is ready.

        Args:
            host: a host name or IP address.
            port: the server's port.
            local_host: bind the local end to this address first.
            timeout: read (inactivity) timeout in seconds; ``None`` for none.
            write_timeout: timeout of each write in seconds; ``None`` for none.
            connect_timeout: limit on the TCP connect and TLS handshake
                together (``None``: the OS's own connect timeout, and the
                ``handshake_timeout`` of ``secure_socket``).
            secure_socket: a :class:`ClientSecureSocket` or a ready
                :class:`ssl.SSLContext` to connect with TLS (a context gets
                the default 10 s handshake timeout; ``connect_timeout`` can
                shorten it).
            framing: a framer (see :mod:`trio_tcp.framing`) for
                :meth:`read_message` and :meth:`write_message`.

        Raises:
            ConfigurationError: a bad setting; raised before any socket is opened.
            TypeError: a setting of the wrong type, such as a ``framing``
                without ``encode`` and ``decoder`` methods; raised before any
                socket is opened.
            ConnectError: refused, unreachable, unknown host, unusable ``local_host``,
                or ``connect_timeout`` expired.
            TLSError: the TLS handshake failed (version, cipher, trust, hostname)
                or timed out.
        """
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__}")
        if not host:
            raise ConfigurationError("host must not be empty")
        check_port("port", port)
        if port == 0:
            raise ConfigurationError("port 0 cannot be connected to")
        check_host("local_host", local_host)
        check_timeout("timeout", timeout)
        check_timeout("write_timeout", write_timeout)
        limit = check_timeout("connect_timeout", connect_timeout, allow_zero=False)
        if framing is not None:
            check_framing(framing)  # a wrong object must fail before a socket is opened
        ssl_context, server_name, handshake_timeout = _tls_setup(secure_socket, host)

        with trio.move_on_after(math.inf if limit is None else limit) as scope:
            stream: trio.abc.Stream = await _open(host, port, local_host)
            try:
                if ssl_context is not None:
                    stream = await _handshake(stream, ssl_context, server_name, handshake_timeout)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if scope.cancelled_caught:
            raise ConnectError(f"connecting to {host}:{port} timed out after {limit:g} s")
        try:
            return cls(stream, timeout=timeout, write_timeout=write_timeout, framing=framing)
        except BaseException:
            # framing.decoder() is user code and may fail: never leak the socket.
            await trio.aclose_forcefully(stream)
            raise

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        secure = " tls" if self.is_secure else ""
        return f"<trio_tcp.Client to {self.remote_host}:{self.remote_port}{secure} {state}>"

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called or a failed write closed the client."""
        return self._writer.closed

    async def write_bytes(self, data: Bytes) -> None:
        """Send all of ``data``; concurrent calls are queued, never interleaved.

        Raises:
            WriteTimeoutError: not sent within ``write_timeout``; the client is now closed.
            ConnectionClosedError: the client is closed, or the connection broke.
            TLSError: the TLS layer failed.
            TypeError: ``data`` is not bytes-like.
        """
        await self._writer.write(data)

    async def read_bytes(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        """Return between 1 and ``max_bytes`` bytes, as soon as any are available.

        Raises:
            ConnectionClosedError: the peer closed the connection (end of
                stream), reset it, or this client is closed.
            ReadTimeoutError: nothing arrived within ``timeout``; the client
                stays usable.
            TLSError: the TLS layer failed, including a peer that closed
                without close_notify (a possibly truncated stream).
            trio.BusyResourceError: another task is reading.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ConfigurationError(f"max_bytes must be at least 1, got {max_bytes}")
        async with self._read_guard():
            if not self._buffer:
                await self._fill(max_bytes)
            return self._buffer.take(max_bytes)

    async def read_exactly(self, size: int) -> bytes:
        """Return exactly ``size`` bytes, waiting for as many reads as it takes.

        The read timeout applies to each wait for data, not to the whole call.
        If the stream ends first, :class:`ConnectionClosedError` is raised and
        the bytes received so far stay buffered for the next read.
        """
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, got {type(size).__name__}")
        if size < 0:
            raise ConfigurationError(f"size must not be negative, got {size}")
        async with self._read_guard():
            buffer = self._buffer
            while (chunk := buffer.take_exactly(size)) is None:
                await self._fill(size - len(buffer))
            return chunk

    async def read_until(self, delimiter: bytes, *, max_size: int = DEFAULT_MAX_LINE) -> bytes:
        """Return the bytes before the next ``delimiter``, consuming the delimiter too.

        Raises:
            FramingError: more than ``max_size`` bytes arrived without a delimiter
                (they stay buffered).
            ConnectionClosedError: the stream ended before a delimiter.
        """
        if not isinstance(delimiter, bytes):
            raise TypeError(f"delimiter must be bytes, got {type(delimiter).__name__}")
        if not delimiter:
            raise ConfigurationError("delimiter must not be empty")
        check_count("max_size", max_size)
        async with self._read_guard():
            buffer = self._buffer
            # The limit goes to the search too: a longer line already buffered
            # (it arrived with an earlier one) must fail like one read in pieces.
            while (message := buffer.take_until(delimiter, max_size)) is None:
                room = max_size + len(delimiter) - len(buffer)
                if room <= 0:
                    raise FramingError(f"no {delimiter!r} within max_size={max_size} bytes")
                await self._fill(room)
            return message

    async def read_message(self) -> bytes:
        """Return the next whole message, decoded by the client's ``framing``.

        The read timeout is an inactivity timeout here too: it restarts with
        every chunk received, so a big message arriving slowly but steadily
        does not time out. After :class:`ReadTimeoutError` the bytes of the
        unfinished message are kept; call again to go on waiting for it.

        Raises:
            UsageError: the client was connected without ``framing``.
            FramingError: the peer sent a message breaking the framing rules
                (too big, say). Message boundaries are lost for good, so every
                later call raises it again; writing still works, but the client
                should be closed.
            ConnectionClosedError: the stream ended, the connection was reset,
                or the client is closed. At the end of the stream the message
                says whether the peer stopped in the middle of a message, as
                :meth:`read_exactly` does.
            ReadTimeoutError: nothing arrived within ``timeout``; the client
                stays usable.
        """
        decoder = self._decoder
        if decoder is None:
            raise UsageError("read_message needs a client connected with framing=...")
        async with self._read_guard():
            if self._framing_error is not None:
                raise FramingError(
                    f"the peer broke the framing earlier ({self._framing_error});"
                    " no more messages can be read"
                ) from self._framing_error
            messages, buffer = self._messages, self._buffer
            while not messages:
                if not buffer:
                    await self._fill_for_message(decoder)
                try:
                    messages.extend(decoder.feed(buffer.take(len(buffer))))
                except FramingError as exc:
                    self._framing_error = exc
                    raise
            return messages.popleft()

    async def write_message(self, message: Bytes) -> None:
        """Frame ``message`` with the client's ``framing`` and send it.

        Raises:
            UsageError: the client was connected without ``framing``.
            FramingError: the message breaks the framing rules (too big, or it
                contains the delimiter). Nothing was sent; the client stays usable.
            WriteTimeoutError, ConnectionClosedError, TLSError: as for
                :meth:`write_bytes`.
            TypeError: ``message`` is not bytes-like.
        """
        check_bytes(message)
        if self._framing is None:
            raise UsageError("write_message needs a client connected with framing=...")
        payload = message if type(message) is bytes else bytes(message)
        await self._writer.write(self._framing.encode(payload))

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> bytes:
        """The next chunk; the iteration ends when the peer closes the connection cleanly."""
        try:
            return await self.read_bytes()
        except ConnectionClosedError:
            if self._eof and not self._buffer:
                raise StopAsyncIteration from None
            raise

    async def aclose(self) -> None:
        """Close the connection (TLS: send close_notify first); idempotent."""
        writer = self._writer
        if writer.closed:
            await trio.lowlevel.checkpoint()
            return
        writer.closed = True
        await close_stream(self._stream)

    async def close(self) -> None:
        """Same as :meth:`aclose` (Ballerina's name)."""
        await self.aclose()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- reading internals -------------------------------------------------------

    def _read_guard(self) -> _ReadGuard:
        if self._reading:
            raise trio.BusyResourceError("another task is already reading from this Client")
        return _ReadGuard(self)

    async def _fill_for_message(self, decoder: Decoder) -> None:
        """:meth:`_fill` for :meth:`read_message`: an end of stream says if it cut a message."""
        try:
            await self._fill(RECEIVE_SIZE)  # the inactivity timeout applies per chunk
        except ConnectionClosedError as exc:
            pending = decoder.pending() if self._eof else 0
            if pending:
                raise ConnectionClosedError(
                    "connection closed by the peer in the middle of a message"
                    f" ({pending} bytes of it received)"
                ) from exc
            raise

    async def _fill(self, max_bytes: int) -> None:
        """Receive one chunk into the buffer, or raise why none is coming."""
        self._waited = True  # every path below is a checkpoint
        if self._writer.closed:
            await trio.lowlevel.checkpoint()
            raise ConnectionClosedError("connection already closed (closed locally)")
        if self._eof:
            await trio.lowlevel.checkpoint()
            raise ConnectionClosedError("connection closed by the peer")
        max_bytes = min(max(max_bytes, 1), RECEIVE_SIZE)
        timeout = self._timeout
        try:
            if timeout is None:
                data = await self._stream.receive_some(max_bytes)
            else:
                with trio.move_on_after(timeout) as scope:
                    data = await self._stream.receive_some(max_bytes)
                if scope.cancelled_caught:
                    raise ReadTimeoutError(f"no data received for {timeout:g} s")
        except STREAM_ERRORS as exc:
            if isinstance(exc, Error):
                raise
            if self._writer.closed:
                raise ConnectionClosedError("connection already closed (closed locally)") from exc
            raise stream_error(exc) from exc
        if not data:
            self._eof = True
            raise ConnectionClosedError("connection closed by the peer")
        self._buffer.feed(data)


class _ReadGuard:
    """One read at a time, and every read a checkpoint, as trio promises.

    Marks the client as being read, so a second concurrent reader fails fast.
    A read answered from the buffer never waits, so it still checks for
    cancellation on the way in and yields on the way out, like trio's own
    operations.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    async def __aenter__(self) -> None:
        client = self._client
        if client._writer.closed:
            # Checked before the buffer: bytes received earlier must not make a
            # read on a closed client look successful.
            await trio.lowlevel.checkpoint()
            raise ConnectionClosedError("connection already closed (closed locally)")
        await trio.lowlevel.checkpoint_if_cancelled()
        client._reading = True
        client._waited = False

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        client = self._client
        client._reading = False
        if exc_type is None and not client._waited:
            await trio.lowlevel.cancel_shielded_checkpoint()


# -- connecting --------------------------------------------------------------------


async def _open(host: str, port: int, local_host: str | None) -> TCPStream:
    """Open the TCP connection, mapping every failure to :class:`ConnectError`."""
    try:
        # trio does the resolving and Happy Eyeballs; the lean stream takes over after.
        opened = await trio.open_tcp_stream(host, port, local_address=local_host)
    except OSError as exc:
        raise _connect_error(exc, host, port, local_host) from exc
    sock = from_trio_socket(opened.socket)
    prepare_socket(sock)
    return TCPStream(sock)


def _connect_error(exc: OSError, host: str, port: int, local_host: str | None) -> ConnectError:
    # With several addresses to try, trio raises OSError(errno=None) whose
    # cause is a group of the per-address errors: report the first real one.
    reason = exc
    group = exc.__cause__
    if exc.errno is None and isinstance(group, BaseExceptionGroup):
        nested = [e for e in group.exceptions if isinstance(e, OSError)]
        if nested:
            reason = nested[0]
    # trio puts the address into strerror; the errno's own text reads better
    # after our "cannot connect to host:port".
    why = os.strerror(reason.errno) if reason.errno else (reason.strerror or str(reason))
    if local_host is not None and (
        reason.errno in (errno.EADDRNOTAVAIL, errno.EINVAL) or "local_address" in str(reason)
    ):
        return ConnectError(f"cannot use local_host={local_host!r}: {why}")
    if isinstance(reason, socket.gaierror):
        return ConnectError(f"cannot resolve {host!r}: {reason.strerror}")
    return ConnectError(f"cannot connect to {host}:{port}: {why}")


def _tls_setup(
    secure_socket: ClientSecureSocket | ssl.SSLContext | None, host: str
) -> tuple[ssl.SSLContext | None, str, float | None]:
    """Build the TLS context (before any socket exists), the name to verify, the handshake limit."""
    if secure_socket is None:
        return None, host, None
    # TLS configuration (and cryptography, for key files) is loaded only when used.
    from ._tls import DEFAULT_HANDSHAKE_TIMEOUT, ClientSecureSocket, build_client_context

    if isinstance(secure_socket, ssl.SSLContext):
        # A ready context has nowhere to say how long a handshake may take:
        # it gets the default, so a silent server cannot hang the connect.
        return secure_socket, host, DEFAULT_HANDSHAKE_TIMEOUT
    if not isinstance(secure_socket, ClientSecureSocket):
        raise TypeError(
            "secure_socket must be a ClientSecureSocket, an ssl.SSLContext or None,"
            f" got {type(secure_socket).__name__}"
        )
    if not secure_socket.enable:
        return None, host, None

    return (
        build_client_context(secure_socket),
        secure_socket.server_name or host,
        secure_socket.handshake_timeout,
    )


async def _handshake(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_name: str,
    timeout: float | None,
) -> trio.SSLStream[trio.abc.Stream]:
    """Run the client handshake within ``timeout``; every failure is a :class:`TLSError`."""
    ssl_stream = trio.SSLStream(stream, context, server_hostname=server_name)
    await handshake(ssl_stream, timeout)
    return ssl_stream


def _innermost(stream: trio.abc.Stream) -> trio.abc.Stream:
    """The transport under any TLS layers: what an aborted write closes."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream
