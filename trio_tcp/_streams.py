"""Small helpers over :class:`trio.abc.Stream` shared by the client and the listener.

Nothing here knows about services or clients; everything works on any trio
stream, so the drivers can be tested over in-memory streams.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Callable
from typing import Any

import trio
from trio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

from ._config import CLOSE_TIMEOUT, LINGER_BYTES, LINGER_TIME, RECEIVE_SIZE
from ._tcpstream import TCPStream, pending_bytes, unacked_bytes

__all__ = [
    "Bytes",
    "Endpoints",
    "TransportView",
    "close_now",
    "close_now_sync",
    "close_stream",
    "endpoints",
    "linger",
    "peer_name",
    "pending_input",
    "send_eof",
]

Bytes = bytes | bytearray | memoryview

# Closing or reading a stream whose peer is gone or that already broke: there is
# nothing left to flush, and the resource is closed on the way out anyway.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class TransportView(trio.abc.HalfCloseableStream):
    """A connection's transport, as the layers above it see it.

    Two things make it more than the stream it wraps:

    * bytes already read from the transport (those that came in with a PROXY
      header, say) are handed out first, so nothing read ahead is ever lost;
    * closing it only ends *our sending side* (FIN): the connection owns the
      transport and closes it itself, after reading the peer's remaining
      input (a lingering close). :class:`trio.SSLStream` closes its transport
      right after close_notify; over a view, that becomes close_notify + FIN.

    Args:
        transport_stream: the stream underneath; never closed by the view.
        prefix: bytes to return before reading from ``transport_stream``.
    """

    __slots__ = ("_prefix", "transport_stream")

    def __init__(self, transport_stream: trio.abc.Stream, prefix: bytes = b"") -> None:
        self.transport_stream = transport_stream
        self._prefix = prefix

    @property
    def socket(self) -> socket.socket | None:
        """The transport's socket, if it has one (for addresses and readiness)."""
        sock: socket.socket | None = getattr(self.transport_stream, "socket", None)
        return sock

    def pending_prefix(self) -> int:
        """Bytes read ahead and not handed out yet."""
        return len(self._prefix)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Return (part of) the prefix while any is left, then read from the transport."""
        prefix = self._prefix
        if not prefix:
            return await self.transport_stream.receive_some(max_bytes)
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        # Taken between a cancellation point and a shielded yield: a cancelled
        # receive loses nothing, and two receivers cannot both get the prefix.
        await checkpoint_if_cancelled()
        size = len(prefix) if max_bytes is None else max_bytes
        data, self._prefix = prefix[:size], prefix[size:]
        await cancel_shielded_checkpoint()
        return data

    async def send_all(self, data: Bytes) -> None:
        """Send to the transport."""
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait on the transport."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """End our sending side of the transport (FIN), if it can be ended alone."""
        await send_eof(self.transport_stream)

    async def aclose(self) -> None:
        """End our sending side; the transport itself stays open for its owner."""
        self._prefix = b""
        with contextlib.suppress(*_GONE):
            await self.send_eof()


async def send_eof(stream: trio.abc.Stream) -> None:
    """Send end-of-stream (FIN) where the stream can half-close; otherwise do nothing."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    else:
        await trio.lowlevel.checkpoint()


def pending_input(stream: trio.abc.Stream) -> int | None:
    """How many bytes have arrived on ``stream`` and wait to be read, without reading.

    Counts the kernel's receive queue (``FIONREAD``) of the socket underneath,
    bytes read ahead by a :class:`TransportView`, and bytes buffered by TLS
    (decrypted and not yet read, or received and not yet decrypted). TLS
    input is counted as it arrived, encrypted, so it over-counts a little.

    Returns:
        The count, or ``None`` where the stream offers no way to tell (then a
        short bounded read decides).
    """
    count = 0
    layer: object = stream
    while True:
        if isinstance(layer, trio.SSLStream):
            count += layer.pending()
            # trio's buffer of received, not yet decrypted bytes: private, so
            # read defensively (0 if trio renames it).
            incoming = getattr(layer, "_incoming", None)
            count += getattr(incoming, "pending", 0)
            layer = layer.transport_stream
        elif isinstance(layer, TransportView):
            count += layer.pending_prefix()
            layer = layer.transport_stream
        else:
            break
    if isinstance(layer, TCPStream):
        return count + layer.pending_input()
    measure = getattr(layer, "pending_input", None)
    if callable(measure):
        pending: int = measure()
        return count + pending
    sock = getattr(layer, "socket", None)  # trio.SocketStream, a UNIX socket stream
    if sock is not None and hasattr(sock, "fileno"):
        fileno = sock.fileno()
        if fileno >= 0:
            return count + pending_bytes(fileno)
    return None if count == 0 else count


