"""trio_tcp: structured-concurrency TCP clients and listeners for Trio.

A :class:`Client` writes and reads bytes; a :class:`Listener` hands every
accepted connection to a service's ``on_connect`` / ``on_bytes`` /
``on_error`` / ``on_close`` callbacks, each connection in its own task inside
a nursery the caller owns. TLS works on both sides; :mod:`trio_tcp.framing`
turns chunks into messages.
"""

from __future__ import annotations

# Imported so that ``trio_tcp.framing.Delimited`` works after a plain ``import trio_tcp``.
from . import framing as framing
from ._bind import open_tcp_listeners
from ._caller import Caller, Group
from ._client import Client
from ._errors import (
    BindError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    Error,
    FramingError,
    OutboxFullError,
    ReadTimeoutError,
    TLSError,
    UsageError,
    WriteTimeoutError,
)
from ._listener import Listener, serve
from ._options import ListenerOptions
from ._proxy import ProxyInfo
from ._service import ConnectionService, Service
from ._stats import ListenerStats
from ._tls import (
    CertKey,
    ClientSecureSocket,
    KeyStore,
    ListenerSecureSocket,
    TLSProtocol,
    TrustStore,
)

__version__ = "0.1.0"

__all__ = [
    # connections
    "Client",
    "Listener",
    "ListenerOptions",
    "ListenerStats",
    "open_tcp_listeners",
    "serve",
    # services
    "Caller",
    "ConnectionService",
    "Group",
    "ProxyInfo",
    "Service",
    # TLS
    "CertKey",
    "ClientSecureSocket",
    "KeyStore",
    "ListenerSecureSocket",
    "TLSProtocol",
    "TrustStore",
    # framing (trio_tcp.framing.Delimited, LengthPrefixed, ...)
    "framing",
    # errors
    "Error",
    "BindError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "FramingError",
    "OutboxFullError",
    "ReadTimeoutError",
    "TLSError",
    "UsageError",
    "WriteTimeoutError",
]

# Public objects say where users import them from, in reprs and tracebacks.
for _name in __all__:
    _obj = globals()[_name]
    if not isinstance(_obj, type(framing)) and _obj.__module__.startswith("trio_tcp._"):
        _obj.__module__ = "trio_tcp"
del _name, _obj
