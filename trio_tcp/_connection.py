"""The per-connection driver: handshake -> on_connect -> read loop -> on_error -> on_close.

Theory of operation
-------------------
One task per connection runs :meth:`Connection.run`, and it never raises
anything but cancellation: every failure, the library's or the service's, is
contained here, so one connection can never disturb the listener (trio's own
``serve_listeners`` lets a handler exception crash the whole server; this
driver departs from it on purpose).

The read loop is the only reader. ``on_bytes`` is awaited inline, so the next
read starts only when it returns: a slow service slows its own client through
TCP backpressure instead of growing a buffer.

Stopping a connection without a failure (a graceful listener stop, the idle
timeout, ``caller.close()`` from another task) must not interrupt an
``on_bytes`` call that is running. So the reader is only woken while it is
*waiting for input* (``_waiting``); a stop requested while ``on_bytes`` runs
sets ``_stopping``, checked when it returns. The waiting reader is woken by a
cancel scope around the loop, whose deadline is also the idle timeout, armed
only while waiting. A plain TCP connection without an idle timeout needs no
deadline, and a cancel scope costs about 600 bytes per connection: there the
reader is woken the way closing the socket wakes it
(:meth:`TCPStream.abort_receive`), since a stopped connection closes next anyway.

Whatever happens, one ``finally`` closes the stream and runs ``on_close``
exactly once, shielded from the stop and bounded by its own short deadline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._caller import Caller
from ._config import ON_CLOSE_TIMEOUT, RECEIVE_SIZE
from ._errors import (
    STREAM_ERRORS,
    ConnectionClosedError,
    Error,
    FramingError,
    TLSError,
    handshake_error,
    stream_error,
)
from ._framing import Decoder, Framing
from ._proxy_stream import Proxied, receive_proxy_header
from ._service import Callbacks, call
from ._streams import close_now, close_stream, endpoints, peer_name, send_tls_alert
from ._tcpstream import TCPStream
from ._writer import Writer, check_bytes

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._service import Service
    from ._stats import Counters

__all__ = ["Connection", "Settings"]

log = logging.getLogger("trio_tcp")


class _NoScope:
    """Stands in for the read loop's cancel scope where none is needed; reusable."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> Literal[False]:
        return False  # like a CancelScope that caught nothing


_NO_SCOPE = _NoScope()


class Settings:
    """What a listener hands every connection it starts; shared, never copied per connection."""

    __slots__ = ("counters", "handshake_timeout", "idle_timeout", "proxy_protocol")

    def __init__(
        self,
        counters: Counters,
        *,
        idle_timeout: float | None = None,
        handshake_timeout: float | None = None,
        proxy_protocol: bool = False,
    ) -> None:
        self.counters = counters
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        #: Read a PROXY header (see _proxy_stream) before anything else.
        self.proxy_protocol = proxy_protocol


