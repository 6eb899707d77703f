"""Small helpers over :class:`trio.abc.Stream` shared by the client and the listener.

Nothing here knows about services or clients; everything works on any trio
stream, so the drivers can be tested over :func:`trio.testing.memory_stream_pair`.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from ._config import CLOSE_TIMEOUT, TLS_ALERT_TIMEOUT, TLS_WRITE_SLICE

__all__ = [
    "Endpoints",
    "close_now",
    "close_stream",
    "endpoints",
    "peer_name",
    "send_sliced",
    "send_tls_alert",
    "ssl_stream_of",
]

Bytes = bytes | bytearray | memoryview


def ssl_stream_of(stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream] | None:
    """Return ``stream`` if it is a TLS stream, else ``None``."""
    return stream if isinstance(stream, trio.SSLStream) else None


async def send_sliced(
    stream: trio.abc.SendStream,
    data: Bytes,
    progress: Callable[[], None] | None = None,
) -> None:
    """``send_all`` in bounded slices, calling ``progress()`` after each.

    A TLS stream then never copies a huge write at once, and a listener's idle
    clock can see a long write moving. A plain socket stream needs neither: it
    sends a memoryview in place. Slicing does not make cancellation safe: a
    cancelled write still leaves the stream in an unknown state.
    """
    size = len(data)
    if size <= TLS_WRITE_SLICE:
        await stream.send_all(data)
        return
    with memoryview(data) as view:
        for start in range(0, size, TLS_WRITE_SLICE):
            await stream.send_all(view[start : start + TLS_WRITE_SLICE])
            if progress is not None:
                progress()


async def send_tls_alert(stream: trio.SSLStream[Any]) -> None:
    """Send the alert OpenSSL wrote when a handshake failed; trio drops it.

    trio marks an :class:`~trio.SSLStream` broken the moment OpenSSL raises,
    before sending what OpenSSL wrote for the peer: the alert that says why
    ("protocol version", "unknown CA", "certificate required"). Without it the
    peer sees only the connection end and cannot tell a rejected certificate
    from a crash. Call this only after a failed handshake, then close the stream.

    This reads trio's outgoing buffer, a private attribute: should trio rename
    it, nothing is sent, which is trio's own behaviour. Bounded by a short
    timeout; a peer that has gone away is ignored.
    """
    outgoing = getattr(stream, "_outgoing", None)
    if not isinstance(outgoing, ssl.MemoryBIO) or not outgoing.pending:
        return
    alert = outgoing.read()
    gone = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
    with trio.move_on_after(TLS_ALERT_TIMEOUT), gone:
        await stream.transport_stream.send_all(alert)


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
    # The peer may be gone or the stream already broken: then there is nothing
    # left to flush, and the resource is closed on the way out anyway.
    gone = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
    with trio.CancelScope(shield=True):
        # Shielded from a cancel, but not allowed past a deadline already set
        # outside (a graceful stop's timeout): then it is the forceful close.
        with trio.move_on_at(min(trio.current_time() + timeout, outer)) as scope, gone:
            await stream.aclose()
        if scope.cancelled_caught:
            await trio.aclose_forcefully(stream)


async def close_now(stream: trio.abc.AsyncResource) -> None:
    """Close without flushing, even inside a cancelled scope."""
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Both ends of a connection, read once when it is established."""

    remote_host: str
    remote_port: int
    local_host: str
    local_port: int


_UNKNOWN = Endpoints("", 0, "", 0)


def endpoints(stream: trio.abc.Stream) -> Endpoints:
    """Read the addresses of ``stream``'s socket (through TLS), or blanks if it has none."""
    inner: object = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return _UNKNOWN
    try:
        remote = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        # Already reset by the peer: the connection still runs its lifecycle.
        return _UNKNOWN
    if sock.family not in (socket.AF_INET, socket.AF_INET6):  # pragma: no cover
        return Endpoints(str(remote), 0, str(local), 0)
    return Endpoints(remote[0], remote[1], local[0], local[1])


def peer_name(stream: trio.abc.Stream) -> str:
    """``host:port`` of the peer (``[v6]:port``), for log lines; ``"unknown peer"`` if gone."""
    ends = endpoints(stream)
    if not ends.remote_host:
        return "unknown peer"
    host = ends.remote_host
    return f"[{host}]:{ends.remote_port}" if ":" in host else f"{host}:{ends.remote_port}"
