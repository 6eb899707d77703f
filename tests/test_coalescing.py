"""Replies to one received chunk go out together; order and backpressure are kept.

A framed service gets every message of a received chunk in turn; the
replies it returns are queued and sent in one write when the chunk is done
(or early, past 64 KiB). These tests count the server's sends over in-memory
connections.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from _loopback import read_until_eof

import trio_tcp
from trio_tcp._memory import MemoryStream
from trio_tcp.framing import Delimited
from trio_tcp.testing import SERVER_PORT, open_memory_server

LINES = Delimited(b"\n")


@pytest.fixture
def server_sends(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every ``send_all`` the server makes on its in-memory connections, in order."""
    sends: list[bytes] = []
    original = MemoryStream.send_all

    async def counted(self: MemoryStream, data: Any) -> None:
        if self.endpoints.local_port == SERVER_PORT:  # the server's end
            sends.append(bytes(data))
        await original(self, data)

    monkeypatch.setattr(MemoryStream, "send_all", counted)
    return sends


class Upper(trio_tcp.ConnectionService):
    """Upper-cases each line; ``push`` also writes directly, ``boom`` fails."""

    framing = LINES

    def __init__(self, caller: trio_tcp.Caller) -> None:
        self.caller = caller
        self.errors: list[trio_tcp.Error] = []
        self.closed = trio.Event()
        self.handled: list[bytes] = []

    async def on_bytes(self, line: bytes) -> bytes:
        if line == b"push":
            await self.caller.write_message(b"pushed")
        if line == b"boom":
            raise ValueError("boom")
        return line.upper()

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.errors.append(err)

    async def on_close(self) -> None:
        self.closed.set()


class SyncUpper(Upper):
    """Upper-cases each line with a plain ``def on_bytes`` (the commonest service).

    ``boom`` fails, ``bad`` answers with the delimiter inside, ``flood``
    overflows the outbox (which closes the connection), ``none`` answers
    nothing, ``array`` answers a bytearray and ``cr`` a reply holding the
    delimiter's first byte but not the delimiter.
    """

    framing = Delimited(b"\r\n")

    def on_bytes(self, line: bytes) -> bytes | bytearray | None:  # type: ignore[override]
        self.handled.append(line)
        if line == b"boom":
            raise ValueError("boom")
        if line == b"bad":
            return b"two\r\nlines"
        if line == b"flood":
            self.caller.send_nowait(b"x" * 4096)  # over the outbox limit the test sets
            return b"FLOOD"
        if line == b"none":
            return None
        if line == b"array":
            return bytearray(b"ARRAY")
        if line == b"cr":
            return b"C\rR"
        return line.upper()


class Server(trio_tcp.Service):
    def __init__(self, *, sync: bool = False) -> None:
        self.connections: list[Upper] = []
        self.sync = sync

    async def on_connect(self, caller: trio_tcp.Caller) -> Upper:
        connection = SyncUpper(caller) if self.sync else Upper(caller)
        self.connections.append(connection)
        return connection


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some()
        assert chunk, f"closed after {bytes(received)!r}"
        received += chunk
    return bytes(received)


@pytest.mark.trio
async def test_the_replies_to_one_chunk_go_out_in_one_send(server_sends: list[bytes]) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server()) as server:
            client = await server.open_stream()
            await client.send_all(b"a\nb\nc\nd\ne\n" * 20)  # 100 messages in one chunk
            expected = b"A\nB\nC\nD\nE\n" * 20
            assert await read_exactly(client, len(expected)) == expected
            assert server_sends == [expected]
            await client.aclose()


@pytest.mark.trio
async def test_a_direct_write_keeps_its_place_among_returned_replies(
    server_sends: list[bytes],
) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server()) as server:
            client = await server.open_stream()
            await client.send_all(b"one\ntwo\npush\nthree\n")
            expected = b"ONE\nTWO\npushed\nPUSH\nTHREE\n"
            assert await read_exactly(client, len(expected)) == expected
            # The direct write takes the replies queued before it along: two sends, not five.
            assert server_sends == [b"ONE\nTWO\npushed\n", b"PUSH\nTHREE\n"]
            await client.aclose()