async def linger(stream: trio.abc.Stream) -> tuple[int, bool]:
    """Read and discard the peer's input until closing cannot destroy a reply; bounded.

    The second half of a lingering close (nginx's ``lingering_close``), once
    our FIN is sent. Closing a socket with unread input makes the kernel send
    RST, and a reset discards whatever the peer has not acknowledged yet: the
    end of our last reply. So input is read and dropped until the peer's end
    of stream, or until nothing is unread *and* the peer has acknowledged
    everything we sent (then even a later reset loses nothing); where the
    transport cannot tell the latter, until the end of stream. Bounded by
    :data:`~trio_tcp._config.LINGER_TIME`, and by any deadline around it.

    Past :data:`~trio_tcp._config.LINGER_BYTES` discarded, a peer that keeps
    sending (pipelined requests that will never be answered) gets no more
    reading, but the wait for its acknowledgement goes on: its data then
    stays unread and closing resets the connection, yet the peer already
    holds every reply and our FIN, so it reads them and then EOF. Stopping at
    the byte bound instead would destroy the replies it has not read yet.

    Returns:
        ``(bytes discarded, whether the peer's end of stream was reached)``.
    """
    discarded = 0
    unacked = _unacked_output(stream)
    poll = _LINGER_FIRST_POLL
    with trio.move_on_after(LINGER_TIME), contextlib.suppress(*_GONE):
        while True:
            enough = discarded >= LINGER_BYTES
            if unacked is None:
                if enough:
                    break
                data = await stream.receive_some(RECEIVE_SIZE)
            else:
                if unacked() == 0 and (enough or not pending_input(stream)):
                    return discarded, False  # delivered, FIN included: safe to close
                if enough:
                    await trio.sleep(poll)
                    poll = min(poll * 2, _LINGER_MAX_POLL)
                    continue
                with trio.move_on_after(poll) as scope:
                    data = await stream.receive_some(RECEIVE_SIZE)
                if scope.cancelled_caught:
                    poll = min(poll * 2, _LINGER_MAX_POLL)
                    continue
            if not data:
                return discarded, True
            discarded += len(data)
    return discarded, False


# How often a lingering close looks again at what the peer has acknowledged:
# from a millisecond (loopback and LAN acknowledge at once), backing off.
_LINGER_FIRST_POLL = 0.001
_LINGER_MAX_POLL = 0.05


def _unacked_output(stream: trio.abc.Stream) -> Callable[[], int | None] | None:
    """A way to ask how much of what we sent the peer has not acknowledged, if any."""
    measure = getattr(stream, "unacked_output", None)
    if callable(measure):
        return measure  # type: ignore[no-any-return]
    sock = getattr(stream, "socket", None)
    if sock is None or not hasattr(sock, "fileno"):
        return None
    if unacked_bytes(sock.fileno()) is None:
        return None
    return lambda: unacked_bytes(sock.fileno()) if sock.fileno() >= 0 else 0


