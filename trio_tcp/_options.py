"""A listener's options, declared once: their names and types, defaults and checks.

:class:`ListenerOptions` is what a user passes (``Listener(3000, idle_timeout=60)``,
``trio_tcp.serve(...)``, ``trio_tcp.testing.open_service_client(...)`` all take
the same keywords); :class:`ListenerConfig` is the validated, frozen result
every connection of the listener reads. A test pins that the two name the
same options, so they cannot drift apart.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from ._config import (
    DEFAULT_OUTBOX_LIMIT,
    check_count,
    check_flag,
    check_host,
    check_timeout,
)
from ._errors import ConfigurationError
from ._trust import TrustedProxies, TrustedSource, parse_trusted_proxies

if TYPE_CHECKING:
    from ._tls import ListenerSecureSocket

__all__ = [
    "ListenerConfig",
    "ListenerOptions",
    "OutboxPolicy",
    "UntrustedPolicy",
    "check_reuse_port",
]

#: What happens to a connection from outside ``trusted_proxies``.
UntrustedPolicy = Literal["refuse", "direct"]
#: What happens when a caller's outbox would go over ``outbox_limit``.
OutboxPolicy = Literal["close", "raise"]


class ListenerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`~trio_tcp.Listener` (and :func:`~trio_tcp.serve`).

    Every option is described on :class:`~trio_tcp.Listener`.
    """

    local_host: str | None
    secure_socket: ListenerSecureSocket | ssl.SSLContext | None
    backlog: int | None
    max_connections: int | None
    idle_timeout: float | None
    write_timeout: float | None
    proxy_protocol: bool
    trusted_proxies: Sequence[TrustedSource] | None
    untrusted_proxy: UntrustedPolicy
    reuse_port: bool
    outbox_limit: int
    outbox_overflow: OutboxPolicy


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfig:
    """The validated options of one listener; shared by all its connections, never copied."""

    local_host: str | None = None
    secure_socket: ListenerSecureSocket | ssl.SSLContext | None = None
    backlog: int | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None
    write_timeout: float | None = None
    proxy_protocol: bool = False
    trusted_proxies: TrustedProxies | None = None
    untrusted_proxy: UntrustedPolicy = "refuse"
    reuse_port: bool = False
    outbox_limit: int = DEFAULT_OUTBOX_LIMIT
    outbox_overflow: OutboxPolicy = "close"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ListenerConfig:
        """Check every option and return the config.

        Raises:
            ConfigurationError: a value out of range.
            TypeError: a value of the wrong type, or an unknown option.
        """
        unknown = options.keys() - _NAMES
        if unknown:
            raise TypeError(f"unknown listener option(s): {', '.join(sorted(unknown))}")
        proxy_protocol = check_flag("proxy_protocol", options.get("proxy_protocol", False))
        trusted = options.get("trusted_proxies")
        if trusted is not None and not proxy_protocol:
            raise ConfigurationError(
                "trusted_proxies is set but proxy_protocol is False: it would never be used"
            )
        return cls(
            local_host=check_host("local_host", options.get("local_host")),
            secure_socket=_check_secure_socket(options.get("secure_socket")),
            backlog=check_count("backlog", options.get("backlog")),
            max_connections=check_count("max_connections", options.get("max_connections")),
            idle_timeout=check_timeout(
                "idle_timeout", options.get("idle_timeout"), allow_zero=False
            ),
            write_timeout=check_timeout(
                "write_timeout", options.get("write_timeout"), allow_zero=False
            ),
            proxy_protocol=proxy_protocol,
            trusted_proxies=None if trusted is None else parse_trusted_proxies(trusted),
            untrusted_proxy=_check_choice(
                "untrusted_proxy", options.get("untrusted_proxy", "refuse"), ("refuse", "direct")
            ),
            reuse_port=check_reuse_port(check_flag("reuse_port", options.get("reuse_port", False))),
            outbox_limit=_check_size(
                "outbox_limit", options.get("outbox_limit", DEFAULT_OUTBOX_LIMIT)
            ),
            outbox_overflow=_check_choice(
                "outbox_overflow", options.get("outbox_overflow", "close"), ("close", "raise")
            ),
        )

    @property
    def handshake_timeout(self) -> float | None:
        """The TLS handshake limit: the secure socket's, or the default for a ready context."""
        from ._tls import DEFAULT_HANDSHAKE_TIMEOUT, ListenerSecureSocket

        secure_socket = self.secure_socket
        if isinstance(secure_socket, ListenerSecureSocket):
            return secure_socket.handshake_timeout
        return DEFAULT_HANDSHAKE_TIMEOUT


_NAMES = frozenset(field.name for field in fields(ListenerConfig))


def _check_secure_socket(value: object) -> ListenerSecureSocket | ssl.SSLContext | None:
    from ._tls import ListenerSecureSocket

    if value is None or isinstance(value, ListenerSecureSocket):
        return value
    if isinstance(value, ssl.SSLContext):
        if value.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ConfigurationError(
                "secure_socket is a client-side ssl.SSLContext (PROTOCOL_TLS_CLIENT); a listener"
                " needs a server-side one, e.g. ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)"
            )
        return value  # otherwise the user's own context is used as it is
    raise TypeError(
        "secure_socket must be a ListenerSecureSocket, an ssl.SSLContext or None,"
        f" got {type(value).__name__}"
    )


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> Any:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if value not in choices:
        allowed = " or ".join(repr(choice) for choice in choices)
        raise ConfigurationError(f"{name} must be {allowed}, got {value!r}")
    return value


def _check_size(name: str, value: object) -> int:
    count = check_count(name, value)
    if count is None:
        raise TypeError(f"{name} must be an int (bytes), got None")
    return count


def check_reuse_port(value: bool) -> bool:
    """Refuse ``reuse_port=True`` where the system has no ``SO_REUSEPORT`` (Windows)."""
    import socket

    if value and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError(
            f"reuse_port=True is not supported on this platform ({sys.platform}: no SO_REUSEPORT)"
        )
    return value
