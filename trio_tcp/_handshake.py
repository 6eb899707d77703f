"""The TLS handshake, the same on both sides: bounded, and failures said in words.

Both the client (in ``connect``) and each accepted connection (in its own
task, never in the accept loop) run it through :func:`handshake`.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from typing import Any

import trio

from ._config import TLS_ALERT_TIMEOUT
from ._errors import STREAM_ERRORS, TLSError, handshake_error

__all__ = ["handshake", "send_tls_alert"]


async def handshake(stream: trio.SSLStream[Any], timeout: float | None) -> None:
    """Run ``stream``'s handshake within ``timeout`` seconds (``None``: no limit).

    On failure the alert OpenSSL wrote (protocol version, unknown CA,
    certificate required) is sent first, so the peer learns why; the caller
    then closes the stream.

    Raises:
        TLSError: the handshake failed or timed out (the cause is kept).
    """
    try:
        with trio.fail_after(math.inf if timeout is None else timeout):
            await stream.do_handshake()
    except trio.TooSlowError as exc:
        raise TLSError(f"TLS handshake timed out after {timeout:g} s") from exc
    except STREAM_ERRORS as exc:
        await send_tls_alert(stream)
        raise handshake_error(exc) from exc


async def send_tls_alert(stream: trio.SSLStream[Any]) -> None:
    """Send the alert OpenSSL wrote when a handshake failed; trio drops it.

    trio marks an :class:`~trio.SSLStream` broken the moment OpenSSL raises,
    before sending what OpenSSL wrote for the peer: the alert that says why.
    Without it the peer sees only the connection end and cannot tell a
    rejected certificate from a crash.

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
