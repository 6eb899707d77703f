"""The trio_tcp error tree, and the one place where foreign exceptions become it.

::

    Error                          every error trio_tcp raises
    ├── ConfigurationError         a bad setting (also a ValueError)
    ├── BindError                  a listener could not bind its port
    ├── ConnectError               a client could not reach its peer
    ├── TLSError                   handshake, trust or TLS record failure
    ├── ConnectionClosedError      end of stream, reset, or closed locally
    ├── ReadTimeoutError           no byte arrived in time (also a TimeoutError)
    ├── WriteTimeoutError          a write did not finish in time (also a TimeoutError)
    └── FramingError               a message broke the framing rules or a size limit

The exception that caused an error is always kept as ``__cause__``.
Programming errors are *not* mapped: a ``TypeError`` for a wrong argument type,
or :class:`trio.BusyResourceError` for two tasks reading at once, stay what
they are, and so do :class:`trio.Cancelled` and :class:`KeyboardInterrupt`.
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import trio

__all__ = [
    "BindError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "Error",
    "FramingError",
    "ReadTimeoutError",
    "TLSError",
    "WriteTimeoutError",
    "map_stream_errors",
    "stream_error",
]


class Error(Exception):
    """Base class of every error raised by trio_tcp."""


class ConfigurationError(Error, ValueError):
    """A configuration value is wrong; the message names it."""


class BindError(Error):
    """A listener could not bind its address (in use, not local, no permission)."""


class ConnectError(Error):
    """A client could not connect: refused, unreachable, unknown host, bad ``local_host``."""


class TLSError(Error):
    """The TLS layer failed: handshake, certificate trust, version, cipher or a truncated stream."""


class ConnectionClosedError(Error):
    """The connection is over: the peer closed or reset it, or it was closed locally."""


class ReadTimeoutError(Error, TimeoutError):
    """No byte arrived within the read timeout. The connection stays usable."""


class WriteTimeoutError(Error, TimeoutError):
    """A write did not complete within the write timeout. The connection is closed."""


class FramingError(Error):
    """Input or output broke the framing rules, or went over a size limit."""


# Errno values that mean "the peer went away", reported as a reset rather than
# as a generic I/O failure so logs say who ended the connection.
_PEER_GONE = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT})


def stream_error(exc: BaseException) -> Error:
    """Translate an exception raised by a trio stream operation into an :class:`Error`.

    The caller raises the result ``from exc``. This is the single table that
    decides which trio_tcp error a stream failure becomes:

    ==================================================  =========================
    raised by trio / the OS                             becomes
    ==================================================  =========================
    ``BrokenResourceError`` caused by ``ssl.SSLError``  :class:`TLSError`
    ``BrokenResourceError`` (reset, broken pipe, …)     :class:`ConnectionClosedError`
    ``ClosedResourceError`` (we closed it)              :class:`ConnectionClosedError`
    ``ssl.SSLError``                                    :class:`TLSError`
    ``OSError``                                         :class:`ConnectionClosedError`
    an :class:`Error` already                           itself
    ==================================================  =========================
    """
    if isinstance(exc, Error):
        return exc
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLError):
        reason = getattr(cause, "reason", None) or cause.__class__.__name__
        if isinstance(cause, ssl.SSLEOFError):
            return TLSError(f"TLS peer closed the connection without close_notify ({reason})")
        return TLSError(f"TLS failure: {reason}")
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionClosedError("connection already closed (closed locally)")
    if isinstance(cause, OSError):
        if cause.errno in _PEER_GONE:
            return ConnectionClosedError(f"connection reset by peer ({cause.strerror})")
        return ConnectionClosedError(f"connection failed: {cause.strerror or cause}")
    if isinstance(exc, trio.BrokenResourceError):
        return ConnectionClosedError("connection broken")
    raise TypeError(f"not a stream error: {exc!r}")  # pragma: no cover - guarded by callers


# What the stream-level helpers catch and translate. BusyResourceError is
# deliberately absent: two tasks using one stream is a programming error.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)


@contextmanager
def map_stream_errors() -> Iterator[None]:
    """Re-raise stream failures as :class:`Error` subclasses, cause attached."""
    try:
        yield
    except Error:
        raise  # already ours (ReadTimeoutError is an OSError too, via TimeoutError)
    except STREAM_ERRORS as exc:
        raise stream_error(exc) from exc
