"""What the ``trio-tcp`` sub-commands share: argument types, TLS options, small formatters.

Like every ``_cli*`` module, this one uses the library only through its public
API (``trio_tcp`` and ``trio_tcp.framing``), as any user's program would.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import trio_tcp

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "CommandError",
    "UsageError",
    "add_client_tls_arguments",
    "client_secure_socket",
    "count",
    "describe",
    "endpoint",
    "exception_leaves",
    "format_bytes",
    "parse_size",
    "port",
    "positive_seconds",
    "read_password",
    "say",
    "seconds",
    "wants_client_tls",
]

#: The largest ``--size``: one message is held in memory several times over
#: (payload, TLS buffers, the echo), so a typo like ``--size 64G`` must fail.
MAX_SIZE = 64 * 1024 * 1024

_SIZE = re.compile(r"(\d+)\s*(|b|k|kb|kib|m|mb|mib)", re.IGNORECASE)
_KIB, _MIB = 1024, 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": _KIB, "kb": _KIB, "kib": _KIB, "m": _MIB, "mb": _MIB, "mib": _MIB}


class UsageError(Exception):
    """Arguments that parse but do not fit together: exit status 2, like argparse's errors."""


class CommandError(Exception):
    """A failure the command explains in one line on stderr, with its own exit status.

    For what is neither a network condition nor an argument argparse can
    check: an ``APP`` that cannot be loaded (status 2), an inherited socket
    that is not a listening one (status 1), a server that speaks TLS to a
    plain client.
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- argument types (argparse turns their ValueError into a one-line usage error) ------


def port(text: str) -> int:
    """A TCP port number, 0 to 65535."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(text)
    return value


def count(text: str) -> int:
    """A whole number, at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def seconds(text: str) -> float:
    """Zero or more seconds; ``inf`` is allowed where waiting forever makes sense."""
    value = float(text)
    if math.isnan(value) or value < 0:
        raise ValueError(text)
    return value


def positive_seconds(text: str) -> float:
    """More than zero seconds, finite."""
    value = float(text)
    if not 0 < value < math.inf:
        raise ValueError(text)
    return value


def parse_size(text: str) -> int:
    """Bytes, optionally with a 1024-based suffix: ``64``, ``1K``, ``16KiB``, ``4M``.

    Raises:
        ValueError: not a size, zero, or above :data:`MAX_SIZE`.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    value = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(f"size must be between 1 B and {MAX_SIZE // 1024**2} MiB: {text!r}")
    return value


# Names shown in argparse's "invalid <name> value" messages.
port.__name__ = "port"
count.__name__ = "count"
seconds.__name__ = "seconds"
positive_seconds.__name__ = "seconds"
parse_size.__name__ = "size"


# -- client TLS options (connect, bench) -------------------------------------------------


def add_client_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--tls``, ``--cafile``, ``--cert``/``--key`` and ``--server-name``."""
    group = parser.add_argument_group("TLS (any of these options turns TLS on)")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument(
        "--cafile",
        metavar="FILE",
        help="PEM file of the CA (or server certificate) to trust; default: the system CAs",
    )
    group.add_argument("--cert", metavar="FILE", help="client certificate (PEM) for mutual TLS")
    group.add_argument("--key", metavar="FILE", help="private key (PEM) of --cert")
    group.add_argument(
        "--server-name",
        metavar="NAME",
        help="name to send (SNI) and to check in the certificate; default: HOST",
    )


def wants_client_tls(args: argparse.Namespace) -> bool:
    """Whether the options ask for TLS; a lone --cert or --key is a :class:`UsageError`."""
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    return bool(args.tls or args.cafile or args.cert or args.server_name)


def client_secure_socket(args: argparse.Namespace) -> trio_tcp.ClientSecureSocket | None:
    """The client's TLS settings from the options, or ``None`` for plain TCP."""
    if not wants_client_tls(args):
        return None
    key = None
    if args.cert is not None:
        key = trio_tcp.CertKey(cert_file=args.cert, key_file=args.key)
    return trio_tcp.ClientSecureSocket(cert=args.cafile, key=key, server_name=args.server_name)


def read_password(path: str) -> str:
    """The first line of a password file (so ``echo secret > file`` works)."""
    text = Path(path).read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""


# -- output --------------------------------------------------------------------------------


def endpoint(host: str | None, port: int | None) -> str:
    """``127.0.0.1:3000``, ``[::1]:3000``, or ``*:3000`` for every interface."""
    if host is None:
        host = "*"
    elif ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


def format_bytes(size: float) -> str:
    """``512 B``, ``12.3 KiB``, ``4.0 MiB``, ``1.2 GiB``: short, for logs and summaries."""
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def say(*parts: object) -> None:
    """Print a status line to stderr (stdout may be data: ``connect``, ``bench --json``)."""
    print(*parts, file=sys.stderr, flush=True)


def exception_leaves(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` itself, or every exception inside it if it is a group (nurseries make them)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from exception_leaves(inner)
    else:
        yield exc


def describe(exc: BaseException) -> str:
    """One line for a runtime error: an ``OSError``'s reason without its errno, else ``str``."""
    if isinstance(exc, OSError) and not isinstance(exc, trio_tcp.Error) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__
