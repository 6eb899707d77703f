"""The per-connection driver: header -> handshake -> on_connect -> read loop -> close -> on_close.

Theory of operation
-------------------
One task per connection runs :meth:`Connection.run`, and it never raises
anything but cancellation: every failure, the library's or the service's, is
contained here, so one connection can never disturb the listener (trio's own
``serve_listeners`` lets a handler exception crash the whole server; this
driver departs from it on purpose).

**Opening.** With a PROXY header or TLS to go through, the connection first
waits for the peer's first bytes, then reads the header (off the transport,
before TLS), then runs the handshake, each within its timeout. Bytes read
ahead with the header are handed out first by a
:class:`~trio_tcp._streams.TransportView`: nothing read is ever dropped.

**Serving.** The read loop is the only reader. ``on_bytes`` is awaited inline,
so the next read starts only when it returns: a slow service slows its own
client through TCP backpressure instead of growing a buffer. The replies to
every message of one received chunk are queued and sent together when the
chunk is handled (see ``_writer``).

**Waking.** The read loop runs inside one cancel scope, cancelled only while
the loop *waits for input*: to stop, to close (``caller.close()``, a failed
write), or because the connection was idle. A request to stop or close while
``on_bytes`` runs only sets a flag, checked when it returns, so a running
callback is never interrupted. The idle timeout costs nothing per read: the
listener sweeps its connections a few times per timeout and wakes those whose
byte counts have not moved.

**A graceful stop loses nothing that reached the server.** A connection that
has received no byte at all waits at most a short first-byte grace for one (a
client sends right after its connect returns). One that has received bytes
goes on through its header, handshake and ``on_connect``. Once serving, the
input that had arrived when the stop reached it (counted without reading:
the kernel's queue, bytes read ahead, TLS buffers) is handed to ``on_bytes``
and answered, a message already begun is completed, ``on_stop`` may say
goodbye, and then the connection closes.

**Closing.** Every orderly end (the peer's EOF, a stop, ``caller.close()``,
``on_connect`` returning ``None``, the idle timeout, a service error) is a
*lingering close*, in this task, before ``on_close``: send what is queued,
TLS close_notify, FIN, then read and discard the peer's input until its EOF
(bounded), then close. Closing a socket with unread input makes the kernel
send RST, which destroys replies the peer has not read yet. A broken
connection, or one cancelled by a stop's deadline, is closed at once.

Whatever happens, one ``finally`` closes the socket, lets the outbox task go,
and runs ``on_close`` exactly once, shielded from the stop and bounded by its
own short deadline.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import wait_readable

from ._caller import Caller
from ._config import (
    CLOSE_TIMEOUT,
    COALESCE_LIMIT,
    DRAIN_WAIT,
    FIRST_BYTE_GRACE,
    ON_CLOSE_TIMEOUT,
    PROXY_HEADER_TIMEOUT,
    RECEIVE_SIZE,
)
from ._errors import (
    STREAM_ERRORS,
    ConnectionClosedError,
    Error,
    FramingError,
    TLSError,
    stream_error,
)
from ._framing import Decoder, Delimited, Framing
from ._handshake import handshake
from ._log import RateLimited, log
from ._proxy import ProxyInfo
from ._proxy_stream import HeaderProblem, receive_proxy_header
from ._service import Callbacks, ConnectionService, call
from ._streams import (
    Endpoints,
    TransportView,
    close_now,
    endpoints,
    linger,
    peer_name,
    pending_input,
    send_eof,
)
from ._writer import Writer, check_bytes

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    import ssl

    from ._options import ListenerConfig
    from ._service import Service
    from ._stats import Counters

__all__ = ["Connection", "Serving"]

# What a connection is doing, as far as a graceful stop is concerned.
_STARTING, _FIRST_BYTE, _OPENING, _CONNECTING, _SERVING, _CLOSING = range(6)


class Serving:
    """What one ``serve`` run of a listener shares with every connection it starts."""

    __slots__ = (
        "config",
        "counters",
        "handshake_failures",
        "header_failures",
        "refusals",
        "spawn",
        "ssl_context",
        "stopping",
    )

    def __init__(
        self,
        config: ListenerConfig,
        counters: Counters,
        ssl_context: ssl.SSLContext | None,
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.config = config
        self.counters = counters
        self.ssl_context = ssl_context
        #: Starts a task next to the connections (an outbox's writer task).
        self.spawn = spawn
        #: A graceful stop has begun: connections accepted now are served as stopping.
        self.stopping = False
        # A flood of bad peers must not flood the log.
        self.refusals = RateLimited(
            logging.WARNING,
            "refused a connection from %s: not in trusted_proxies, so its PROXY header"
            " cannot be trusted",
        )
        self.header_failures = RateLimited(
            logging.INFO, "PROXY header from %s %s; connection dropped"
        )
        self.handshake_failures = RateLimited(
            logging.INFO, "TLS handshake from %s failed; connection dropped: %s"
        )


def _user_error(callback: str, exc: Exception, caller: Caller | None) -> Error:
    """Log a service callback's exception with its traceback; return it as an :class:`Error`."""
    log.error("%s raised %s on %r", callback, type(exc).__name__, caller, exc_info=exc)
    if isinstance(exc, Error):
        return exc
    error = Error(f"{callback} raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Connection:
    """Drives one accepted stream through the service's lifecycle; see the module docstring.

    Args:
        stream: the accepted stream; the connection owns it from now on.
        service: the service attached when it was accepted.
        serving: what the listener's run shares.
        on_done: called (synchronously) when the connection is over, whatever the reason.
    """

    __slots__ = (
        "_bytes_async",
        "_caller",
        "_closing",
        "_decode",
        "_decoder",
        "_delimiter",
        "_encode",
        "_eof",
        "_handler",
        "_idle",
        "_max_size",
        "_on_bytes",
        "_phase",
        "_raw_closed",
        "_scope",
        "_seen",
        "_since",
        "_stopping",
        "_waiting",
        "_writer",
        "on_done",
        "service",
        "serving",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        service: Service,
        serving: Serving,
        on_done: Callable[[Connection], None] | None = None,
    ) -> None:
        self.stream = stream
        self.service = service
        self.serving = serving
        self.on_done = on_done
        self._scope: trio.CancelScope | None = None
        self._phase = _STARTING
        self._waiting = False  # the read loop is blocked waiting for input
        self._stopping = serving.stopping
        self._closing = False
        self._idle = False
        self._eof = False
        self._raw_closed = False
        self._writer: Writer | None = None
        self._caller: Caller | None = None
        self._handler: object | None = None  # the connection service, once on_connect made one
        # The service's per-chunk callback and framing, resolved once (see _resolve).
        self._on_bytes: Callable[[bytes], Any] | None = None
        self._bytes_async = False
        self._decoder: Decoder | None = None
        self._decode: Callable[[bytes], Iterable[bytes]] | None = None
        self._encode: Callable[[bytes], bytes] | None = None
        self._delimiter: bytes | None = None  # a Delimited framing's, encoded inline
        self._max_size = 0
        # Idle tracking, for the listener's sweep: last byte count seen, and since when.
        self._seen = -1
        self._since = 0.0

    # -- what the listener and the caller ask of a running connection ---------------------

    def stop(self) -> None:
        """A graceful stop reached this connection: finish what has arrived, then close."""
        if self._stopping:
            return
        self._stopping = True
        scope = self._scope
        if scope is None:
            return  # not waiting on the peer: the flag is seen at the next step
        if self._phase == _FIRST_BYTE or (
            self._phase == _SERVING and self._waiting and not self._received_any()
        ):
            # Nothing received yet: a short grace for the first byte, not a wait without end.
            scope.deadline = min(scope.deadline, trio.current_time() + FIRST_BYTE_GRACE)
        elif self._phase == _SERVING and self._waiting:
            scope.cancel()

    def close_requested(self) -> None:
        """``caller.close()``, or a failed write: end the read loop once ``on_bytes`` returns."""
        self._closing = True
        if self._waiting and self._scope is not None:
            self._scope.cancel()

    def check_idle(self, now: float, idle: float) -> None:
        """Close the connection if its byte counts have not moved for ``idle`` seconds."""
        caller = self._caller
        writer = self._writer
        if caller is None or writer is None or self._phase != _SERVING:
            return
        activity = caller.bytes_received + writer.bytes_sent
        if activity != self._seen:
            self._seen, self._since = activity, now
        elif self._waiting and not self._idle and now - self._since >= idle:
            self._idle = True
            if self._scope is not None:
                self._scope.cancel()

    def _received_any(self) -> bool:
        return self._caller is not None and self._caller.bytes_received > 0

    # -- the lifecycle ------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection to its end; the fault barrier: only cancellation escapes."""
        try:
            # Three steps, so that an idle connection keeps only the read
            # loop's frame alive, not the opening's.
            if await self._open():
                error = await self._serve()
                await self._finish(error)
        except Exception:
            log.exception("internal error while serving a connection")
        except BaseExceptionGroup as group:
            # Cancellation mixed with failures (a service's own nursery, say):
            # log the failures, let the cancellation through.
            failures, rest = group.split(Exception)
            if failures is not None:
                log.error("connection task failed", exc_info=failures)
            if rest is not None:
                raise rest from None
        finally:
            # One exit for every path, cancellation included: the socket never
            # outlives this task, and on_close runs exactly once if it is due.
            # Each step runs even if the one before failed.
            writer = self._writer
            try:
                if writer is not None:
                    writer.fail_now(None)  # nothing more goes out; wakes the outbox task
                if not self._raw_closed:
                    self._before_close()
                    await close_now(self.stream)
                if writer is not None and writer.has_outbox:
                    with trio.CancelScope(shield=True) as scope:
                        scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                        await writer.stop_outbox()
            finally:
                try:
                    if self._caller is not None:
                        self._caller._leave_groups()
                    if self._handler is not None:
                        await self._close_service(self._handler)
                finally:
                    if self.on_done is not None:
                        self.on_done(self)

    async def _open(self) -> bool:
        """Header, handshake, ``on_connect``: whether there is a connection service to serve."""
        serving = self.serving
        config = serving.config
        counters = serving.counters
        raw: trio.abc.Stream = self.stream
        tls_context = serving.ssl_context
        https_compatible = False
        if isinstance(raw, trio.SSLStream):
            # Straight from a trio.SSLListener, not used yet: its TLS runs here
            # instead, over a view, so the PROXY header comes first and the
            # close can linger. (No double TLS with secure_socket set.)
            tls_context = raw.context
            https_compatible = bool(getattr(raw, "_https_compatible", False))
            raw = self.stream = raw.transport_stream
        ends = endpoints(raw)

        read_header = config.proxy_protocol
        if (
            read_header
            and config.trusted_proxies is not None
            and ends.remote_host not in config.trusted_proxies
        ):
            if config.untrusted_proxy == "refuse":
                serving.refusals.note(peer_name(ends))
                counters.refused += 1
                return False
            read_header = False  # served as a direct connection, with its real address

        stream: trio.abc.Stream = raw
        proxy: ProxyInfo | None = None
        first = b""
        if read_header or tls_context is not None:
            limit = PROXY_HEADER_TIMEOUT if tls_context is None else config.handshake_timeout
            deadline = math.inf if limit is None else trio.current_time() + limit
            what = "PROXY header" if read_header else "TLS handshake"
            got = await self._first_byte(raw, deadline, limit, ends, what)
            if got is None:
                return False
            first = got
            if read_header:
                opened = await self._read_header(raw, first, deadline, ends)
                if opened is None:
                    return False
                header, first = opened
                proxy = ProxyInfo(
                    version=header.version,
                    command=header.command,
                    source=header.source,
                    destination=header.destination,
                    proxy_host=ends.remote_host,
                    proxy_port=ends.remote_port,
                )
                if header.source is not None and header.destination is not None:
                    ends = Endpoints(*header.source, *header.destination)
            if tls_context is not None:
                if read_header and not first:
                    # Only the header so far (a load balancer connects before its
                    # client speaks): the ClientHello is the first payload byte, so
                    # a stop gives it the first-byte grace, not the handshake timeout.
                    got = await self._first_byte(raw, deadline, limit, ends, "TLS handshake")
                    if got is None:
                        return False
                    first = got
                stream = trio.SSLStream(
                    TransportView(raw, first),
                    tls_context,
                    server_side=True,
                    https_compatible=https_compatible,
                )
                first = b""
                if not await self._handshake(stream, deadline, ends):
                    return False
        if first:
            stream = TransportView(raw, first)

        writer = self._writer = Writer(stream, raw, timeout=config.write_timeout, counters=counters)
        writer.outbox_limit = config.outbox_limit
        writer.outbox_overflow = config.outbox_overflow
        writer.spawn = serving.spawn
        writer.on_abort = self.close_requested
        caller = self._caller = Caller(writer, ends, self.close_requested, proxy)
        self._phase = _CONNECTING
        try:
            connection_service = await call(self.service.on_connect, caller)
        except Exception as exc:
            _user_error("on_connect", exc, caller)
            counters.errors += 1
            await self._close_orderly(stream, raw)
            return False
        if connection_service is None:
            await self._close_orderly(stream, raw)
            self._count_if_aborted(error=False)
            return False
        self._handler = connection_service
        return True

    async def _finish(self, error: Error | None) -> None:
        """Report how the connection ended, and close it in an orderly way if it can be."""
        writer, caller = self._writer, self._caller
        assert writer is not None
        assert caller is not None
        if error is None and writer.failure is not None:
            # A write (from any task) broke the connection.
            error = _as_error(writer.failure)
        if error is not None:
            if self._count_if_aborted(error=True):
                log.debug("connection %s ended before any payload: %s", caller.id, error)
            await self._report(self._handler, caller, error)
        else:
            self._count_if_aborted(error=False)
        if not writer.aborted:
            await self._close_orderly(writer.stream, self.stream)

    def _count_if_aborted(self, *, error: bool) -> bool:
        """Count the connection's end: aborted (no payload either way), or an error."""
        caller, writer = self._caller, self._writer
        counters = self.serving.counters
        exchanged = (
            caller is not None
            and writer is not None
            and (caller.bytes_received > 0 or writer.bytes_sent > 0)
        )
        if not exchanged:
            counters.aborted += 1
            return True
        if error:
            counters.errors += 1
        return False

    # -- opening ------------------------------------------------------------------------

    async def _first_byte(
        self,
        raw: trio.abc.Stream,
        deadline: float,
        limit: float | None,
        ends: Endpoints,
        what: str,
    ) -> bytes | None:
        """Wait until the peer has sent something; return bytes read meanwhile (maybe ``b""``).

        Returns ``None`` if the connection must be dropped (the peer left
        without a byte, the timeout passed, or a stop's first-byte grace did).
        """
        counters = self.serving.counters
        sock = getattr(raw, "socket", None)
        data = b""
        with trio.CancelScope(deadline=deadline) as scope:
            self._scope, self._phase = scope, _FIRST_BYTE
            if self._stopping:
                scope.deadline = min(deadline, trio.current_time() + FIRST_BYTE_GRACE)
            try:
                if sock is not None and hasattr(sock, "fileno"):
                    await wait_readable(sock)  # without reading: TLS reads the bytes itself
                    if not pending_input(raw):
                        data = b""
                        silent = True
                    else:
                        silent = False
                else:
                    data = bytes(await raw.receive_some(RECEIVE_SIZE))
                    silent = not data
            except STREAM_ERRORS:
                silent = True
            finally:
                self._scope, self._phase = None, _OPENING
        if scope.cancelled_caught:
            if self._stopping:
                log.debug(
                    "connection from %s closed by a stop before its first byte", peer_name(ends)
                )
                counters.aborted += 1
            else:
                self._opening_failed(what, ends, f"timed out after {limit:g} s")
            return None
        if silent:
            # Gone before saying anything: a port scan, a TCP health check.
            log.debug("connection from %s closed before its first byte", peer_name(ends))
            counters.aborted += 1
            return None
        return data

    def _opening_failed(self, what: str, ends: Endpoints, why: str) -> None:
        serving = self.serving
        serving.counters.errors += 1
        if what == "PROXY header":
            serving.header_failures.note(peer_name(ends), why)
        else:
            serving.handshake_failures.note(peer_name(ends), why)

    async def _read_header(
        self, raw: trio.abc.Stream, first: bytes, deadline: float, ends: Endpoints
    ) -> tuple[Any, bytes] | None:
        """Read the PROXY header; ``None`` (logged and counted) if there is no valid one."""
        remaining = None if deadline == math.inf else max(0.0, deadline - trio.current_time())
        try:
            return await receive_proxy_header(raw, first, remaining)
        except HeaderProblem as problem:
            if problem.silent:
                log.debug("connection from %s closed before its PROXY header", peer_name(ends))
                self.serving.counters.aborted += 1
            else:
                self._opening_failed("PROXY header", ends, str(problem))
            return None

    async def _handshake(
        self, stream: trio.SSLStream[Any], deadline: float, ends: Endpoints
    ) -> bool:
        """Run the TLS handshake in this task; say whether the connection may go on.

        A failure is the peer's doing (garbage, a plain client, a rejected
        certificate), so it is a rate-limited INFO line, no traceback; the
        alert OpenSSL wrote is sent so the peer learns why.
        """
        remaining = None if deadline == math.inf else max(0.0, deadline - trio.current_time())
        try:
            await handshake(stream, remaining)
        except TLSError as exc:
            self.serving.counters.errors += 1
            self.serving.handshake_failures.note(peer_name(ends), exc)
            return False
        return True

    # -- serving ------------------------------------------------------------------------

    def _resolve(self) -> Error | None:
        """Look up the connection service's per-chunk callback and framing, once."""
        caller = self._caller
        assert caller is not None
        try:
            callbacks = Callbacks(self._handler, caller)
        except TypeError as exc:
            return _user_error("connection service", exc, caller)
        self._on_bytes = callbacks.on_bytes
        self._bytes_async = callbacks.bytes_async
        framing = callbacks.framing
        if framing is not None:
            made = _decoder_for(framing, caller)
            if isinstance(made, Error):
                return made
            self._decoder, self._decode, self._encode = made, made.feed, framing.encode
            caller._framing = framing
            if type(framing) is Delimited and not framing._self_overlapping:
                # The common framing, encoded inline (see _handle); a delimiter
                # that overlaps itself (b"aa") needs encode's fuller check.
                self._delimiter, self._max_size = framing.delimiter, framing.max_size
        return None

    async def _serve(self) -> Error | None:
        """Read and dispatch until EOF, a stop, a close or a failure; return the failure, if any."""
        error = self._resolve()
        if error is not None:
            return error
        caller, writer = self._caller, self._writer
        assert caller is not None
        assert writer is not None
        receive_some = writer.stream.receive_some
        handle = self._handle
        carry: bytes | bytearray | None = None
        while True:
            with trio.CancelScope() as scope:
                self._scope, self._phase = scope, _SERVING
                if self._stopping and caller.bytes_received == 0:
                    scope.deadline = trio.current_time() + FIRST_BYTE_GRACE
                # Stopping before a single byte arrived (the stop came during the
                # header, the handshake or on_connect, or took the connection from
                # the accept queue): the loop still waits, within the grace, for
                # the request a client sends right after its connect returns.
                while not (self._closing or (self._stopping and caller.bytes_received)):
                    self._waiting = True
                    try:
                        data = await receive_some(RECEIVE_SIZE)
                    except STREAM_ERRORS as exc:
                        self._waiting = False
                        if writer.aborted:
                            return None  # a failed write closed it under us: run() reports it
                        log.debug("connection %s failed: %r", caller.id, exc)
                        return stream_error(exc)
                    self._waiting = False
                    if not data:
                        self._eof = True
                        return _cut_message(self._decoder)
                    if self._stopping or self._closing or self._idle:
                        if scope.cancel_called:
                            # Woken at the instant the data arrived: handle it outside
                            # the cancelled scope, or on_bytes would be cancelled.
                            carry = data
                            break
                        scope.deadline = math.inf  # a first byte came in the grace
                    error = await handle(data)
                    if error is not None:
                        return error
            self._scope = None
            if self._idle and carry is not None and not (self._stopping or self._closing):
                # The idle sweep fired as bytes arrived: not idle after all.
                self._idle = False
                data, carry = carry, None
                error = await handle(data)
                if error is not None:
                    return error
                continue
            break
        self._phase = _CLOSING
        if self._closing:
            return None
        if self._stopping:
            return await self._drain(carry)
        if self._idle:
            log.debug("connection %s idle; closing", caller.id)
        return None

    async def _handle(self, data: bytes | bytearray) -> Error | None:
        """Hand one received chunk to the service; queue its replies and send them together."""
        caller, writer = self._caller, self._writer
        assert caller is not None
        assert writer is not None
        size = len(data)
        caller.bytes_received += size
        self.serving.counters.bytes_received += size
        on_bytes = self._on_bytes
        if on_bytes is None:
            return None
        if type(data) is not bytes:
            data = bytes(data)  # services are promised immutable bytes
        decode = self._decode
        if decode is None:
            messages: Iterable[bytes] = (data,)  # a 1-tuple: CPython reuses these
        else:
            try:
                messages = decode(data)
            except FramingError as exc:
                log.debug("connection %s: %s", caller.id, exc)
                return exc
            except Exception as exc:
                return _user_error("the framing's decoder", exc, caller)
        if self._delimiter is not None and not self._bytes_async:
            return await self._answer_lines(messages)
        return await self._answer(messages)

    async def _answer(self, messages: Iterable[bytes]) -> Error | None:
        """Call ``on_bytes`` for each message; queue the replies, send them together."""
        caller, writer, on_bytes = self._caller, self._writer, self._on_bytes
        assert caller is not None
        assert writer is not None
        assert on_bytes is not None
        bytes_async, encode = self._bytes_async, self._encode
        # Replies go straight onto the writer's queue (the list object lives as
        # long as the writer), so a caller.write_bytes from inside on_bytes still
        # sends every reply queued before it first.
        append = writer._pending.append
        for message in messages:
            if writer.closed:
                # Closed while earlier messages of this chunk were handled
                # (caller.close(), or a failed write): nobody left to answer.
                return None
            try:
                result = await on_bytes(message) if bytes_async else on_bytes(message)
            except Exception as exc:
                return _user_error("on_bytes", exc, caller)
            if result is None:
                continue
            if type(result) is not bytes:
                try:
                    check_bytes(result)
                except TypeError as exc:
                    return _user_error("on_bytes (its return value)", exc, caller)
                result = bytes(result)
            if encode is not None:
                try:
                    result = encode(result)
                except Error as exc:
                    return exc  # FramingError: nothing of this reply was queued
                except Exception as exc:
                    return _user_error("framing.encode", exc, caller)
            append(result)
            writer._pending_size += len(result)
            if writer._pending_size >= COALESCE_LIMIT:
                error = await _flush(writer)
                if error is not None:
                    return error
        return await _flush(writer)

    async def _answer_lines(self, messages: Iterable[bytes]) -> Error | None:
        """:meth:`_answer` for the commonest service: a plain ``def on_bytes`` and ``Delimited``.

        The same behaviour, at a fraction of the cost per message, which is
        what a pipelining client measures. ``on_bytes`` cannot await, so no
        other task runs between two messages: the replies are collected
        locally and framed with one ``join`` onto the writer's queue before
        any await or return. The delimiter's first byte missing from a reply
        proves it cannot hold the delimiter (this delimiter never overlaps
        itself); any other reply takes ``encode``'s full check, after the
        replies before it are queued.
        """
        caller, writer, on_bytes = self._caller, self._writer, self._on_bytes
        assert caller is not None
        assert writer is not None
        assert on_bytes is not None
        delimiter = self._delimiter
        assert delimiter is not None
        first, max_size = delimiter[0], self._max_size
        batch: list[bytes] = []
        collect = batch.append
        queued = 0  # bytes in the batch, delimiters not counted
        try:  # around the loop, not in it: zero cost until on_bytes raises
            for message in messages:
                if writer.closed:
                    break  # closed by on_bytes itself (an outbox overflow): nobody to answer
                result = on_bytes(message)
                if result.__class__ is bytes and first not in result:
                    size = len(result)
                    if size <= max_size:
                        collect(result)
                        queued += size
                        if queued < COALESCE_LIMIT:
                            continue
                        _frame_batch(writer, batch, delimiter)
                        queued = 0
                        error = await _flush(writer)
                        if error is not None:
                            return error
                        continue
                if result is None:
                    continue
                _frame_batch(writer, batch, delimiter)  # the replies before this one go first
                queued = 0
                try:
                    check_bytes(result)
                    assert self._encode is not None
                    result = self._encode(result if type(result) is bytes else bytes(result))
                except TypeError as exc:
                    return _user_error("on_bytes (its return value)", exc, caller)
                except Error as exc:
                    return exc  # FramingError: nothing of this reply was queued
                writer._pending.append(result)
                writer._pending_size += len(result)
        except Exception as exc:
            _frame_batch(writer, batch, delimiter)
            return _user_error("on_bytes", exc, caller)
        _frame_batch(writer, batch, delimiter)
        if not writer._pending:
            return None
        try:  # _flush, inlined: once per chunk, a call saved is measurable
            await writer.flush()
        except Error as exc:
            return None if writer.failure is not None else exc
        return None

    async def _drain(self, carry: bytes | bytearray | None) -> Error | None:
        """A graceful stop reached the connection: serve what has arrived, say goodbye.

        "What has arrived" is counted without reading when the stream allows
        it (the socket's queue, bytes read ahead, TLS buffers); otherwise a
        short wait decides. A message or TLS record already begun is waited
        for (each byte restarting a short wait). Input beyond what had
        arrived is left for the lingering close to discard.
        """
        caller, writer = self._caller, self._writer
        assert caller is not None
        assert writer is not None
        stream = writer.stream
        decoder = self._decoder
        if carry is not None:
            error = await self._handle(carry)
            if error is not None:
                return error
        known = pending_input(stream)
        budget = _DRAIN_UNKNOWN_BUDGET if known is None else known
        while not (self._closing or writer.closed):
            partial = decoder is not None and decoder.pending() > 0
            if not partial:
                if budget <= 0:
                    break
                if known is not None and not pending_input(stream):
                    break
            with trio.move_on_after(DRAIN_WAIT) as scope:
                try:
                    data = await stream.receive_some(RECEIVE_SIZE)
                except STREAM_ERRORS as exc:
                    if writer.aborted:
                        return None
                    return stream_error(exc)
            if scope.cancelled_caught:
                break
            if not data:
                self._eof = True
                return _cut_message(decoder)
            budget -= len(data)
            error = await self._handle(data)
            if error is not None:
                return error
        on_stop = getattr(self._handler, "on_stop", None)
        if on_stop is None or writer.closed:
            return None
        try:
            goodbye = await call(on_stop)
            if goodbye is None:
                return None
            check_bytes(goodbye)
            if caller._framing is not None:
                goodbye = caller._framing.encode(bytes(goodbye))
        except Error as exc:
            return exc
        except Exception as exc:
            return _user_error("on_stop", exc, caller)
        writer.queue(goodbye)
        return await _flush(writer)

    # -- closing ------------------------------------------------------------------------

    async def _close_orderly(self, stream: trio.abc.Stream, raw: trio.abc.Stream) -> None:
        """Send what is queued, close_notify and FIN, read the peer's last bytes, close.

        Anything that fails or takes too long leaves the socket to the
        ``finally`` in :meth:`run`, which closes it at once.
        """
        self._phase = _CLOSING
        writer = self._writer
        counters = self.serving.counters
        if writer is not None:
            writer.closed = True
            if writer.pending:
                try:
                    # A peer that takes nothing for this long gets no more chances.
                    await writer.flush(writer.timeout or CLOSE_TIMEOUT)
                except Error:
                    return
            if writer.has_outbox:
                with trio.move_on_after(CLOSE_TIMEOUT):
                    await writer.stop_outbox()
            if writer.aborted:
                return
        if self._eof and not isinstance(stream, trio.SSLStream):
            # The peer has ended its side, everything was read, nothing is
            # queued: a plain close is already orderly (FIN; no unread input to
            # turn it into a reset). The common end of a connection, made cheap.
            self._before_close()
            self._raw_closed = True
            await close_now(raw)
            return
        with trio.move_on_after(CLOSE_TIMEOUT) as scope:
            try:
                if isinstance(stream, trio.SSLStream):
                    await stream.aclose()  # close_notify, then the view sends FIN
                else:
                    await send_eof(stream)
            except _CLOSE_ERRORS:
                return
        if scope.cancelled_caught:
            return
        if not self._eof and isinstance(raw, trio.abc.HalfCloseableStream):
            discarded, _ = await linger(raw)
            counters.bytes_discarded += discarded
        self._before_close()
        self._raw_closed = True
        await close_now(raw)

    def _before_close(self) -> None:
        """Read the local address while the socket is open, if ``on_close`` might ask for it."""
        caller = self._caller
        if caller is not None and _callback(self._handler, "on_close") is not None:
            caller._endpoints.remember_local()

    async def _close_service(self, connection_service: object) -> None:
        """Run ``on_close``, shielded from any stop but bounded by its own deadline."""
        on_close = _callback(connection_service, "on_close")
        if on_close is None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + ON_CLOSE_TIMEOUT
            try:
                await call(on_close)
            except Exception as exc:
                _user_error("on_close", exc, self._caller)
        if scope.cancelled_caught:
            log.warning("on_close did not return within %g s", ON_CLOSE_TIMEOUT)

    async def _report(self, connection_service: object, caller: Caller, error: Error) -> None:
        """Hand ``error`` to ``on_error`` once; an exception from it is only logged."""
        on_error = _callback(connection_service, "on_error")
        if on_error is None:
            # Nowhere to report it: say it in the log, at the level of a peer's
            # failure (a callback's own exception was logged as ERROR already).
            quiet = isinstance(error, (ConnectionClosedError, TLSError))
            log.log(logging.DEBUG if quiet else logging.INFO, "%r: %s", caller, error)
            return
        try:
            await call(on_error, error)
        except Exception as exc:
            _user_error("on_error", exc, caller)


# Closing gracefully can fail these ways; then the socket is closed at once.
# BusyResourceError: another task still sends (it will fail when the socket closes).
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (trio.BusyResourceError, *STREAM_ERRORS)

#: Without a way to count pending input, at most this much more is read
#: during a stop (the lingering close's own bound).
_DRAIN_UNKNOWN_BUDGET = 256 * 1024


def _frame_batch(writer: Writer, batch: list[bytes], delimiter: bytes) -> None:
    """Queue the batch's replies, each followed by the delimiter, as one buffer; empty the batch.

    One ``join`` frames and copies them all: cheaper, per reply, than a
    concatenation each.
    """
    if batch:
        batch.append(b"")
        framed = delimiter.join(batch)
        batch.clear()
        writer._pending.append(framed)
        writer._pending_size += len(framed)


async def _flush(writer: Writer) -> Error | None:
    """Send the queued replies; a failure is returned (``None`` if it is the writer's to report)."""
    if not writer.pending:
        return None
    try:
        await writer.flush()
    except Error as exc:
        return None if writer.failure is not None else exc
    return None


def _callback(service: object, name: str) -> Callable[..., Any] | None:
    """The service's ``name`` callback; ``None`` if it lacks one or has only the base's no-op."""
    method: Callable[..., Any] | None = getattr(service, name, None)
    if method is None or getattr(method, "__func__", None) is getattr(ConnectionService, name):
        return None  # nothing to call: no task switch, no shielded scope for nothing
    return method


def _cut_message(decoder: Decoder | None) -> Error | None:
    """At end of stream: an error if a framed message was cut short."""
    if decoder is not None and decoder.pending():
        return FramingError(
            f"connection closed in the middle of a message ({decoder.pending()} bytes buffered)"
        )
    return None


def _as_error(failure: BaseException) -> Error:
    return failure if isinstance(failure, Error) else stream_error(failure)


def _decoder_for(framing: Framing, caller: Caller) -> Decoder | Error:
    """A fresh decoder from a service's framing; a failure there is the service's error."""
    # A user-written framing is user code: its failures are reported like an
    # exception from on_bytes, never as an internal error.
    try:
        made: object = framing.decoder()
    except Exception as exc:
        return _user_error("framing.decoder()", exc, caller)
    if not isinstance(made, Decoder):
        wrong = TypeError(
            "framing.decoder() must return an object with feed(data) and"
            f" pending() methods, got {type(made).__name__}"
        )
        return _user_error("framing.decoder()", wrong, caller)
    return made
