"""The error tree and the one table that maps trio / ssl / OS failures onto it."""

from __future__ import annotations

import errno
import ssl

import pytest
import trio

import trio_tcp
from trio_tcp._errors import STREAM_ERRORS, stream_error

ERROR_TYPES = [
    trio_tcp.ConfigurationError,
    trio_tcp.BindError,
    trio_tcp.ConnectError,
    trio_tcp.TLSError,
    trio_tcp.ConnectionClosedError,
    trio_tcp.ReadTimeoutError,
    trio_tcp.WriteTimeoutError,
    trio_tcp.FramingError,
    trio_tcp.OutboxFullError,
    trio_tcp.UsageError,
]


@pytest.mark.parametrize("error_type", ERROR_TYPES, ids=lambda t: t.__name__)
def test_every_error_is_a_trio_tcp_error(error_type: type[Exception]) -> None:
    assert issubclass(error_type, trio_tcp.Error)
    assert error_type.__module__ == "trio_tcp"


@pytest.mark.parametrize(
    ("error_type", "mixin"),
    [
        (trio_tcp.ConfigurationError, ValueError),
        (trio_tcp.ReadTimeoutError, TimeoutError),
        (trio_tcp.WriteTimeoutError, TimeoutError),
    ],
    ids=["configuration-is-ValueError", "read-timeout-is-TimeoutError", "write-timeout-too"],
)
def test_stdlib_mixins(error_type: type[Exception], mixin: type[Exception]) -> None:
    assert issubclass(error_type, mixin)


def _broken(cause: BaseException) -> trio.BrokenResourceError:
    exc = trio.BrokenResourceError("broken")
    exc.__cause__ = cause
    return exc


# (what trio or the OS raised, the trio_tcp error it must become, words the message must hold)
MAPPING = [
    pytest.param(
        _broken(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")),
        trio_tcp.ConnectionClosedError,
        "reset by peer",
        id="reset",
    ),
    pytest.param(
        _broken(BrokenPipeError(errno.EPIPE, "Broken pipe")),
        trio_tcp.ConnectionClosedError,
        "reset by peer",
        id="broken-pipe",
    ),
    pytest.param(
        _broken(OSError(errno.EHOSTUNREACH, "No route to host")),
        trio_tcp.ConnectionClosedError,
        "No route to host",
        id="other-os-error",
    ),
    pytest.param(
        trio.BrokenResourceError("no cause"),
        trio_tcp.ConnectionClosedError,
        "broken",
        id="broken-without-cause",
    ),
    pytest.param(
        trio.ClosedResourceError("closed"),
        trio_tcp.ConnectionClosedError,
        "closed locally",
        id="closed-locally",
    ),
    pytest.param(
        _broken(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
        trio_tcp.TLSError,
        "without close_notify",
        id="ragged-eof",
    ),
    pytest.param(
        _broken(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")),
        trio_tcp.TLSError,
        "TLS",
        id="tls-failure",
    ),
    pytest.param(
        ssl.SSLError(1, "bare ssl error"),
        trio_tcp.TLSError,
        "TLS",
        id="bare-ssl-error",
    ),
    pytest.param(
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        trio_tcp.ConnectionClosedError,
        "reset by peer",
        id="bare-reset",
    ),
]


@pytest.mark.parametrize(("raised", "expected", "words"), MAPPING)
def test_stream_error_mapping(raised: BaseException, expected: type[Exception], words: str) -> None:
    error = stream_error(raised)
    assert type(error) is expected
    assert words in str(error)


@pytest.mark.parametrize(("raised", "expected", "words"), MAPPING)
def test_stream_error_keeps_the_cause(
    raised: BaseException, expected: type[Exception], words: str
) -> None:
    assert stream_error(raised).__cause__ is raised


def test_every_mapped_type_is_covered_by_the_table() -> None:
    covered = {type(param.values[0]) for param in MAPPING}
    for foreign in STREAM_ERRORS:
        assert any(issubclass(c, foreign) for c in covered), foreign


def test_own_errors_pass_through_unchanged() -> None:
    # ReadTimeoutError is an OSError (via TimeoutError): it must not be re-mapped.
    original = trio_tcp.ReadTimeoutError("slow")
    assert stream_error(original) is original
    assert original.__cause__ is None


@pytest.mark.parametrize(
    "raised",
    [trio.BusyResourceError("two readers"), TypeError("not bytes"), KeyboardInterrupt()],
    ids=["busy", "type-error", "keyboard-interrupt"],
)
def test_programming_errors_and_interrupts_are_not_stream_errors(raised: BaseException) -> None:
    assert not isinstance(raised, STREAM_ERRORS)


def test_misuse_is_a_runtime_error_too() -> None:
    # Python and trio report misuse as RuntimeError; catching either works.
    assert issubclass(trio_tcp.UsageError, RuntimeError)
    assert issubclass(trio_tcp.ConfigurationError, ValueError)