@pytest.mark.trio
async def test_writes_from_another_task_keep_their_order(server_sends: list[bytes]) -> None:
    with trio.fail_after(5):
        service = Server()
        async with open_memory_server(service) as server:
            client = await server.open_stream()
            await client.send_all(b"x\n")
            assert await read_exactly(client, 2) == b"X\n"
            caller = service.connections[0].caller
            await caller.write_message(b"news")
            caller.send_message_nowait(b"more news")
            await client.send_all(b"y\n")
            expected = b"news\nmore news\nY\n"
            assert await read_exactly(client, len(expected)) == expected
            await client.aclose()


@pytest.mark.trio
async def test_replies_before_a_failure_are_sent_before_the_close(
    server_sends: list[bytes],
) -> None:
    with trio.fail_after(5):
        service = Server()
        async with open_memory_server(service) as server:
            client = await server.open_stream()
            await client.send_all(b"a\nb\nboom\nc\n")
            received, reset = await read_until_eof(client)
            assert received == b"A\nB\n"
            assert not reset  # an orderly end
            [connection] = service.connections
            await connection.closed.wait()
            [error] = connection.errors
            assert isinstance(error.__cause__, ValueError)


@pytest.mark.trio
async def test_past_64_kib_replies_go_out_early(server_sends: list[bytes]) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server(), buffer_size=1 << 20) as server:
            client = await server.open_stream()
            line = b"x" * 1000 + b"\n"
            await client.send_all(line * 200)  # 200 KB of requests in one chunk
            expected = line.upper() * 200
            assert await read_exactly(client, len(expected)) == expected
            assert 3 <= len(server_sends) <= 5
            assert all(len(sent) <= 66 * 1024 for sent in server_sends)
            await client.aclose()


@pytest.mark.trio
async def test_a_client_that_never_reads_stops_the_reading(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with open_memory_server(Server(), buffer_size=4096) as server:
            client = await server.open_stream()
            request = b"r" * 99 + b"\n"
            sent = 0
            with trio.move_on_after(10):  # the client pipelines until its writes block
                while True:
                    await client.send_all(request)
                    sent += len(request)
            # The replies fill the client's buffer, the server waits to write them,
            # so it reads no further: what it took is bounded by the two buffers.
            assert sent < 4 * 4096
            assert server.stats.bytes_received <= sent
            assert client.peer_unread() > 0
            await client.aclose()


@pytest.mark.trio
async def test_a_stalled_coalesced_flush_fails_at_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        service = Server()
        async with open_memory_server(service, buffer_size=1024, write_timeout=5) as server:
            client = await server.open_stream()
            await client.send_all(b"y" * 600 + b"\n" + b"z" * 600 + b"\n")  # 1.2 KB of replies
            [connection] = service.connections
            start = trio.current_time()
            await connection.closed.wait()
            assert trio.current_time() - start == pytest.approx(5, abs=0.1)
            [error] = connection.errors
            assert isinstance(error, trio_tcp.WriteTimeoutError)
            assert server.stats.errors == 1


# -- a plain ``def on_bytes`` with Delimited: its replies are framed in one join ----------------


@pytest.mark.trio
async def test_sync_replies_to_one_chunk_go_out_in_one_send(server_sends: list[bytes]) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server(sync=True)) as server:
            client = await server.open_stream()
            await client.send_all(b"a\r\nb\r\nc\r\nd\r\ne\r\n" * 20)
            expected = b"A\r\nB\r\nC\r\nD\r\nE\r\n" * 20
            assert await read_exactly(client, len(expected)) == expected
            assert server_sends == [expected]
            await client.aclose()


