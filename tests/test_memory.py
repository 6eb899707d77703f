"""In-memory connections: trio's stream conformance checks, bounded buffers, FIN, close and RST."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_tcp
from trio_tcp._memory import MemoryListener, MemoryStream, memory_connection
from trio_tcp._streams import Endpoints

CLIENT = Endpoints("127.0.0.1", 50000, "127.0.0.1", 3000)


async def make_pair() -> tuple[MemoryStream, MemoryStream]:
    return memory_connection(CLIENT)


async def make_clogged_pair() -> tuple[MemoryStream, MemoryStream]:
    # Both directions full: a send waits until the peer receives something.
    client, server = memory_connection(CLIENT, buffer_size=1)
    await client.send_all(b"x")
    await server.send_all(b"x")
    return client, server


@pytest.mark.trio
async def test_memory_streams_pass_trios_half_closeable_stream_checks() -> None:
    with trio.fail_after(30):
        await trio.testing.check_half_closeable_stream(make_pair, make_clogged_pair)


@pytest.mark.trio
async def test_a_writer_waits_while_the_peers_buffer_is_full() -> None:
    with trio.fail_after(5):
        client, server = memory_connection(CLIENT, buffer_size=10)
        sent = trio.Event()

        async def send() -> None:
            await client.send_all(b"0123456789abcde")
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            assert client.peer_unread() == server.pending_input() == 10
            assert await server.receive_some(5) == b"01234"
            await trio.testing.wait_all_tasks_blocked()
            assert sent.is_set()  # the rest fitted
        assert await server.receive_some() == b"56789abcde"
        assert client.unacked_output() == 0


@pytest.mark.trio
async def test_send_eof_is_a_fin_after_the_data() -> None:
    with trio.fail_after(5):
        client, server = await make_pair()
        await client.send_all(b"last words")
        await client.send_eof()
        assert await server.receive_some() == b"last words"
        assert await server.receive_some() == b""
        await server.send_all(b"still open this way")  # half-closed, not closed
        assert await client.receive_some() == b"still open this way"


@pytest.mark.trio
async def test_closing_with_nothing_unread_is_an_orderly_end() -> None:
    with trio.fail_after(5):
        client, server = await make_pair()
        await server.send_all(b"reply")
        await server.aclose()
        assert await client.receive_some() == b"reply"
        assert await client.receive_some() == b""
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"to nobody")  # as to a socket closed by its peer


@pytest.mark.trio
async def test_closing_with_unread_input_resets_the_connection() -> None:
    # As with TCP: the peer reads what had been delivered, then an error, not EOF.
    with trio.fail_after(5):
        client, server = await make_pair()
        await client.send_all(b"never read")
        await server.send_all(b"delivered")
        await server.aclose()
        assert await client.receive_some() == b"delivered"
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.receive_some()
        assert isinstance(info.value.__cause__, ConnectionResetError)


@pytest.mark.trio
async def test_reset_fails_the_peers_reads_and_writes_after_the_delivered_bytes() -> None:
    with trio.fail_after(5):
        client, server = await make_pair()
        await client.send_all(b"before the reset")
        client.reset()
        assert await server.receive_some() == b"before the reset"  # delivered bytes stay
        with pytest.raises(trio.BrokenResourceError):
            await server.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await server.send_all(b"x")
        with pytest.raises(trio.ClosedResourceError):
            await client.receive_some()  # the end that reset is closed
        client.reset()  # idempotent


@pytest.mark.trio
async def test_a_reset_wakes_a_blocked_reader_and_writer() -> None:
    with trio.fail_after(5):
        client, server = memory_connection(CLIENT, buffer_size=4)
        failures: list[type[BaseException]] = []

        async def expect_broken(operation: object) -> None:
            try:
                await operation  # type: ignore[misc]
            except trio.BrokenResourceError as exc:
                failures.append(type(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(expect_broken, server.receive_some())
            nursery.start_soon(expect_broken, server.send_all(b"more than four"))
            await trio.testing.wait_all_tasks_blocked()
            client.reset()
        assert failures == [trio.BrokenResourceError] * 2


@pytest.mark.trio
async def test_pending_input_and_peer_unread_count_bytes_in_the_buffer() -> None:
    with trio.fail_after(5):
        client, server = await make_pair()
        await client.send_all(b"12345")
        assert (client.peer_unread(), server.pending_input()) == (5, 5)
        await server.receive_some(2)
        assert (client.peer_unread(), server.pending_input()) == (3, 3)
        await server.aclose()
        assert server.pending_input() == 0


def test_each_end_knows_its_addresses() -> None:
    client, server = memory_connection(CLIENT)
    assert client.endpoints == CLIENT
    assert server.endpoints == Endpoints("127.0.0.1", 3000, "127.0.0.1", 50000)


# -- the listener ------------------------------------------------------------------


@pytest.mark.trio
async def test_a_connection_is_complete_before_it_is_accepted() -> None:
    with trio.fail_after(5):
        listener = MemoryListener()
        client = await listener.connect(CLIENT)
        await client.send_all(b"early")  # like bytes sent into a kernel's accept queue
        server = await listener.accept()
        assert await server.receive_some() == b"early"
        await listener.aclose()


@pytest.mark.trio
async def test_closing_the_listener_refuses_new_and_resets_waiting_connections() -> None:
    with trio.fail_after(5):
        listener = MemoryListener()
        waiting = await listener.connect(CLIENT)
        await listener.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await waiting.receive_some()
        with pytest.raises(trio_tcp.ConnectError):
            await listener.connect(CLIENT)
        with pytest.raises(trio.ClosedResourceError):
            await listener.accept()
        await listener.aclose()  # idempotent


@pytest.mark.trio
async def test_connect_beyond_the_backlog_waits_for_an_accept() -> None:
    with trio.fail_after(5):
        listener = MemoryListener(backlog=1)
        await listener.connect(CLIENT)
        with trio.move_on_after(0.01) as scope:
            await listener.connect(CLIENT)
        assert scope.cancelled_caught
        await listener.accept()
        await listener.connect(CLIENT)
        await listener.aclose()
