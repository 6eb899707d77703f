"""A chat server: every line a client sends goes to every other connected client.

The room is a ``trio_tcp.Group``: a line is queued in each member's outbox and
the sender goes on at once, so a client that stops reading never holds up the
others. Once more than the listener's ``outbox_limit`` (256 KiB) waits for
it, that client is disconnected. A client silent in a quiet room for
``IDLE_TIMEOUT`` is disconnected too::

    python examples/chat_server.py --port 3001
    nc localhost 3001        # in two or more terminals, then type

Stop it with Ctrl-C (or SIGTERM): the listener stops gracefully.
"""

from __future__ import annotations

import argparse
import functools
import signal

import trio

import trio_tcp
from trio_tcp.framing import Delimited

#: Seconds without a byte either way before a member is disconnected.
IDLE_TIMEOUT = 15 * 60.0


class ChatRoom(trio_tcp.Service):
    """One room: every connection joins it."""

    def __init__(self) -> None:
        self.members = trio_tcp.Group()

    def on_connect(self, caller: trio_tcp.Caller) -> Member:
        name = f"{caller.remote_host}:{caller.remote_port}".encode()
        self.members.send_message_nowait(b"* " + name + b" joined")
        self.members.add(caller)  # it leaves by itself when its connection ends
        return Member(self.members, caller, name)


class Member(trio_tcp.ConnectionService):
    """One participant: each line it sends is relayed to the others."""

    framing = Delimited(b"\n", max_size=4096)

    def __init__(self, members: trio_tcp.Group, caller: trio_tcp.Caller, name: bytes) -> None:
        self.members = members
        self.caller = caller
        self.name = name

    async def on_bytes(self, line: bytes) -> None:
        text = line.rstrip(b"\r")
        self.members.send_message_nowait(b"<" + self.name + b"> " + text, exclude=self.caller)

    async def on_close(self) -> None:
        self.members.send_message_nowait(b"* " + self.name + b" left")


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        serve = functools.partial(
            trio_tcp.serve, port, ChatRoom(), local_host=host, idle_timeout=IDLE_TIMEOUT
        )
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