@pytest.mark.trio
async def test_sync_replies_of_every_kind_keep_their_order_in_one_send(
    server_sends: list[bytes],
) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server(sync=True)) as server:
            client = await server.open_stream()
            await client.send_all(b"a\r\narray\r\nb\r\nnone\r\ncr\r\nc\r\n")
            expected = b"A\r\nARRAY\r\nB\r\nC\rR\r\nC\r\n"
            assert await read_exactly(client, len(expected)) == expected
            assert server_sends == [expected]
            await client.aclose()


@pytest.mark.trio
async def test_sync_replies_before_a_failure_are_sent_before_the_close() -> None:
    with trio.fail_after(5):
        service = Server(sync=True)
        async with open_memory_server(service) as server:
            client = await server.open_stream()
            await client.send_all(b"a\r\narray\r\nb\r\nboom\r\nc\r\n")
            received, reset = await read_until_eof(client)
            assert received == b"A\r\nARRAY\r\nB\r\n"
            assert not reset  # an orderly end
            [connection] = service.connections
            await connection.closed.wait()
            assert connection.handled == [b"a", b"array", b"b", b"boom"]
            [error] = connection.errors
            assert isinstance(error.__cause__, ValueError)


@pytest.mark.trio
async def test_a_reply_holding_the_delimiter_fails_after_the_replies_before_it() -> None:
    with trio.fail_after(5):
        service = Server(sync=True)
        async with open_memory_server(service) as server:
            client = await server.open_stream()
            await client.send_all(b"a\r\nb\r\nbad\r\nc\r\n")
            received, reset = await read_until_eof(client)
            assert received == b"A\r\nB\r\n"  # nothing of the bad reply
            assert not reset  # an orderly end
            [connection] = service.connections
            await connection.closed.wait()
            assert connection.handled == [b"a", b"b", b"bad"]  # c was never handled
            [error] = connection.errors
            assert isinstance(error, trio_tcp.FramingError)


@pytest.mark.trio
async def test_no_message_is_handled_after_on_bytes_overflows_the_outbox() -> None:
    with trio.fail_after(5):
        service = Server(sync=True)
        async with open_memory_server(service, outbox_limit=1024) as server:
            client = await server.open_stream()
            await client.send_all(b"a\r\nflood\r\nb\r\nc\r\n")
            await trio.testing.wait_all_tasks_blocked()  # on_connect has run
            [connection] = service.connections
            await connection.closed.wait()
            assert connection.handled == [b"a", b"flood"]  # closed: b and c had nobody to answer
            [error] = connection.errors
            assert isinstance(error, trio_tcp.OutboxFullError)
            await client.aclose()


@pytest.mark.trio
async def test_sync_replies_past_64_kib_go_out_early(server_sends: list[bytes]) -> None:
    with trio.fail_after(5):
        async with open_memory_server(Server(sync=True), buffer_size=1 << 20) as server:
            client = await server.open_stream()
            line = b"x" * 1000 + b"\r\n"
            await client.send_all(line * 200)  # 200 KB of requests in one chunk
            expected = line.upper() * 200
            assert await read_exactly(client, len(expected)) == expected
            assert 3 <= len(server_sends) <= 5
            assert all(len(sent) <= 66 * 1024 for sent in server_sends)
            await client.aclose()


@pytest.mark.trio
async def test_a_sync_reply_over_the_size_limit_fails_after_the_replies_before_it() -> None:
    class Small(trio_tcp.ConnectionService):
        framing = Delimited(b"\n", max_size=8)

        def on_bytes(self, line: bytes) -> bytes:
            return line * 4  # "ab" -> 8 bytes: fits; "abc" -> 12: too long

    class Accept(trio_tcp.Service):
        async def on_connect(self, caller: trio_tcp.Caller) -> Small:
            return Small()

    with trio.fail_after(5):
        async with open_memory_server(Accept()) as server:
            client = await server.open_stream()
            await client.send_all(b"ab\nabc\nab\n")
            received, reset = await read_until_eof(client)
            assert received == b"abababab\n"
            assert not reset  # an orderly end
            assert server.stats.errors == 1
