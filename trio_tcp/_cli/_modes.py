"""The built-in services of ``trio-tcp serve`` (echo, discard, chat), which log every connection.

Each connection gets two lines in the log::

    12:00:01 [4242] INFO connect 127.0.0.1:53122 (#3)
    12:00:03 [4242] INFO close 127.0.0.1:53122 (#3) after 2.1 s, 10 B in, 10 B out

The byte counts are wire bytes (framing included), counted only once a read
returned them or a write completed, so per-connection lines add up to the
summary the command prints at the end. A connection that ended before any
byte was exchanged (a load balancer's health check, a port scan) is not an
error: its close, and any reset that ended it, are logged at DEBUG only.
"""

from __future__ import annotations

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

#: How long a chat broadcast waits for one slow member before cutting it off
#: (the write is abandoned, which closes that member's connection).
CHAT_SEND_TIMEOUT = 1.0


class ModeServer(trio_tcp.Service):
    """Numbers and logs every connection, and gives it the mode's connection service."""

    def __init__(self, mode: str, framing: str | None) -> None:
        self.mode = mode
        self.framing: Framing | None = None if framing is None else FRAMINGS[framing]()
        self.accepted = 0
        #: Chat members, by caller id.
        self.members: dict[str, _Chat] = {}

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.accepted += 1
        connection = _CONNECTIONS[self.mode](self, caller, self.accepted)
        tls = f", {caller.tls_version} {caller.cipher}" if caller.is_secure else ""
        log.info("connect %s%s", connection.name, tls)
        return connection


class _Connection(trio_tcp.ConnectionService):
    """Counts and logs one connection; the subclasses say what happens to the bytes."""

    def __init__(self, server: ModeServer, caller: trio_tcp.Caller, number: int) -> None:
        self.server = server
        self.caller = caller
        self.framing = server.framing
        self.name = f"{endpoint(caller.remote_host, caller.remote_port)} (#{number})"
        self.started = trio.current_time()
        self.received = self.sent = 0

    def wire_size(self, message: bytes) -> int:
        """What ``message`` takes on the wire: with framing, its delimiter or length prefix too."""
        return len(message) if self.framing is None else len(self.framing.encode(message))

    async def send(self, data: bytes) -> None:
        """Write ``data`` (a message, with framing) and count it once it is written."""
        if self.framing is None:
            await self.caller.write_bytes(data)
        else:
            await self.caller.write_message(data)
        self.sent += self.wire_size(data)

    @property
    def exchanged(self) -> bool:
        """Whether any byte went either way: without one, it was a probe, not a client."""
        return bool(self.received or self.sent)

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
            self.name, elapsed, format_bytes(self.received), format_bytes(self.sent),
        )  # fmt: skip


class _Echo(_Connection):
    async def on_bytes(self, data: bytes) -> None:
        self.received += self.wire_size(data)
        await self.send(data)


class _Discard(_Connection):
    async def on_bytes(self, data: bytes) -> None:
        self.received += self.wire_size(data)


class _Chat(_Connection):
    def __init__(self, server: ModeServer, caller: trio_tcp.Caller, number: int) -> None:
        super().__init__(server, caller, number)
        server.members[caller.id] = self

    async def on_bytes(self, data: bytes) -> None:
        self.received += self.wire_size(data)
        # The simple fan-out: one write per member, all awaited, each cut off
        # after CHAT_SEND_TIMEOUT. A sender waits for its slowest reader (up to
        # that timeout); a bounded per-member outbox would let it go on at once.
        async with trio.open_nursery() as nursery:
            for member in list(self.server.members.values()):
                if member is not self:
                    nursery.start_soon(member.relay, data)

    async def relay(self, data: bytes) -> None:
        """Send another member's message; a slow or gone reader is dropped, not waited for."""
        # Cut short, the write closes this member's connection: a slow reader
        # is dropped rather than allowed to stall everyone's messages.
        with trio.move_on_after(CHAT_SEND_TIMEOUT):
            try:
                await self.send(data)
            except trio_tcp.ConnectionClosedError:
                return  # it left meanwhile; its on_close removes it

    async def on_close(self) -> None:
        self.server.members.pop(self.caller.id, None)
        await super().on_close()


_CONNECTIONS: dict[str, type[_Connection]] = {"echo": _Echo, "discard": _Discard, "chat": _Chat}
