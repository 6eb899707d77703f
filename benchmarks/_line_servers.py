"""Line-protocol servers: ``PING\\n`` answered with ``PONG\\n``, and a Redis-compatible PING.

Both come as a trio_tcp service with ``Delimited`` framing (one call per line,
the reply returned) and as the raw Trio program one would write by hand: a line
buffer, and every reply to one received chunk sent with one ``send_all``.

The Redis servers understand just enough RESP for ``redis-benchmark -t
ping_inline,ping_mbulk``: an inline command line, or a multibulk array
(``*N``, then ``$LEN`` and the argument for each of the N arguments). ``PING``
gets ``+PONG``; any other command ``-ERR`` (``redis-benchmark`` asks for the
server's ``CONFIG`` first and carries on without it). Arguments are taken as
lines, so an argument containing CRLF is not supported: PING has none.
"""

from __future__ import annotations

import trio
from _serving import RECEIVE_SIZE

import trio_tcp
from trio_tcp.framing import Delimited

# A line longer than this ends the connection: the raw servers' buffer ceiling,
# the same as trio_tcp's default for Delimited framing.
MAX_LINE = 65536

PONG = b"PONG"
# -- PING / PONG lines --------------------------------------------------------------------


def answer(line: bytes) -> bytes:
    """The reply to one request line, without its newline."""
    return PONG if line == b"PING" else b"ERR"


class PingLines(trio_tcp.ConnectionService):
    """One ``on_bytes`` call per line; the returned reply is framed and written."""

    framing = Delimited(b"\n")

    def on_bytes(self, line: bytes) -> bytes:
        return answer(line)


class LineServer(trio_tcp.Service):
    """Hands every connection a new ``PingLines``."""

    def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return PingLines()


async def raw_lines(stream: trio.abc.Stream) -> None:
    """Split each chunk into lines; answer all the complete ones with one ``send_all``."""
    pending = b""
    try:
        while data := await stream.receive_some(RECEIVE_SIZE):
            *lines, pending = (pending + data).split(b"\n")
            if lines:
                await stream.send_all(b"".join([answer(line) + b"\n" for line in lines]))
            if len(pending) > MAX_LINE:
                break
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


# -- Redis PING ----------------------------------------------------------------------------


class RespPing:
    """The RESP request parser shared by both Redis servers: one line in, a reply or None."""

    __slots__ = ("args_left", "command", "header_next")

    def __init__(self) -> None:
        self.args_left = 0  # arguments still to come in the current multibulk request
        self.header_next = False  # inside one: a ``$LEN`` line comes next
        self.command: bytes | None = None

    def on_line(self, line: bytes) -> bytes | None:
        """Take one CRLF-less line; return the reply once a whole command is in."""
        if self.args_left:
            if self.header_next:
                self.header_next = False
                return None
            self.header_next = True
            if self.command is None:
                self.command = line
            self.args_left -= 1
            if self.args_left:
                return None
            command, self.command = self.command, None
            return resp_reply(command)
        if line[:1] == b"*":
            self.args_left = max(0, int(line[1:] or b"0"))
            self.header_next = True
            return None
        words = line.split(None, 1)
        return resp_reply(words[0]) if words else None


def resp_reply(command: bytes) -> bytes:
    """``+PONG`` to PING (in any case, as Redis does), an error to anything else."""
    return b"+PONG" if command.upper() == b"PING" else b"-ERR unknown command"


class RedisPing(RespPing, trio_tcp.ConnectionService):
    """The trio_tcp Redis PING service: CRLF framing, the parser as ``on_bytes``."""

    __slots__ = ()
    framing = Delimited(b"\r\n")
    on_bytes = RespPing.on_line


class RedisServer(trio_tcp.Service):
    """Hands every connection a new ``RedisPing``."""

    def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return RedisPing()


async def raw_redis(stream: trio.abc.Stream) -> None:
    """The Redis PING server by hand: CRLF lines, one ``send_all`` per received chunk."""
    parser = RespPing()
    pending = b""
    try:
        while data := await stream.receive_some(RECEIVE_SIZE):
            *lines, pending = (pending + data).split(b"\r\n")
            replies = [reply + b"\r\n" for line in lines if (reply := parser.on_line(line))]
            if replies:
                await stream.send_all(b"".join(replies))
            if len(pending) > MAX_LINE:
                break
    except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
        pass  # ValueError: a malformed ``*N`` header
    finally:
        await trio.aclose_forcefully(stream)
