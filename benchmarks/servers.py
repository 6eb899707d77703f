"""The servers under benchmark: run one by name.

Each binds 127.0.0.1 (port 0 picks a free port), prints ``listening on
127.0.0.1:PORT`` and serves until SIGTERM or SIGINT::

    python benchmarks/servers.py trio_tcp --port 0
    python benchmarks/servers.py trio_raw_tls --cert server.pem --key server.key
    python benchmarks/servers.py --list          # every kind, and which cannot run here

Echo servers (the plain scenarios; ``_echo_servers.py``, ``_transport_servers.py``):

- ``trio_tcp``: a :class:`trio_tcp.Listener` whose ``on_bytes(data)`` returns the data.
- ``trio_tcp_caller``: the same with ``on_bytes(caller, data)`` awaiting ``caller.write_bytes``.
- ``trio_tcp_idle60``, ``trio_tcp_wto60``: ``trio_tcp`` with the production settings
  ``idle_timeout=60`` and ``write_timeout=60``.
- ``trio_tcp_x_lean``, ``trio_tcp_x_sockstream``, ``trio_tcp_x_trio``: trio_tcp's
  driver through ``serve_listeners`` over its own accept path and stream, its own
  accept path and trio's ``SocketStream``, and trio's ``SocketListener``.
- ``trio_raw``: :func:`trio.serve_tcp` with a ``receive_some``/``send_all`` loop.
- ``anyio``: :func:`anyio.create_tcp_listener` and ``serve``, on the trio backend.
- ``asyncio_streams``, ``asyncio_protocol``: asyncio's streams and a ``Protocol``.
- ``trio_tcp_tls``, ``trio_raw_tls``: the TLS forms of ``trio_tcp`` and ``trio_raw``.

Line servers (``_line_servers.py``): ``trio_tcp_lines`` and ``trio_raw_lines``
answer ``PING\\n`` with ``PONG\\n``; ``trio_tcp_redis`` and ``trio_raw_redis``
answer Redis PING. Chat servers (``_chat_servers.py``): ``trio_raw_chat``,
``trio_tcp_chat``, ``trio_tcp_chat_group`` and ``trio_tcp_chat_naive`` relay
every line to every other member.

Some kinds need a trio_tcp feature that an older version lacks; they exit with
status 3 and say which (``--list`` shows it without starting anything).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import importlib
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from _chat_servers import GroupRoom, NaiveMember, OutboxMember, RawRoom, Room
from _echo_servers import (
    CallerEcho,
    EchoServer,
    raw_echo,
    raw_server_context,
    raw_tls_handler,
    run_anyio,
    serve_asyncio,
    serve_raw,
)
from _line_servers import LineServer, RedisServer, raw_lines, raw_redis
from _serving import (
    has_group,
    has_send_nowait,
    has_serve_listeners,
    listener_accepts,
    serve_trio_tcp,
)

import trio_tcp

# The exit status of a server that cannot run with this trio_tcp.
UNAVAILABLE = 3


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line a server runs with."""

    port: int
    cert: str | None = None
    key: str | None = None

    def key_pair(self) -> tuple[str, str]:
        """The certificate and key files (exit with a message without them)."""
        if self.cert is None or self.key is None:
            sys.exit("TLS servers need --cert and --key")
        return self.cert, self.key