async def close_stream(stream: trio.abc.AsyncResource, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close gracefully (TLS close_notify) within ``timeout``, then forcefully.

    Shielded, fallback included: closing must finish even when the
    surrounding scope is being cancelled, or a stop would leak sockets (and
    skip what comes after the close). A task that is already being cancelled
    (an immediate stop) closes forcefully at once: it has no time to flush.
    The timeout keeps a peer that never reads from holding the close open.
    """
    outer = trio.current_effective_deadline()
    if outer == -math.inf:
        await close_now(stream)
        return
    with trio.CancelScope(shield=True):
        # Shielded from a cancel, but not allowed past a deadline already set
        # outside (a graceful stop's timeout): then it is the forceful close.
        with trio.move_on_at(min(trio.current_time() + timeout, outer)) as scope:
            with contextlib.suppress(*_GONE):
                await stream.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)


async def close_now(stream: trio.abc.AsyncResource) -> None:
    """Close without flushing, even inside a cancelled scope."""
    if isinstance(stream, TCPStream):
        stream.close_now()
        return
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


def close_now_sync(stream: object) -> bool:
    """Close the socket under ``stream`` at once if that can be done without awaiting.

    Wakes every task blocked on it (a writer stuck on a peer that does not
    read). Returns whether it did; otherwise the owner closes it with
    :func:`close_now` from its own task.
    """
    layer = stream
    while layer is not None:
        close = getattr(layer, "close_now", None)
        if callable(close):
            close()
            return True
        layer = getattr(layer, "transport_stream", None)
    return False


class Endpoints:
    """Both ends of a connection.

    The peer's end is known when the connection is accepted. The local end of
    an accepted socket is the listener's address, which few services ask
    for, so it is read from the socket only when first asked (or when the
    connection is about to close: see :meth:`remember_local`).
    """

    __slots__ = ("_local", "_sock", "remote_host", "remote_port")

    def __init__(
        self, remote_host: str, remote_port: int, local_host: str = "", local_port: int = 0
    ) -> None:
        self.remote_host = remote_host
        self.remote_port = remote_port
        self._local: tuple[str, int] | None = (local_host, local_port)
        self._sock: socket.socket | None = None

    @classmethod
    def of_socket(cls, sock: Any, remote: Any) -> Endpoints:
        """The peer's address now, the socket's own when first asked."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            try:
                local = sock.getsockname()
            except OSError:
                local = ""
            return cls(_unix_name(remote), 0, _unix_name(local), 0)
        ends = cls(remote[0], remote[1])
        ends._local, ends._sock = None, sock
        return ends

    @property
    def local_host(self) -> str:
        """This end's address."""
        return self._resolve()[0]

    @property
    def local_port(self) -> int:
        """This end's port."""
        return self._resolve()[1]

    def remember_local(self) -> None:
        """Read the local end now, if not yet read: the socket is about to close."""
        self._resolve()

    def _resolve(self) -> tuple[str, int]:
        local = self._local
        if local is None:
            sock, self._sock = self._sock, None
            try:
                address = sock.getsockname() if sock is not None else ("", 0)
                local = self._local = (address[0], address[1])
            except OSError:  # closed already
                local = self._local = ("", 0)
        return local

    def _key(self) -> tuple[str, int, str, int]:
        return (self.remote_host, self.remote_port, *self._resolve())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoints) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        remote_host, remote_port, local_host, local_port = self._key()
        return f"Endpoints({remote_host!r}, {remote_port}, {local_host!r}, {local_port})"


_UNKNOWN = Endpoints("", 0, "", 0)


def endpoints(stream: trio.abc.Stream) -> Endpoints:
    """The addresses of ``stream``'s socket (through TLS and views), or blanks if it has none.

    The peer's address comes from ``accept()`` where the stream kept it, so a
    peer that has already reset the connection is still known. A UNIX-domain
    socket gives its path (often empty for the connecting side) and port 0.
    """
    inner: object = stream
    while isinstance(inner, (trio.SSLStream, TransportView)):
        inner = inner.transport_stream
    known = getattr(inner, "endpoints", None)
    if isinstance(known, Endpoints):
        return known  # an in-memory connection says who it is
    sock = getattr(inner, "socket", None)
    if sock is None:
        return _UNKNOWN
    remote: Any = getattr(inner, "peer", None)
    if remote is None:
        try:
            remote = sock.getpeername()
        except OSError:
            # Reset by the peer before we asked: the connection still runs its lifecycle.
            return _UNKNOWN
    return Endpoints.of_socket(sock, remote)


def _unix_name(address: Any) -> str:
    if isinstance(address, bytes):
        return address.decode("utf-8", "backslashreplace")
    return str(address) if address else ""


def peer_name(ends: Endpoints) -> str:
    """``host:port`` of the peer (``[v6]:port``), for log lines; ``"unknown peer"`` if blank."""
    host = ends.remote_host
    if not host:
        return "unknown peer"
    if ends.remote_port == 0 and not ends.remote_host[:1].isdigit() and ":" not in host:
        return host  # a UNIX socket path
    return f"[{host}]:{ends.remote_port}" if ":" in host else f"{host}:{ends.remote_port}"
