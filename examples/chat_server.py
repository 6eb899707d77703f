"""A chat server: every line a client sends goes to every other connected client.

Each connection's task writes to the *other* callers, which is safe: writes to a
``Caller`` from any task are serialised. A client that stops reading is cut off
after a second instead of stalling everyone else::

    python examples/chat_server.py --port 3001
    nc localhost 3001        # in two or more terminals, then type

Stop it with Ctrl-C (or SIGTERM): the listener stops gracefully.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import signal

import trio

import trio_tcp
from trio_tcp.framing import Delimited

#: How long one slow reader may hold up a broadcast before it is disconnected.
SEND_TIMEOUT = 1.0


class ChatRoom(trio_tcp.Service):
    """Keeps the connected callers and relays lines between them."""

    def __init__(self) -> None:
        self.members: dict[str, trio_tcp.Caller] = {}

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.members[caller.id] = caller
        await self.broadcast(caller, f"* {caller.remote_host}:{caller.remote_port} joined")
        return Member(self, caller)

    async def broadcast(self, sender: trio_tcp.Caller, line: str) -> None:
        data = line.encode() + b"\n"
        async with trio.open_nursery() as nursery:
            for member in list(self.members.values()):
                if member is not sender:
                    nursery.start_soon(self.send, member, data)

    async def send(self, member: trio_tcp.Caller, data: bytes) -> None:
        # A write cut short by the timeout closes that member's connection:
        # it may have received half a line, so it cannot continue.
        # ConnectionClosedError: it left in the meantime, and its on_close removes it.
        with trio.move_on_after(SEND_TIMEOUT), contextlib.suppress(trio_tcp.ConnectionClosedError):
            await member.write_bytes(data)


class Member(trio_tcp.ConnectionService):
    """One participant: each line it sends is relayed to the others."""

    framing = Delimited(b"\n", max_size=4096)

    def __init__(self, room: ChatRoom, caller: trio_tcp.Caller) -> None:
        self.room = room
        self.caller = caller
        self.name = f"{caller.remote_host}:{caller.remote_port}"

    async def on_bytes(self, line: bytes) -> None:
        text = line.decode(errors="replace").rstrip("\r")
        await self.room.broadcast(self.caller, f"<{self.name}> {text}")

    async def on_close(self) -> None:
        self.room.members.pop(self.caller.id, None)
        with trio.move_on_after(SEND_TIMEOUT):
            await self.room.broadcast(self.caller, f"* {self.name} left")


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_tcp.serve, port, ChatRoom(), local_host=host)
        listener = await nursery.start(serve)
        print(f"Chat server listening on {host}:{listener.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                await listener.graceful_stop(timeout=2)
                break


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=3001, help="port, 0 for any (default: %(default)s)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    trio.run(main, args.host, args.port)
