"""Shared validators: wrong types are TypeErrors, bad values ConfigurationErrors."""

from __future__ import annotations

import math

import pytest

import trio_tcp
from trio_tcp._config import check_count, check_host, check_port, check_timeout


@pytest.mark.parametrize("port", [0, 1, 3000, 65535])
def test_good_ports(port: int) -> None:
    assert check_port("port", port) == port


@pytest.mark.parametrize(
    ("port", "error"),
    [
        (70000, trio_tcp.ConfigurationError),
        (65536, trio_tcp.ConfigurationError),
        (-1, trio_tcp.ConfigurationError),
        ("80", TypeError),
        (True, TypeError),
        (1.5, TypeError),
        (None, TypeError),
    ],
    ids=repr,
)
def test_bad_ports(port: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="port"):
        check_port("port", port)


@pytest.mark.parametrize(("value", "expected"), [(None, None), (0, 0.0), (1, 1.0), (0.25, 0.25)])
def test_good_timeouts(value: object, expected: float | None) -> None:
    assert check_timeout("timeout", value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, trio_tcp.ConfigurationError),
        (-0.001, trio_tcp.ConfigurationError),
        (math.nan, trio_tcp.ConfigurationError),
        (math.inf, trio_tcp.ConfigurationError),
        ("3", TypeError),
        (True, TypeError),
    ],
    ids=repr,
)
def test_bad_timeouts(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        check_timeout("timeout", value)


def test_zero_timeout_can_be_refused() -> None:
    with pytest.raises(trio_tcp.ConfigurationError, match="more than zero"):
        check_timeout("idle_timeout", 0, allow_zero=False)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="between 0 and 65535"):
        check_port("local_port", 70000)


@pytest.mark.parametrize(("value", "error"), [(0, trio_tcp.ConfigurationError), ("2", TypeError)])
def test_bad_counts(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_connections"):
        check_count("max_connections", value)


def test_counts() -> None:
    assert check_count("backlog", None) is None
    assert check_count("backlog", 5) == 5


def test_hosts() -> None:
    assert check_host("local_host", None) is None
    assert check_host("local_host", "::1") == "::1"
    with pytest.raises(trio_tcp.ConfigurationError, match="empty"):
        check_host("local_host", "")
    with pytest.raises(TypeError, match="local_host"):
        check_host("local_host", b"127.0.0.1")
