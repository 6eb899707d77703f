"""An echo server: every byte a client sends comes straight back.

Run it, then talk to it with ``examples/echo_client.py`` (or ``nc``)::

    python examples/echo_server.py                 # listens on 127.0.0.1:3000
    python examples/echo_server.py --port 0        # any free port, printed at start

Stop it with Ctrl-C (or SIGTERM): the listener stops gracefully, giving
connections two seconds to finish before they are cancelled.
"""

from __future__ import annotations

import argparse
import logging
import signal

import trio

import trio_tcp

log = logging.getLogger("echo_server")


class EchoService(trio_tcp.ConnectionService):
    """Handles one client: writes every chunk back."""

    async def on_bytes(self, data: bytes) -> bytes:
        return data

    async def on_error(self, err: trio_tcp.Error) -> None:
        log.warning("connection error: %s", err)

    async def on_close(self) -> None:
        print("Client left", flush=True)


class EchoServer(trio_tcp.Service):
    """Gives every new connection its own EchoService."""

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        print("Client connected:", caller.remote_port, flush=True)
        return EchoService()


async def main(host: str, port: int) -> None:
    listener = trio_tcp.Listener(port, local_host=host)
    listener.attach(EchoServer())
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        print(f"Echo server listening on {host}:{listener.port}", flush=True)
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
        "--port", type=int, default=3000, help="port, 0 for any (default: %(default)s)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, args.host, args.port)
