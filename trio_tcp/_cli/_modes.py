"""The built-in services of ``trio-tcp serve`` (echo, discard, chat), which log every connection.

Each connection gets two lines in the log::

    12:00:01 [4242] INFO connect 127.0.0.1:53122 (#3)
    12:00:03 [4242] INFO close 127.0.0.1:53122 (#3) after 2.1 s, 10 B in, 10 B out

The byte counts are the caller's own (``caller.bytes_received`` and
``bytes_sent``: what was actually read and written, framing included), the
ones the listener's summary adds up, so the lines and the summary agree. A
connection that ended before any byte was exchanged (a load balancer's health
check, a port scan) is not an error: its close, and any reset that ended it,
are logged at DEBUG only, and so is the connect of a PROXY ``LOCAL`` header
(the load balancer's own check).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

import trio_tcp
from trio_tcp.framing import Delimited, Framing, LengthPrefixed

from ._log import log
from ._options import endpoint, format_bytes

__all__ = ["FRAMINGS", "MODES", "ModeServer"]

MODES = ("echo", "discard", "chat")

FRAMINGS: dict[str, Callable[[], Framing]] = {
    "lines": lambda: Delimited(b"\n"),
    "length4": lambda: LengthPrefixed(4),
}


class ModeServer(trio_tcp.Service):
    """Numbers and logs every connection, and gives it the mode's connection service."""

    def __init__(self, mode: str, framing: str | None) -> None:
        self.mode = mode
        self.framing: Framing | None = None if framing is None else FRAMINGS[framing]()
        self.accepted = 0
        #: Chat members: a message goes to each one's outbox, never waiting for a slow reader.
        self.room = trio_tcp.Group()

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.accepted += 1
        connection = _CONNECTIONS[self.mode](self, caller, self.accepted)
        tls = f", {caller.tls_version} {caller.cipher}" if caller.is_secure else ""
        check = caller.proxy is not None and caller.proxy.command == "LOCAL"
        log.log(logging.DEBUG if check else logging.INFO, "connect %s%s", connection.name, tls)
        return connection


class _Connection(trio_tcp.ConnectionService):
    """Logs one connection; the subclasses say what happens to the bytes."""

    def __init__(self, server: ModeServer, caller: trio_tcp.Caller, number: int) -> None:
        self.server = server
        self.caller = caller
        self.framing = server.framing
        self.name = f"{endpoint(caller.remote_host, caller.remote_port)} (#{number})"
        self.started = trio.current_time()

    @property
    def exchanged(self) -> bool:
        """Whether any byte went either way: without one, it was a probe, not a client."""
        return bool(self.caller.bytes_received or self.caller.bytes_sent)

    async def on_error(self, err: trio_tcp.Error) -> None:
        if self.exchanged:
            log.info("error %s: %s", self.name, err)
        else:
            log.debug("error %s before any data: %s", self.name, err)

    async def on_close(self) -> None:
        elapsed = trio.current_time() - self.started
        if not self.exchanged:
            log.debug("close %s after %.1f s, no data", self.name, elapsed)
            return
        log.info(
            "close %s after %.1f s, %s in, %s out",
            self.name, elapsed,
            format_bytes(self.caller.bytes_received), format_bytes(self.caller.bytes_sent),
        )  # fmt: skip


class _Echo(_Connection):
    async def on_bytes(self, data: bytes) -> bytes:
        return data


class _Discard(_Connection):
    async def on_bytes(self, data: bytes) -> None:
        pass


class _Chat(_Connection):
    def __init__(self, server: ModeServer, caller: trio_tcp.Caller, number: int) -> None:
        super().__init__(server, caller, number)
        server.room.add(caller)  # it leaves by itself when its connection ends

    async def on_bytes(self, data: bytes) -> None:
        # Queued for each member: a member that stops reading is closed when
        # its outbox overflows, and never delays the sender or the others.
        if self.framing is None:
            self.server.room.send_nowait(data, exclude=self.caller)
        else:
            self.server.room.send_message_nowait(data, exclude=self.caller)


_CONNECTIONS: dict[str, type[_Connection]] = {"echo": _Echo, "discard": _Discard, "chat": _Chat}
