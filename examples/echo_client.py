"""An echo client: connect, send a greeting, print the reply, close.

Start ``examples/echo_server.py`` first, then::

    python examples/echo_client.py                       # to localhost:3000
    python examples/echo_client.py --port 4000 --message "Hi there"
"""

from __future__ import annotations

import argparse

import trio

import trio_tcp


async def main(host: str, port: int, message: str) -> None:
    client = await trio_tcp.Client.connect(host, port, timeout=10)
    try:
        await client.write_bytes(message.encode())
        # Bytes, not messages: the echo may arrive in several chunks.
        reply = await client.read_exactly(len(message.encode()))
        print("Response:", reply.decode(), flush=True)
    finally:
        await client.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost", help="server host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=3000, help="server port (default: %(default)s)")
    parser.add_argument("--message", default="Hello from a trio_tcp client")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    trio.run(main, args.host, args.port, args.message)