def ready() -> None:
    """No requirement: the kind runs with any trio_tcp."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """A server: how to run it, and what it needs that this trio_tcp may lack."""

    name: str
    run: Callable[[Options], None]
    needs: Callable[[], str | None] = ready  # why it cannot run here, or None


def needs_keyword(keyword: str) -> Callable[[], str | None]:
    """A requirement: ``Listener`` takes ``keyword``."""
    return lambda: None if listener_accepts(keyword) else f"needs Listener({keyword}=...)"


def needs_transport() -> str | None:
    """A requirement: ``Listener.serve_listeners``, and the private modules the variants use."""
    if not has_serve_listeners():
        return "needs Listener.serve_listeners"
    try:
        importlib.import_module("_transport_servers")
    except ImportError as exc:
        return f"cannot import trio_tcp's transport internals ({exc})"
    return None


def needs_group() -> str | None:
    """A requirement: ``trio_tcp.Group``."""
    return None if has_group() else "needs trio_tcp.Group"


def needs_send_nowait() -> str | None:
    """A requirement: ``Caller.send_nowait`` (the bounded outbox)."""
    return None if has_send_nowait() else "needs Caller.send_nowait"


def trio_tcp_kind(
    name: str,
    service: Callable[[], trio_tcp.Service],
    *,
    setting: str | None = None,
    needs: Callable[[], str | None] = ready,
) -> Kind:
    """A kind serving ``service()`` with ``Listener.serve``, optionally with ``setting=60``."""
    options: dict[str, Any] = {setting: 60.0} if setting else {}

    def run(opts: Options) -> None:
        trio.run(functools.partial(serve_trio_tcp, service(), opts.port, **options))

    return Kind(name, run, needs_keyword(setting) if setting else needs)


def raw_kind(
    name: str, handler: Callable[[], Callable[[trio.SocketStream], Awaitable[None]]]
) -> Kind:
    """A kind serving ``handler()`` with :func:`trio.serve_tcp`."""
    return Kind(name, lambda opts: trio.run(serve_raw, handler(), opts.port))


def over_kind(name: str) -> Kind:
    """A kind serving trio_tcp's echo through ``serve_listeners`` (``_transport_servers``).

    That module is imported only when one of these runs, since it imports
    private trio_tcp modules whose layout may change.
    """

    def run(opts: Options) -> None:
        importlib.import_module("_transport_servers").run(name, opts.port)

    return Kind(name, run, needs_transport)


def run_trio_tcp_tls(opts: Options) -> None:
    """``trio_tcp`` with a ``ListenerSecureSocket``."""
    cert, key = opts.key_pair()
    tls = trio_tcp.ListenerSecureSocket(key=trio_tcp.CertKey(cert_file=cert, key_file=key))
    trio.run(functools.partial(serve_trio_tcp, EchoServer(), opts.port, secure_socket=tls))


def run_raw_tls(opts: Options) -> None:
    """``trio_raw`` over ``trio.SSLStream``."""
    trio.run(serve_raw, raw_tls_handler(raw_server_context(*opts.key_pair())), opts.port)


KINDS = {
    kind.name: kind
    for kind in (
        trio_tcp_kind("trio_tcp", EchoServer),
        trio_tcp_kind("trio_tcp_caller", lambda: EchoServer(CallerEcho)),
        trio_tcp_kind("trio_tcp_idle60", EchoServer, setting="idle_timeout"),
        trio_tcp_kind("trio_tcp_wto60", EchoServer, setting="write_timeout"),
        over_kind("trio_tcp_x_lean"),
        over_kind("trio_tcp_x_sockstream"),
        over_kind("trio_tcp_x_trio"),
        raw_kind("trio_raw", lambda: raw_echo),
        Kind("anyio", lambda opts: run_anyio(opts.port)),
        Kind("asyncio_streams", lambda opts: asyncio.run(serve_asyncio(opts.port, False))),
        Kind("asyncio_protocol", lambda opts: asyncio.run(serve_asyncio(opts.port, True))),
        Kind("trio_tcp_tls", run_trio_tcp_tls),
        Kind("trio_raw_tls", run_raw_tls),
        trio_tcp_kind("trio_tcp_lines", LineServer),
        raw_kind("trio_raw_lines", lambda: raw_lines),
        trio_tcp_kind("trio_tcp_redis", RedisServer),
        raw_kind("trio_raw_redis", lambda: raw_redis),
        raw_kind("trio_raw_chat", lambda: RawRoom().handler),
        trio_tcp_kind("trio_tcp_chat", lambda: Room(OutboxMember), needs=needs_send_nowait),
        trio_tcp_kind("trio_tcp_chat_group", GroupRoom, needs=needs_group),
        trio_tcp_kind("trio_tcp_chat_naive", lambda: Room(NaiveMember)),
    )
}


def unavailable(name: str) -> str | None:
    """Why the server ``name`` cannot run with this trio_tcp, or None if it can."""
    return KINDS[name].needs()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments: the kind, the port and the TLS files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=list(KINDS))
    parser.add_argument("--port", type=int, default=0, help="port, 0 for any (default: 0)")
    parser.add_argument("--cert", help="PEM certificate chain (TLS kinds)")
    parser.add_argument("--key", help="PEM private key (TLS kinds)")
    parser.add_argument("--list", action="store_true", help="list the kinds and exit")
    args = parser.parse_args(argv)
    if not args.list and args.kind is None:
        parser.error("a kind is required (or --list)")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one server until a signal stops it; 3 if this trio_tcp cannot run it."""
    args = parse_args(argv)
    if args.list:
        for name in KINDS:
            print(f"{name:<24} {unavailable(name) or 'available'}")
        return 0
    reason = unavailable(args.kind)
    if reason is not None:
        print(f"{args.kind}: {reason}", file=sys.stderr)
        return UNAVAILABLE
    KINDS[args.kind].run(Options(args.port, args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
