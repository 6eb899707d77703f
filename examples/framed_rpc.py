"""A line-based request/response service and its client, both framed with ``Delimited(b"\\n")``.

Every request is one line, ``COMMAND argument``; every reply is one line::

    UPPER hello      ->  HELLO
    LOWER HeLLo      ->  hello
    REVERSE hello    ->  olleh
    anything else    ->  ERR unknown command

Thanks to the framing, the service's ``on_bytes`` gets exactly one request per
call, however TCP splits or joins the bytes, and what it returns is sent back
as one line. Run the server, then call it::

    python examples/framed_rpc.py serve                    # listens on 127.0.0.1:3002
    python examples/framed_rpc.py serve --port 0           # any free port, printed at start
    python examples/framed_rpc.py call --port 3002 UPPER hello
    printf 'REVERSE hello\\n' | nc localhost 3002           # any line-based client works

Stop the server with Ctrl-C (or SIGTERM): the listener stops gracefully, giving
connections two seconds to finish before they are cancelled.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable

import trio

import trio_tcp
from trio_tcp.framing import Delimited

log = logging.getLogger("framed_rpc")

#: One request or reply per line. 4 KiB is plenty for this protocol; a longer
#: line is an error (the connection is closed), never a reason to buffer more.
FRAMING = Delimited(b"\n", max_size=4096)

COMMANDS: dict[bytes, Callable[[bytes], bytes]] = {
    b"UPPER": bytes.upper,
    b"LOWER": bytes.lower,
    b"REVERSE": lambda argument: argument[::-1],
}


class RpcService(trio_tcp.ConnectionService):
    """Handles one client: one request in, one reply out."""

    framing = FRAMING  # on_bytes gets whole lines; its return value is sent as a line

    async def on_bytes(self, request: bytes) -> bytes:
        # Tolerate "\r\n" line ends from telnet-like clients.
        command, _, argument = request.rstrip(b"\r").partition(b" ")
        handler = COMMANDS.get(command.upper())
        if handler is None:
            return b"ERR unknown command"
        return handler(argument)

    async def on_error(self, err: trio_tcp.Error) -> None:
        # A line over max_size arrives here as a FramingError; the connection then closes.
        log.warning("connection error: %s", err)


class RpcServer(trio_tcp.Service):
    """Gives every new connection its own RpcService."""

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return RpcService()


async def serve(host: str, port: int) -> None:
    listener = trio_tcp.Listener(port, local_host=host)
    listener.attach(RpcServer())
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        print(f"Framed RPC server listening on {host}:{listener.port}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                await listener.graceful_stop(timeout=2)
                break


async def call(host: str, port: int, request: bytes) -> None:
    async with await trio_tcp.Client.connect(host, port, timeout=10, framing=FRAMING) as client:
        await client.write_message(request)  # sent as request + b"\n"
        reply = await client.read_message()  # one whole line, without the b"\n"
        print(reply.decode(errors="replace"), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="mode", required=True)

    server = commands.add_parser("serve", help="run the server")
    server.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    server.add_argument(
        "--port", type=int, default=3002, help="port, 0 for any (default: %(default)s)"
    )

    client = commands.add_parser("call", help="send one request and print the reply")
    client.add_argument("--host", default="localhost", help="server host (default: %(default)s)")
    client.add_argument("--port", type=int, default=3002, help="server port (default: %(default)s)")
    client.add_argument("command", help="UPPER, LOWER or REVERSE")
    client.add_argument("argument", nargs="*", help="the text to transform")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    if args.mode == "serve":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        trio.run(serve, args.host, args.port)
    else:
        request = " ".join([args.command, *args.argument]).encode()
        trio.run(call, args.host, args.port, request)
