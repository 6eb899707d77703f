"""Reading a connection's PROXY header off its transport, before anything else.

Theory of operation
-------------------
With ``Listener(..., proxy_protocol=True)`` every connection comes from a load
balancer, which first sends one PROXY header (parsed by :mod:`._proxy`) and
then relays the client's bytes. The header is plaintext even on a TLS port, so
it is read off the *transport*, under the TLS layer, before the handshake.

Reads are ordinary-sized, so the chunk that completes the header usually
carries the first bytes of the client's stream too (a ClientHello, a
request). They are returned with the header, and the connection hands them
out first (:class:`~trio_tcp._streams.TransportView`): nothing read ahead is
ever lost, whether the connection goes on to serve them or a stop closes it.

A header that is missing, malformed or late is the peer's fault; what to do
about it (log, count, drop) is the connection driver's business.
"""

from __future__ import annotations

import math

import trio

from ._config import RECEIVE_SIZE
from ._errors import STREAM_ERRORS, FramingError, stream_error
from ._proxy import ProxyHeader, ProxyHeaderParser

__all__ = ["HeaderProblem", "receive_proxy_header"]


class HeaderProblem(Exception):
    """Why no header was read: the message is the log's wording.

    ``silent`` is true when the peer sent nothing at all before closing (a
    port scan, a plain TCP health check): that is no error.
    """

    def __init__(self, message: str, *, silent: bool = False) -> None:
        super().__init__(message)
        self.silent = silent


async def receive_proxy_header(
    transport: trio.abc.ReceiveStream, first: bytes, timeout: float | None
) -> tuple[ProxyHeader, bytes]:
    """Read the PROXY header at the start of ``transport``.

    Args:
        transport: the connection's transport (under any TLS layer).
        first: bytes of the connection already read, if any.
        timeout: seconds the whole header may take (``None``: no limit).

    Returns:
        The header, and the bytes that followed it (possibly ``b""``).

    Raises:
        HeaderProblem: no valid header (malformed, incomplete, late, or a
            transport failure); says why.

    Cancellation (a listener stop) propagates.
    """
    parser = ProxyHeaderParser()
    received = len(first)
    with trio.move_on_after(math.inf if timeout is None else timeout):
        try:
            parsed = parser.feed(first) if first else None
            while parsed is None:
                data = await transport.receive_some(RECEIVE_SIZE)
                if not data:
                    raise HeaderProblem(
                        "incomplete: the peer closed the connection", silent=received == 0
                    )
                received += len(data)
                parsed = parser.feed(data)
            return parsed
        except FramingError as exc:
            raise HeaderProblem(f"rejected: {exc}") from exc
        except STREAM_ERRORS as exc:
            raise HeaderProblem(f"failed: {stream_error(exc)}", silent=received == 0) from exc
    raise HeaderProblem(f"timed out after {timeout:g} s")