def _user_error(callback: str, exc: Exception, caller: Caller | None) -> Error:
    """Log a service callback's exception with its traceback; return it as an :class:`Error`."""
    log.error("%s raised %s on %r", callback, type(exc).__name__, caller, exc_info=exc)
    if isinstance(exc, Error):
        return exc
    error = Error(f"{callback} raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Connection:
    """Drives one accepted stream through the service's lifecycle."""

    __slots__ = (
        "_caller",
        "_scope",
        "_stopping",
        "_waiting",
        "_writer",
        "on_done",
        "service",
        "settings",
        "stream",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        service: Service,
        settings: Settings,
        on_done: Callable[[Connection], None] | None = None,
    ) -> None:
        self.stream = stream
        self.service = service
        self.settings = settings
        #: Called (synchronously) when the connection is over, whatever the reason.
        self.on_done = on_done
        self._scope: trio.CancelScope | None = None
        self._writer: Writer | None = None
        self._caller: Caller | None = None  # for log lines, once there is one
        self._waiting = False
        self._stopping = False

    def stop_reading(self) -> None:
        """End the connection cleanly once any running ``on_bytes`` returns."""
        self._stopping = True
        if not self._waiting:
            return
        if self._scope is not None:
            self._scope.cancel()
        elif isinstance(self.stream, TCPStream):
            # Closing wakes writers blocked on the socket too: mark the writer
            # closed first, so theirs is a local close, not a failure to report.
            if self._writer is not None:
                self._writer.closed = True
            self.stream.abort_receive()

    def _progress(self) -> None:
        """A slice of a write went out: activity, so the idle clock restarts."""
        if self._waiting and self._scope is not None and self.settings.idle_timeout is not None:
            self._scope.deadline = trio.current_time() + self.settings.idle_timeout

    def _touch(self, sent: int) -> None:
        """Count a completed write; it is activity too."""
        self.settings.counters.bytes_sent += sent
        self._progress()

    async def run(self) -> None:
        """Serve the connection to its end; the fault barrier: only cancellation escapes."""
        stream = self.stream
        counters = self.settings.counters
        connection_service: object | None = None
        established = False  # handshake done: a graceful close (close_notify) makes sense
        writer = None
        proxied: Proxied | None = None
        try:
            if self.settings.proxy_protocol:
                # Before TLS too: a load balancer sends it in plaintext. Waiting
                # for it is waiting for the peer, as far as stop_reading() goes.
                if not self._stopping:
                    with trio.CancelScope() as self._scope:
                        self._waiting = True
                        proxied = await receive_proxy_header(stream, self.settings)
                    self._scope, self._waiting = None, False
                if proxied is None:
                    return  # logged and counted, or stopped
                stream = self.stream = proxied.stream
            if isinstance(stream, trio.SSLStream) and not await self._handshake(stream):
                return
            established = True
            caller = self._caller = Caller(
                stream, proxied.endpoints if proxied else endpoints(stream), self.stop_reading
            )
            writer = self._writer = caller._writer
            writer.on_sent = self._touch
            writer.on_abort = self.stop_reading
            if self.settings.idle_timeout is not None:
                # A long write counts as activity while it moves, not while stuck.
                writer.watch_progress(self._progress)
            try:
                connection_service = await call(self.service.on_connect, caller)
            except Exception as exc:
                _user_error("on_connect", exc, self._caller)
                counters.errors += 1
                return
            if connection_service is None:
                return
            try:
                callbacks = Callbacks(connection_service, caller)
            except TypeError as exc:
                error: Error | None = _user_error("connection service", exc, self._caller)
            else:
                error = await self._read_loop(caller, callbacks)
                if error is None and writer.failure is not None:
                    # A write from another task broke the connection.
                    error = stream_error(writer.failure)
            if error is not None:
                counters.errors += 1
                await self._report(connection_service, error)
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
            # Each step is shielded, and each runs even if the one before failed.
            if writer is not None:
                writer.closed = True
            try:
                await (close_stream(stream) if established else close_now(stream))
            finally:
                try:
                    if connection_service is not None:
                        await self._close_service(connection_service)
                finally:
                    # The listener's bookkeeping (and its max_connections token).
                    if self.on_done is not None:
                        self.on_done(self)

    async def _close_service(self, connection_service: object) -> None:
        """Run ``on_close``, shielded from any stop but bounded by its own deadline."""
        on_close = getattr(connection_service, "on_close", None)
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

    async def _handshake(self, stream: trio.SSLStream[Any]) -> bool:
        """Run the TLS handshake in this task; say whether the connection may go on.

        A failure is the peer's doing (garbage, a plain client, a rejected
        certificate), so it is one INFO line per connection, no traceback; the
        alert OpenSSL wrote is sent so the peer learns why. A stop cancels a
        handshake in progress: no callback has run, so there is nothing to let
        finish, and a silent client must not hold a graceful stop open for the
        whole ``handshake_timeout``. The caller closes the stream.
        """
        if self._stopping:
            return False
        timeout = self.settings.handshake_timeout
        with trio.CancelScope() as scope:
            # Waiting for the peer, as far as stop_reading() is concerned.
            self._scope, self._waiting = scope, True
            try:
                with trio.fail_after(math.inf if timeout is None else timeout):
                    await stream.do_handshake()
            except trio.TooSlowError:
                log.info(
                    "TLS handshake from %s timed out after %g s; connection dropped",
                    peer_name(stream), timeout,
                )  # fmt: skip
                self.settings.counters.errors += 1
                return False
            except STREAM_ERRORS as exc:
                log.info(
                    "TLS handshake from %s failed; connection dropped: %s",
                    peer_name(stream), handshake_error(exc),
                )  # fmt: skip
                self.settings.counters.errors += 1
                await send_tls_alert(stream)
                return False
            finally:
                self._scope, self._waiting = None, False
        if scope.cancelled_caught:
            log.debug("TLS handshake from %s stopped by the listener", peer_name(stream))
            return False
        return True

    async def _read_loop(self, caller: Caller, callbacks: Callbacks) -> Error | None:
        """Read and dispatch until EOF, a stop or a failure; return the failure, if any."""
        # Everything looked up once per connection, so the loop body is plain calls.
        receive_some = self.stream.receive_some
        on_bytes = callbacks.on_bytes
        bytes_async = callbacks.bytes_async
        writer = caller._writer
        write = writer.write
        counters = self.settings.counters
        idle = self.settings.idle_timeout
        framing = callbacks.framing
        decoder = decode = encode = None
        if framing is not None:
            made = _decoder_for(framing, caller)
            if isinstance(made, Error):
                return made
            decoder, decode, encode = made, made.feed, framing.encode
            caller._framing = framing
        # See the module docstring: no scope where nothing needs one.
        needs_scope = idle is not None or not isinstance(self.stream, TCPStream)
        scope = self._scope = trio.CancelScope() if needs_scope else None
        idle_scope, idle_for = (scope, idle) if idle is not None else (None, 0.0)
        waking: contextlib.AbstractContextManager[object, bool] = scope or _NO_SCOPE
        with waking:
            while True:
                if self._stopping:
                    return None
                if idle_scope is not None:
                    idle_scope.deadline = trio.current_time() + idle_for
                self._waiting = True
                try:
                    data: bytes | bytearray = await receive_some(RECEIVE_SIZE)
                except STREAM_ERRORS as exc:
                    self._waiting = False
                    if writer.closed or self._stopping:
                        return None  # closed or stopped while we waited: not an error
                    log.debug("connection %s failed: %r", caller.id, exc)
                    return stream_error(exc)
                self._waiting = False
                if idle_scope is not None:
                    idle_scope.deadline = math.inf
                if not data:
                    if decoder is not None and decoder.pending():
                        return FramingError(
                            "connection closed in the middle of a message"
                            f" ({decoder.pending()} bytes buffered)"
                        )
                    return None
                # Every cancel of this scope but the idle deadline sets _stopping first,
                # so the scope (whose cancel_called reads the clock) is checked only with one.
                if self._stopping or (idle_scope is not None and idle_scope.cancel_called):
                    return None  # stopped at the instant the data arrived
                if type(data) is not bytes:
                    data = bytes(data)  # services are promised immutable bytes
                counters.bytes_received += len(data)
                if on_bytes is None:
                    continue
                if decode is None:
                    messages: Iterable[bytes] = (data,)  # a 1-tuple: CPython reuses these
                else:
                    try:
                        messages = decode(data)
                    except FramingError as exc:
                        log.debug("connection %s: %s", caller.id, exc)
                        return exc
                    except Exception as exc:
                        return _user_error("the framing's decoder", exc, self._caller)
                for message in messages:
                    if writer.closed:
                        # Closed while earlier messages of this chunk were handled
                        # (caller.close(), or a failed write from another task):
                        # no one is left to answer the rest.
                        return None
                    try:
                        result = await on_bytes(message) if bytes_async else on_bytes(message)
                    except Exception as exc:
                        return _user_error("on_bytes", exc, self._caller)
                    if result is None:
                        continue
                    try:
                        if encode is not None:
                            check_bytes(result)
                            result = encode(bytes(result))
                        await write(result, None)
                    except TypeError as exc:
                        return _user_error("on_bytes (its return value)", exc, self._caller)
                    except ConnectionClosedError as exc:
                        if writer.failure is None:
                            # The service closed its own connection (caller.close()):
                            # no one is left to answer, and that is no error.
                            return None
                        return exc
                    except Error as exc:
                        return exc  # FramingError from encode: nothing of the reply was sent
                    except Exception as exc:
                        return _user_error("framing.encode", exc, self._caller)
        if idle_scope is not None and idle_scope.cancelled_caught and not self._stopping:
            log.debug("connection %s idle for %g s; closing", caller.id, idle_for)
        return None

    async def _report(self, connection_service: object, error: Error) -> None:
        """Hand ``error`` to ``on_error`` once; an exception from it is only logged."""
        on_error = getattr(connection_service, "on_error", None)
        if on_error is None:
            # Nowhere to report it: say it in the log, at the level of a peer's
            # failure (a callback's own exception was logged as ERROR already).
            quiet = isinstance(error, (ConnectionClosedError, TLSError))
            log.log(logging.DEBUG if quiet else logging.INFO, "%r: %s", self._caller, error)
            return
        try:
            await call(on_error, error)
        except Exception as exc:
            _user_error("on_error", exc, self._caller)


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
