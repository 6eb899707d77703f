"""Named defaults and the validators every public constructor shares.

Validation happens at construction, before any socket exists, so a bad value
can never bind a surprising port (``70000`` would silently become ``4464``) or
arm a timer that fires at once. A value of the wrong *type* is a programming
error and raises :class:`TypeError`; a value of the right type that is out of
range raises :class:`~trio_tcp.ConfigurationError`, which is also a
:class:`ValueError`.
"""

from __future__ import annotations

import math

from ._errors import ConfigurationError

#: Read timeout of a client, in seconds: Ballerina's default.
DEFAULT_READ_TIMEOUT = 300.0
#: Write timeout of a client, in seconds: Ballerina's default.
DEFAULT_WRITE_TIMEOUT = 300.0
#: Largest single read. 64 KiB matches the kernel's usual socket buffer and
#: bounds what one unframed ``on_bytes`` call can be handed (never buffer
#: unframed input without a limit).
RECEIVE_SIZE = 65536
#: Largest slice handed to one TLS ``send_all``: SSLStream copies a whole
#: write into OpenSSL's buffers, so a 256 MiB write unsliced costs ~3x its size.
TLS_WRITE_SLICE = 65536
#: How long a graceful close (TLS close_notify, flushing) may take before the
#: socket is closed forcefully. Short: a peer that does not read must not hold
#: a stop open.
CLOSE_TIMEOUT = 2.0
#: How long sending the alert of a failed TLS handshake may take. An alert is
#: a few bytes that fit any socket buffer; only a peer that stopped reading
#: entirely can make it wait, and a dying connection must not wait for it.
TLS_ALERT_TIMEOUT = 0.5
#: Deadline for ``on_close`` once a connection ends, shielded from any stop.
ON_CLOSE_TIMEOUT = 5.0
#: During a graceful stop, how long a connection that has received no byte at
#: all may wait for its first one. A client sends right after ``connect()``
#: returns, so on any sane network its first bytes follow within a round trip;
#: a silent client must not hold a stop open. Inside the stop's own deadline.
FIRST_BYTE_GRACE = 0.1
#: During a graceful stop, the longest wait for the rest of something already
#: begun (a partial framed message, a partial TLS record), and the bounded wait
#: that decides "nothing pending" on a stream that offers no non-blocking check.
#: Each byte that arrives restarts it; the stop's deadline bounds the whole.
DRAIN_WAIT = 0.1
#: Lingering close: after the last reply and our FIN, how long the peer's
#: remaining input is read and discarded before the socket is closed. Closing
#: with unread input makes the kernel send RST, which destroys replies still
#: queued for the peer; nginx's ``lingering_time`` defaults to 30 s, but a
#: peer that has seen our FIN answers at once or never, so 2 s is plenty.
LINGER_TIME = 2.0
#: Lingering close: at most this many bytes are read and discarded. Past it,
#: reading stops and the close only waits (within ``LINGER_TIME``) for the peer
#: to acknowledge our replies, so a peer that keeps sending costs no more.
LINGER_BYTES = 256 * 1024
#: Replies to the messages of one received chunk are sent together, in one
#: write, once the chunk is handled (as Netty flushes on read-complete); past
#: this many bytes they are sent early, so coalescing never grows a buffer
#: beyond one socket buffer's worth.
COALESCE_LIMIT = 65536
#: Default bound of a caller's outbox (``send_nowait``): how far a peer may fall
#: behind, in bytes waiting in user space beyond what its socket buffers took,
#: before the overflow policy applies. Memory per connection stays under it;
#: 256 KiB absorbs bursts of thousands of small fan-out messages.
DEFAULT_OUTBOX_LIMIT = 256 * 1024
#: How long a listener with ``proxy_protocol=True`` and no TLS waits for the
#: PROXY header (with TLS, the ``handshake_timeout`` applies instead). A load
#: balancer sends it at once, with the connection; 10 s is the default TLS
#: handshake timeout, the same kind of "first bytes of a connection" wait.
PROXY_HEADER_TIMEOUT = 10.0
#: Default ``max_size`` of ``read_until``: a line longer than this is an error
#: rather than a reason to buffer without end.
DEFAULT_MAX_LINE = 65536


def check_port(name: str, value: object) -> int:
    """Return ``value`` as a TCP port, or raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if not 0 <= value <= 65535:
        raise ConfigurationError(f"{name} must be between 0 and 65535, got {value}")
    return value


def check_timeout(name: str, value: object, *, allow_zero: bool = True) -> float | None:
    """Return ``value`` as a timeout in seconds (``None`` = no timeout), or raise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ConfigurationError(f"{name} must be finite, got {value!r} (use None for no timeout)")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def check_count(name: str, value: object) -> int | None:
    """Return ``value`` as a positive count (``None`` = unlimited), or raise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ConfigurationError(f"{name} must be at least 1, got {value}")
    return value


def check_host(name: str, value: object) -> str | None:
    """Return ``value`` as a host name or address (``None`` = any), or raise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    if not value:
        raise ConfigurationError(f"{name} must not be empty (use None for any interface)")
    return value


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, or raise :class:`TypeError` (``1`` is not a flag)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value
