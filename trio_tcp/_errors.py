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

The exception that caused an error is always kept as ``__cause__``.

Who is at fault decides the type. A peer or the network: the I/O errors above.
The caller, with a value of the right type that is out of range:
:class:`ConfigurationError` (a :class:`ValueError` too). The caller, with a
call the object's *state* does not allow (a second service attached, a
listener served twice): :class:`UsageError`, also a :class:`RuntimeError`, as
Python and trio report such misuse. A wrong argument *type* stays a plain
:class:`TypeError`, and two tasks reading at once stay
:class:`trio.BusyResourceError`, as trio raises it; :class:`trio.Cancelled`
and :class:`KeyboardInterrupt` are never touched.
"""

from __future__ import annotations

import errno
import ssl

import trio

__all__ = [
    "BindError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "Error",
    "FramingError",
    "OutboxFullError",
    "ReadTimeoutError",
    "TLSError",
    "UsageError",
    "WriteTimeoutError",
    "handshake_error",
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


class OutboxFullError(Error):
    """A caller's outbox went over its limit: the peer does not read fast enough.

    Raised by :meth:`Caller.send_nowait` under the ``"raise"`` overflow policy;
    under ``"close"`` (the default) the slow peer's connection is closed and
    its ``on_error`` gets this error.
    """


class UsageError(Error, RuntimeError):
    """The call is not allowed in the object's current state (a programming error).

    For example attaching a second service, serving a listener that is
    already serving, or ``write_message`` without a framing.
    """


# Errno values that mean "the peer went away", reported as a reset rather than
# as a generic I/O failure so logs say who ended the connection.
_PEER_GONE = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT})


def stream_error(exc: BaseException) -> Error:
    """Translate an exception raised by a trio stream operation into an :class:`Error`.

    The result has ``exc`` as its ``__cause__`` already (raise it ``from exc``
    all the same, for readers). This is the single table that decides which
    trio_tcp error a stream failure becomes:

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
    error = _translate(exc)
    error.__cause__ = exc
    return error


def _translate(exc: BaseException) -> Error:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLError):
        return _tls_error(cause)
    if isinstance(exc, trio.ClosedResourceError):
        return ConnectionClosedError("connection already closed (closed locally)")
    if isinstance(cause, OSError):
        if cause.errno in _PEER_GONE:
            return ConnectionClosedError(f"connection reset by peer ({cause.strerror})")
        return ConnectionClosedError(f"connection failed: {cause.strerror or cause}")
    if isinstance(exc, trio.BrokenResourceError):
        return ConnectionClosedError("connection broken")
    raise TypeError(f"not a stream error: {exc!r}")  # pragma: no cover - guarded by callers


def handshake_error(exc: BaseException) -> TLSError:
    """Translate an exception raised by a TLS handshake: always a :class:`TLSError`.

    A handshake that ends because the peer closed or reset the connection is
    still a failed handshake, and says so (not "closed without close_notify",
    which is about truncated data).
    """
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLEOFError):
        error = TLSError("the peer closed the connection during the TLS handshake")
    else:
        translated = stream_error(exc)
        if isinstance(translated, TLSError):
            return translated
        error = TLSError(f"{translated} during the TLS handshake")
    error.__cause__ = exc
    return error


# OpenSSL reason codes a user meets on a failed handshake, said in words.
# The code itself stays in the message, so it can still be searched for.
# "the peer ..." lines come from an alert the other side sent.
_TLS_REASONS = {
    "UNSUPPORTED_PROTOCOL": "no TLS version in common",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer refused the TLS version: no version in common",
    "NO_SHARED_CIPHER": "no cipher suite in common",
    "NO_CIPHERS_AVAILABLE": "no cipher suite available for the TLS versions allowed",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the peer aborted the handshake (no cipher suite in common, "
        "or it requires a client certificate)"
    ),
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client sent no certificate, but one is required",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (
        "the server requires a client certificate, and none was sent"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust this side's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected this side's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer rejected this side's certificate as expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer rejected this side's certificate",
    "TLSV1_ALERT_DECRYPT_ERROR": "the peer could not verify this side's handshake signature",
    "WRONG_VERSION_NUMBER": "the peer does not speak TLS (or sent garbage)",
    "HTTP_REQUEST": "the peer sent a plain HTTP request, not TLS",
    "UNEXPECTED_MESSAGE": "the peer broke the TLS protocol (unexpected message)",
}


def _tls_error(cause: ssl.SSLError) -> TLSError:
    """Word a TLS failure so the message says what went wrong, not only OpenSSL's code."""
    reason = getattr(cause, "reason", None) or type(cause).__name__
    if isinstance(cause, ssl.SSLEOFError):
        return TLSError(f"TLS peer closed the connection without close_notify ({reason})")
    if isinstance(cause, ssl.SSLCertVerificationError):
        # verify_message is OpenSSL's own words: "certificate has expired",
        # "Hostname mismatch, certificate is not valid for 'x'.", ...
        detail = getattr(cause, "verify_message", None) or reason
        return TLSError(f"TLS certificate verification failed: {detail}")
    explained = _TLS_REASONS.get(reason)
    if explained is not None:
        return TLSError(f"TLS failure: {explained} ({reason})")
    return TLSError(f"TLS failure: {reason}")


# What the stream-level helpers catch and translate. BusyResourceError is
# deliberately absent: two tasks using one stream is a programming error.
STREAM_ERRORS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)
