"""Chat-room servers for the fan-out scenario: every line is relayed to every other member.

* ``trio_raw_chat``: the hand-written Trio way. Each member has a bounded
  memory channel and a writer task draining it; the reader relays each
  received chunk's complete lines to every other member's channel with
  ``send_nowait``, and a member whose channel is full is dropped (its
  connection cancelled and closed), so a member that stops reading cannot hold
  up the others.
* ``trio_tcp_chat``: trio_tcp with ``Delimited`` framing and the bounded
  per-connection outbox: ``caller.send_nowait`` queues without waiting. What
  happens when an outbox is full is the library's policy; a member whose
  ``send_nowait`` fails is dropped here.
* ``trio_tcp_chat_group``: the same with ``trio_tcp.Group``, which sends
  through every member's outbox and forgets members that have closed.
* ``trio_tcp_chat_naive``: trio_tcp awaiting ``caller.write_bytes`` for every
  member, inside the sender's ``on_bytes``. One member that never reads stalls
  every sender once its socket buffers are full: this server shows the problem
  the outbox solves.
"""

from __future__ import annotations

from typing import Any

import trio
from _serving import RECEIVE_SIZE

import trio_tcp
from trio_tcp.framing import Delimited

# Relayed chunks queued for one member before it counts as stuck and is dropped.
# A healthy member of the benchmark never has more than a few dozen queued
# (the load generator keeps a bounded number of lines in flight per sender).
OUTBOX_MESSAGES = 1024
# A member sending a longer line without a newline is dropped (the buffer's ceiling).
MAX_LINE = 65536

# -- raw trio -----------------------------------------------------------------------------


class Member:
    """One connection of the hand-written room: its outbox and what cancels it."""

    __slots__ = ("outbox", "scope")

    def __init__(self, outbox: trio.MemorySendChannel[bytes], scope: trio.CancelScope) -> None:
        self.outbox = outbox
        self.scope = scope


class RawRoom:
    """The members of the hand-written room, and the relay."""

    def __init__(self) -> None:
        self.members: set[Member] = set()

    def relay(self, lines: bytes, sender: Member) -> None:
        """Queue ``lines`` for every other member; drop those whose outbox is full."""
        stuck = []
        for member in self.members:
            if member is not sender:
                try:
                    member.outbox.send_nowait(lines)
                except trio.WouldBlock:
                    stuck.append(member)
        for member in stuck:
            self.members.discard(member)
            member.scope.cancel()

    async def handler(self, stream: trio.SocketStream) -> None:
        """A member's reader; its writer runs beside it, both under the member's scope."""
        outbox, queued = trio.open_memory_channel[bytes](OUTBOX_MESSAGES)
        member = Member(outbox, trio.CancelScope())
        self.members.add(member)
        try:
            with member.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(write_out, stream, queued, member.scope)
                    await self.read_in(stream, member)
                    member.scope.cancel()
        finally:
            self.members.discard(member)
            await trio.aclose_forcefully(stream)

    async def read_in(self, stream: trio.SocketStream, member: Member) -> None:
        """Relay the complete lines of each chunk, as one message, until EOF."""
        pending = b""
        try:
            while data := await stream.receive_some(RECEIVE_SIZE):
                pending += data
                end = pending.rfind(b"\n") + 1
                if end:
                    self.relay(pending[:end], member)
                    pending = pending[end:]
                elif len(pending) > MAX_LINE:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def write_out(
    stream: trio.SocketStream, queued: trio.MemoryReceiveChannel[bytes], scope: trio.CancelScope
) -> None:
    """Send everything queued for one member, in order; end the member if its peer is gone."""
    try:
        async for data in queued:
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        scope.cancel()


# -- trio_tcp -----------------------------------------------------------------------------


class Room(trio_tcp.Service):
    """The members of a trio_tcp room; each connection gets the chosen member service."""

    def __init__(self, member: type[ChatMember]) -> None:
        self.members: set[trio_tcp.Caller] = set()
        self._member = member

    def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.members.add(caller)
        return self._member(self.members, caller)


class ChatMember(trio_tcp.ConnectionService):
    """One line per ``on_bytes`` call; leaves the room when the connection ends."""

    framing = Delimited(b"\n")

    def __init__(self, members: set[trio_tcp.Caller], caller: trio_tcp.Caller) -> None:
        self.members = members
        self.caller = caller

    async def on_close(self) -> None:
        self.members.discard(self.caller)


class OutboxMember(ChatMember):
    """Relays with the bounded outbox: queue for every other member, never wait."""

    async def on_bytes(self, caller: trio_tcp.Caller, line: bytes) -> None:
        data = line + b"\n"
        stuck = []
        for member in self.members:
            if member is not caller:
                try:
                    member.send_nowait(data)  # type: ignore[attr-defined,unused-ignore]
                except trio_tcp.Error:
                    stuck.append(member)
        for member in stuck:
            self.members.discard(member)
            await member.aclose()


class GroupRoom(trio_tcp.Service):
    """A room that is a ``trio_tcp.Group``: members join on connect and leave on close."""

    def __init__(self) -> None:
        self.group = trio_tcp.Group()  # type: ignore[attr-defined,unused-ignore]

    def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.group.add(caller)
        return GroupMember(self.group, caller)


class GroupMember(trio_tcp.ConnectionService):
    """Relays each line to the rest of the group, framed by each member's framing."""

    framing = Delimited(b"\n")

    def __init__(self, group: Any, caller: trio_tcp.Caller) -> None:
        self.group = group
        self.caller = caller

    def on_bytes(self, line: bytes) -> None:
        self.group.send_message_nowait(line, exclude=self.caller)


class NaiveMember(ChatMember):
    """Relays by awaiting each member's write in turn: stalls behind a member that never reads."""

    async def on_bytes(self, caller: trio_tcp.Caller, line: bytes) -> None:
        data = line + b"\n"
        for member in list(self.members):
            if member is not caller:
                try:
                    await member.write_bytes(data)
                except trio_tcp.Error:
                    self.members.discard(member)
