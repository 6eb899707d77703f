"""The example services, tested in memory with ``trio_tcp.testing``.

``examples/run_all.py`` runs the examples themselves, over TCP.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing

import trio_tcp
from trio_tcp.framing import Delimited
from trio_tcp.testing import open_memory_server, open_service_client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import chat_server
import echo_server
import framed_rpc

LINES = Delimited(b"\n")


@pytest.mark.trio
async def test_echo_server_echoes() -> None:
    with trio.fail_after(5):
        async with open_service_client(echo_server.EchoServer()) as client:
            await client.write_bytes(b"hello")
            assert await client.read_exactly(5) == b"hello"


@pytest.mark.trio
async def test_framed_rpc_answers_one_line_per_request() -> None:
    with trio.fail_after(5):
        async with open_service_client(framed_rpc.RpcServer(), framing=LINES) as client:
            await client.write_bytes(b"UPPER hello\nREVERSE hello\r\nNOPE x\n")
            assert await client.read_message() == b"HELLO"
            assert await client.read_message() == b"olleh"
            assert await client.read_message() == b"ERR unknown command"


@pytest.mark.trio
async def test_chat_relays_a_line_to_the_other_member() -> None:
    with trio.fail_after(5):
        async with open_memory_server(chat_server.ChatRoom()) as server:
            alice = await server.connect(framing=LINES, remote_port=50001)
            bob = await server.connect(framing=LINES, remote_port=50002)
            assert await alice.read_message() == b"* 127.0.0.1:50002 joined"
            await alice.write_message(b"hello bob")
            assert await bob.read_message() == b"<127.0.0.1:50001> hello bob"
            await alice.aclose()
            assert await bob.read_message() == b"* 127.0.0.1:50001 left"


@pytest.mark.trio
async def test_chat_disconnects_the_members_of_a_room_silent_for_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    idle = chat_server.IDLE_TIMEOUT
    with trio.fail_after(10 * idle):
        room = chat_server.ChatRoom()
        async with open_memory_server(room, idle_timeout=idle) as server:
            alice = await server.connect(framing=LINES)
            bob = await server.connect(framing=LINES)
            assert await alice.read_message() == b"* 127.0.0.1:50001 joined"
            await trio.sleep(idle - 1)
            await bob.write_message(b"anyone?")  # the room speaks: both clocks restart
            assert await alice.read_message() == b"<127.0.0.1:50001> anyone?"
            await trio.sleep(idle - 1)
            assert len(room.members) == 2
            await trio.sleep(5)  # a sweep of the idle connections runs every second
            # Fifteen minutes of silence, and no time at all for the test.
            assert len(room.members) == 0
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await alice.read_message()


@pytest.mark.trio
async def test_chat_drops_a_member_that_stops_reading_and_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = chat_server.ChatRoom()
        async with open_memory_server(room, buffer_size=4096, outbox_limit=16384) as server:
            stuck = await server.open_stream()  # joins, never reads
            alice = await server.connect(framing=LINES)
            bob = await server.connect(framing=LINES)
            assert await alice.read_message() == b"* 127.0.0.1:50002 joined"
            line = b"x" * 1000
            news = []
            for _ in range(30):  # 30 KB: more than the stuck member's buffer and outbox
                await alice.write_message(line)
                while (message := await bob.read_message()) != b"<127.0.0.1:50001> " + line:
                    news.append(message)
            assert news == [b"* 127.0.0.1:50000 left"]
            assert await alice.read_message() == b"* 127.0.0.1:50000 left"
            assert len(room.members) == 2
            assert server.stats.outbox_overflows == 1
            assert stuck.pending_input() == 4096  # what fitted before it was dropped
