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


class Server(trio_tcp.Service):
    def __init__(self) -> None:
        self.connections: list[Upper] = []

    async def on_connect(self, caller: trio_tcp.Caller) -> Upper:
        connection = Upper(caller)
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
            received = bytearray()
            while chunk := await client.receive_some():
                received += chunk
            assert bytes(received) == b"A\nB\n"  # then an orderly end, not a reset
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
