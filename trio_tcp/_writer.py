"""The write side shared by ``Client`` and ``Caller``, and the properties both expose.

Theory of operation: trio streams refuse two concurrent ``send_all`` calls
(``BusyResourceError``), so writes queue on a :class:`trio.StrictFIFOLock`
(FIFO, so messages go out in call order and each is contiguous). A write that
does not complete, whether it failed, timed out or was cancelled, may have sent
part of its data, and there is no way to know how much; a TLS stream is unusable
after it. So any unfinished write *aborts* the connection: it is marked closed,
the socket is closed at once, and later writes raise
:class:`~trio_tcp.ConnectionClosedError`. The peer sees the connection end
instead of a stream silently resumed in the middle of a message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ._errors import STREAM_ERRORS, ConnectionClosedError, WriteTimeoutError, stream_error
from ._streams import Bytes, Endpoints, send_sliced
from ._tls import peer_tls_details

__all__ = ["ConnectionInfo", "Writer"]

_BYTES_TYPES = (bytes, bytearray, memoryview)


def check_bytes(data: object) -> None:
    """Raise :class:`TypeError` unless ``data`` is bytes-like (a programming error)."""
    if not isinstance(data, _BYTES_TYPES):
        raise TypeError(f"expected bytes, bytearray or memoryview, got {type(data).__name__}")


class Writer:
    """Serialised, all-or-abort writes to one stream."""

    __slots__ = (
        "_lock",
        "_send",
        "closed",
        "failure",
        "on_abort",
        "on_sent",
        "stream",
    )

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._lock = trio.StrictFIFOLock()
        # A plain socket sends a memoryview in place; TLS copies, so it gets slices.
        self._send: Callable[[Bytes], Any] = (
            stream.send_all
            if not isinstance(stream, trio.SSLStream)
            else lambda data: send_sliced(stream, data)
        )
        self.closed = False
        #: The exception that aborted the connection, for the reader to report.
        self.failure: BaseException | None = None
        #: Called (synchronously) once when a write aborts the connection.
        self.on_abort: Callable[[], None] | None = None
        #: Called with the byte count of each completed write.
        self.on_sent: Callable[[int], None] | None = None

    def watch_progress(self, progress: Callable[[], None]) -> None:
        """Send in bounded slices from now on, calling ``progress()`` after each one."""
        stream = self.stream
        self._send = lambda data: send_sliced(stream, data, progress)

    async def write(self, data: Bytes, timeout: float | None) -> None:
        """Send all of ``data`` or raise; see the module docstring for what failure means."""
        check_bytes(data)
        lock = self._lock
        if lock.locked():
            await lock.acquire()  # queue behind the write in progress, in call order
        else:
            # Uncontended: take the lock without yielding (the send yields), but
            # honour a cancellation now, while nothing has been sent.
            await trio.lowlevel.checkpoint_if_cancelled()
            lock.acquire_nowait()
        try:
            if self.closed:
                await trio.lowlevel.checkpoint()
                raise ConnectionClosedError("connection already closed")
            timed_out = False
            try:
                if timeout is None:
                    await self._send(data)
                else:
                    with trio.move_on_after(timeout) as scope:
                        await self._send(data)
                    timed_out = scope.cancelled_caught
            except STREAM_ERRORS as exc:
                error = stream_error(exc)
                await self.abort(exc)
                raise error from exc
            except BaseException:
                # Cancelled (or KeyboardInterrupt) mid-write: the stream is in an
                # unknown state, so it cannot be used again.
                await self.abort(None)
                raise
            if timed_out:
                error = WriteTimeoutError(
                    f"write of {len(data)} bytes timed out after {timeout:g} s; connection closed"
                )
                await self.abort(error)
                raise error
        finally:
            lock.release()
        if self.on_sent is not None:
            self.on_sent(len(data))

    async def abort(self, failure: BaseException | None) -> None:
        """Mark the connection closed and close the socket now, without flushing."""
        if self.closed:
            return
        self.closed = True
        self.failure = failure
        if self.on_abort is not None:
            self.on_abort()
        await trio.aclose_forcefully(self.stream)


class ConnectionInfo:
    """Addresses and TLS details: what :class:`~trio_tcp.Client` and ``Caller`` share."""

    __slots__ = ()

    # Provided by the subclasses.
    _endpoints: Endpoints
    _writer: Writer

    @property
    def remote_host(self) -> str:
        """The peer's IP address."""
        return self._endpoints.remote_host

    @property
    def remote_port(self) -> int:
        """The peer's port."""
        return self._endpoints.remote_port

    @property
    def local_host(self) -> str:
        """The IP address of this end."""
        return self._endpoints.local_host

    @property
    def local_port(self) -> int:
        """The port of this end."""
        return self._endpoints.local_port

    @property
    def is_secure(self) -> bool:
        """Whether the connection runs over TLS."""
        return isinstance(self._writer.stream, trio.SSLStream)

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version (``"TLSv1.3"``), or ``None`` on a plain connection."""
        return self._tls_details()[0]

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher's OpenSSL name, or ``None`` on a plain connection."""
        return self._tls_details()[1]

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's certificate as :meth:`ssl.SSLSocket.getpeercert` gives it, or ``None``.

        ``None`` on a plain connection, or when the peer sent no certificate
        (a client, unless the listener asks for one).
        """
        return self._tls_details()[2]

    def _tls_details(self) -> tuple[str | None, str | None, dict[str, Any] | None]:
        stream = self._writer.stream
        if not isinstance(stream, trio.SSLStream):
            return None, None, None
        return peer_tls_details(stream)
