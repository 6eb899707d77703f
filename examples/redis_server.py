"""A Redis-compatible key-value server: PING, ECHO, SET, GET, DEL, EXISTS, over trio_tcp.

A small real protocol that real clients speak, pipelining included::

    python examples/redis_server.py --port 6380
    redis-cli -p 6380 ping                       # PONG
    redis-cli -p 6380 set greeting "hello world"
    redis-cli -p 6380 get greeting               # "hello world"
    redis-benchmark -p 6380 -t ping_inline,ping_mbulk,set,get -P 16 -q

(``redis-cli`` and ``redis-benchmark`` come with Debian's ``redis-tools``.)

Redis's protocol, RESP, sends a command either inline (``PING\\r\\n``) or as
an array of length-prefixed strings (``*2\\r\\n$4\\r\\nECHO\\r\\n$5\\r\\nhello\\r\\n``).
Both are read as ``\\r\\n``-delimited lines; a string announced with ``$5``
that contains ``\\r\\n`` itself arrives as several lines and is put back
together by its announced length. Replies are RESP already, so the framing
sends them as they are. The replies to every command of one received chunk
(a pipelining client sends many) go out in one write.

The data lives in one dict shared by every connection: trio runs one task at
a time, so no lock is needed between two awaits.
"""

from __future__ import annotations

import argparse
import signal

import trio

import trio_tcp
from trio_tcp.framing import Decoder, Delimited

#: Longest line (and so longest inline command or string piece) accepted.
MAX_LINE = 512 * 1024


class Resp:
    """The framing: requests are ``\\r\\n``-delimited lines; replies go out as written."""

    def __init__(self) -> None:
        self._lines = Delimited(b"\r\n", max_size=MAX_LINE)

    def decoder(self) -> Decoder:
        """A line decoder for one connection."""
        return self._lines.decoder()

    def encode(self, message: bytes) -> bytes:
        """Replies are already RESP: sent unchanged."""
        return message


RESP = Resp()


def bulk(value: bytes | None) -> bytes:
    """A RESP bulk string (``None``: the null reply)."""
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


class Session(trio_tcp.ConnectionService):
    """One client: assembles commands line by line and answers each."""

    framing = RESP

    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.wanted = 0  # strings the current array command still needs
        self.args: list[bytes] = []
        self.length: int | None = None  # announced length of the string being read
        self.pieces: list[bytes] = []

    def on_bytes(self, line: bytes) -> bytes | None:
        if self.length is not None:
            return self.string_piece(line)
        if self.wanted:
            length = _count(line, b"$")
            if length is None:
                return self.protocol_error(b"expected '$' and a length")
            self.length = length
            return self.string_piece(None) if length == 0 else None
        if line.startswith(b"*"):
            count = _count(line, b"*")
            if count is None:
                return self.protocol_error(b"expected '*' and a count")
            if count:
                self.wanted, self.args = count, []
            return None
        return self.execute(line.split()) if line.strip() else None  # an inline command

    def string_piece(self, line: bytes | None) -> bytes | None:
        if line is not None:
            self.pieces.append(line)
        value = b"\r\n".join(self.pieces)
        assert self.length is not None
        if len(value) < self.length:
            return None  # the string contained CRLF: more lines to come
        if len(value) > self.length:
            return self.protocol_error(b"string longer than announced")
        self.args.append(value)
        self.length, self.pieces = None, []
        self.wanted -= 1
        return self.execute(self.args) if self.wanted == 0 else None

    def protocol_error(self, what: bytes) -> bytes:
        self.wanted, self.length, self.pieces = 0, None, []
        return b"-ERR Protocol error: " + what + b"\r\n"

    def execute(self, args: list[bytes]) -> bytes:
        name, rest = args[0].upper(), args[1:]
        store = self.store
        if name == b"PING":
            return bulk(rest[0]) if rest else b"+PONG\r\n"
        if name == b"ECHO" and len(rest) == 1:
            return bulk(rest[0])
        if name == b"SET" and len(rest) == 2:
            store[rest[0]] = rest[1]
            return b"+OK\r\n"
        if name == b"GET" and len(rest) == 1:
            return bulk(store.get(rest[0]))
        if name == b"DEL" and rest:
            return b":%d\r\n" % sum(store.pop(key, None) is not None for key in rest)
        if name == b"EXISTS" and rest:
            return b":%d\r\n" % sum(key in store for key in rest)
        if name == b"COMMAND":
            return b"*0\r\n"  # redis-cli asks at start-up; no command metadata here
        return b"-ERR unknown command or wrong number of arguments for '%s'\r\n" % args[0]


def _count(line: bytes, marker: bytes) -> int | None:
    """The number after ``marker`` (``*3``, ``$5``), or ``None`` if the line is not one."""
    digits = line[1:]
    if not line.startswith(marker) or not digits.isdigit() or len(digits) > 9:
        return None
    return int(digits)


class RedisServer(trio_tcp.Service):
    """Every connection shares one store."""

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}

    def on_connect(self, caller: trio_tcp.Caller) -> Session:
        return Session(self.store)


async def main(port: int) -> None:
    listener = trio_tcp.Listener(port, local_host="127.0.0.1")
    listener.attach(RedisServer())
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            print(f"listening on 127.0.0.1:{listener.port}", flush=True)
            async for _ in signals:
                await listener.graceful_stop(timeout=5)
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=6380, help="default: %(default)s")
    trio.run(main, parser.parse_args().port)
