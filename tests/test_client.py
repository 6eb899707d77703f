"""Client against real loopback servers (raw trio, port 0).

Covers connecting, every read and write, timeouts, concurrency, connect
failures, argument validation and use after close.

TLS and framing have their own test modules; cancellation from the caller
is in ``test_cancellation.py``.
"""

from __future__ import annotations

import errno
import math
import random
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from _loopback import (
    causes,
    connected,
    loopback_server,
    open_fds,
    read_until_eof,
    receive_exactly,
    reset,
)

import trio_tcp

# -- connect, write, read, close ---------------------------------------------------


@pytest.mark.trio
async def test_write_then_read_round_trip() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await client.write_bytes(b"Hello")
            assert await receive_exactly(peer, 5) == b"Hello"
            await peer.send_all(b"World")
            assert await client.read_exactly(5) == b"World"


@pytest.mark.trio
@pytest.mark.parametrize(
    "payload",
    [b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), b""],
    ids=["bytes", "bytearray", "memoryview", "empty"],
)
async def test_write_accepts_bytes_like(payload: bytes | bytearray | memoryview) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await client.write_bytes(payload)
            await client.write_bytes(b"|end")
            expected = bytes(payload) + b"|end"
            assert await receive_exactly(peer, len(expected)) == expected


@pytest.mark.trio
@pytest.mark.parametrize("payload", ["text", 42, [1, 2], None], ids=["str", "int", "list", "None"])
async def test_write_rejects_non_bytes_and_stays_usable(payload: object) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            with pytest.raises(TypeError, match="bytes"):
                await client.write_bytes(payload)  # type: ignore[arg-type]
            assert not client.closed
            await client.write_bytes(b"ok")
            assert await receive_exactly(peer, 2) == b"ok"


@pytest.mark.trio
async def test_async_with_closes_and_peer_sees_clean_eof() -> None:
    with trio.fail_after(5):
        async with loopback_server() as server:
            async with await trio_tcp.Client.connect(server.host, server.port) as client:
                peer = await server.accept()
                await client.write_bytes(b"bye")
            assert client.closed
            assert await read_until_eof(peer) == (b"bye", False)


@pytest.mark.trio
async def test_close_is_idempotent() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            assert "open" in repr(client)
            await client.close()
            await client.close()
            await client.aclose()
            assert client.closed
            assert "closed" in repr(client)
            assert await read_until_eof(peer) == (b"", False)


@pytest.mark.trio
async def test_close_is_a_checkpoint_even_when_already_closed() -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            await client.aclose()
            with trio.CancelScope() as scope:
                scope.cancel()
                await client.aclose()
                pytest.fail("aclose() of a closed client did not checkpoint")  # pragma: no cover
            assert scope.cancelled_caught


@pytest.mark.trio
async def test_attributes_describe_a_plain_connection() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            server_host, server_port = peer.socket.getsockname()[:2]
            peer_host, peer_port = peer.socket.getpeername()[:2]
            assert (client.remote_host, client.remote_port) == (server_host, server_port)
            assert client.remote_host == "127.0.0.1"
            assert (client.local_host, client.local_port) == (peer_host, peer_port)
            assert client.local_host == "127.0.0.1"
            assert client.local_port != client.remote_port
            assert client.is_secure is False
            assert client.tls_version is None
            assert client.cipher is None
            assert client.peer_certificate is None
            assert f"127.0.0.1:{server_port}" in repr(client)


@pytest.mark.trio
async def test_is_an_async_resource() -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            assert isinstance(client, trio.abc.AsyncResource)


@pytest.mark.trio
async def test_read_message_and_write_message_need_framing() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            with pytest.raises(trio_tcp.Error, match="framing"):
                await client.read_message()
            with pytest.raises(trio_tcp.Error, match="framing"):
                await client.write_message(b"x")
            # Neither touched the stream.
            await client.write_bytes(b"raw")
            assert await receive_exactly(peer, 3) == b"raw"


# -- read_bytes ----------------------------------------------------------------------


@pytest.mark.trio
async def test_read_bytes_respects_max_bytes() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"0123456789")
            assert await client.read_bytes(3) == b"012"
            assert await client.read_bytes(1) == b"3"
            rest = b""
            while len(rest) < 6:
                chunk = await client.read_bytes(100)
                assert 1 <= len(chunk) <= 100
                rest += chunk
            assert rest == b"456789"


@pytest.mark.trio
async def test_read_bytes_default_is_at_most_64_kib_and_immutable() -> None:
    data = random.Random(3).randbytes(300_000)
    with trio.fail_after(5):
        async with connected() as (client, peer):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send_all, data)
                received = b""
                while len(received) < len(data):
                    chunk = await client.read_bytes()
                    assert type(chunk) is bytes
                    assert 1 <= len(chunk) <= 65536
                    received += chunk
            assert received == data


@pytest.mark.trio
@pytest.mark.parametrize(
    ("max_bytes", "error"),
    [
        (0, trio_tcp.ConfigurationError),
        (-1, trio_tcp.ConfigurationError),
        (True, TypeError),
        (1.5, TypeError),
        ("3", TypeError),
        (None, TypeError),
    ],
    ids=["zero", "negative", "bool", "float", "str", "None"],
)
async def test_read_bytes_rejects_bad_max_bytes(max_bytes: object, error: type[Exception]) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            with pytest.raises(error, match="max_bytes"):
                await client.read_bytes(max_bytes)  # type: ignore[arg-type]
            await peer.send_all(b"still fine")
            assert await client.read_exactly(10) == b"still fine"


# -- read_exactly ------------------------------------------------------------------


@pytest.mark.trio
async def test_read_exactly_collects_across_chunks(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):

            async def dribble() -> None:
                for piece in (b"ab", b"cde", b"f", b"gh"):
                    await peer.send_all(piece)
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                assert await client.read_exactly(4) == b"abcd"
                assert await client.read_exactly(0) == b""
                assert await client.read_exactly(2) == b"ef"
                assert await client.read_exactly(2) == b"gh"


@pytest.mark.trio
async def test_read_exactly_larger_than_one_receive() -> None:
    data = random.Random(5).randbytes(1_000_000)
    with trio.fail_after(5):
        async with connected() as (client, peer), trio.open_nursery() as nursery:
            nursery.start_soon(peer.send_all, data)
            assert await client.read_exactly(len(data)) == data


@pytest.mark.trio
async def test_read_exactly_eof_first_keeps_partial_bytes() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"abc")
            await peer.aclose()
            with pytest.raises(trio_tcp.ConnectionClosedError, match="peer"):
                await client.read_exactly(5)
            # The partial message is not lost: it is what the next read returns.
            assert await client.read_bytes() == b"abc"
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("size", "error"),
    [(-1, trio_tcp.ConfigurationError), (True, TypeError), (1.5, TypeError), ("2", TypeError)],
    ids=["negative", "bool", "float", "str"],
)
async def test_read_exactly_rejects_bad_size(size: object, error: type[Exception]) -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            with pytest.raises(error, match="size"):
                await client.read_exactly(size)  # type: ignore[arg-type]


# -- read_until --------------------------------------------------------------------


@pytest.mark.trio
async def test_read_until_consumes_the_delimiter() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"one\r\ntwo\r\n\r\nthree")
            assert await client.read_until(b"\r\n") == b"one"
            assert await client.read_until(b"\r\n") == b"two"
            assert await client.read_until(b"\r\n") == b""
            assert await client.read_exactly(5) == b"three"


@pytest.mark.trio
@pytest.mark.parametrize("cut", [1, 2, 3], ids=["a|b-CRLF", "ab|CRLF", "ab-CR|LF"])
async def test_read_until_multi_byte_delimiter_split_across_chunks(
    cut: int, autojump_clock: trio.testing.MockClock
) -> None:
    data = b"ab\r\ncd\r\n"
    with trio.fail_after(5):
        async with connected(timeout=1.0) as (client, peer):
            await peer.send_all(data[:cut])
            # The first part arrives alone: no line yet, and nothing is lost
            # when the read times out waiting for the rest.
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await client.read_until(b"\r\n")
            await peer.send_all(data[cut:])
            assert await client.read_until(b"\r\n") == b"ab"
            assert await client.read_until(b"\r\n") == b"cd"


@pytest.mark.trio
@pytest.mark.parametrize(
    ("delimiter", "line_size"),
    [(b"\n", 8), (b"\n", 7), (b"\n", 0), (b"\r\n", 8), (b"<END>", 8)],
    ids=["LF-exactly-max", "LF-under-max", "LF-empty", "CRLF-exactly-max", "long-exactly-max"],
)
async def test_read_until_accepts_lines_up_to_max_size(delimiter: bytes, line_size: int) -> None:
    line = b"x" * line_size
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(line + delimiter + b"next" + delimiter)
            assert await client.read_until(delimiter, max_size=8) == line
            assert await client.read_until(delimiter, max_size=8) == b"next"


@pytest.mark.trio
@pytest.mark.parametrize(
    ("delimiter", "sent"),
    [
        (b"\n", b"123456789\n"),
        (b"\r\n", b"123456789\r\n"),
        (b"\r\n", b"12345678\r\r\n"),
        (b"\n", b"123456789"),
        (b"\n", b"123456789" * 1000),
    ],
    ids=["LF-one-over", "CRLF-one-over", "CRLF-CR-in-line", "no-delimiter", "long-no-delimiter"],
)
async def test_read_until_over_max_size_is_framing_error_and_keeps_bytes(
    delimiter: bytes, sent: bytes
) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(sent)
            with pytest.raises(trio_tcp.FramingError, match="max_size=8"):
                await client.read_until(delimiter, max_size=8)
            # The client stays usable and nothing was consumed.
            assert await client.read_exactly(len(sent)) == sent


@pytest.mark.trio
async def test_read_until_max_size_does_not_depend_on_chunking() -> None:
    # The long second line arrives in the same chunk as the first one, so it
    # is already buffered when it is asked for: still too long.
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"a\nabcdefgh\n")
            assert await client.read_until(b"\n", max_size=100) == b"a"
            with pytest.raises(trio_tcp.FramingError):
                await client.read_until(b"\n", max_size=4)
            assert await client.read_until(b"\n", max_size=8) == b"abcdefgh"


@pytest.mark.trio
async def test_read_until_finds_another_delimiter_in_already_searched_bytes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=1.0) as (client, peer):
            await peer.send_all(b"key=value;")
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await client.read_until(b"\n")
            assert await client.read_until(b"=") == b"key"
            assert await client.read_until(b";") == b"value"


@pytest.mark.trio
@pytest.mark.parametrize(
    ("delimiter", "max_size", "error", "match"),
    [
        (b"", 10, trio_tcp.ConfigurationError, "delimiter"),
        ("\n", 10, TypeError, "delimiter"),
        (bytearray(b"\n"), 10, TypeError, "delimiter"),
        (b"\n", 0, trio_tcp.ConfigurationError, "max_size"),
        (b"\n", -5, trio_tcp.ConfigurationError, "max_size"),
        (b"\n", 1.5, TypeError, "max_size"),
        (b"\n", True, TypeError, "max_size"),
    ],
    ids=[
        "empty-delimiter",
        "str-delimiter",
        "bytearray-delimiter",
        "zero-max",
        "negative-max",
        "float-max",
        "bool-max",
    ],
)
async def test_read_until_rejects_bad_arguments(
    delimiter: object, max_size: object, error: type[Exception], match: str
) -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            with pytest.raises(error, match=match):
                await client.read_until(delimiter, max_size=max_size)  # type: ignore[arg-type]


@pytest.mark.trio
async def test_mixed_reads_share_one_buffer() -> None:
    rng = random.Random(11)
    lines = [rng.randbytes(rng.randint(0, 300)).replace(b"\n", b"") for _ in range(400)]
    data = b"".join(line + b"\n" for line in lines)
    with trio.fail_after(10):
        async with connected() as (client, peer):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.send_all, data)
                out = bytearray()
                while len(out) < len(data):
                    kind = rng.randrange(3)
                    if kind == 0:
                        out += await client.read_bytes(rng.randint(1, 500))
                    elif kind == 1:
                        out += await client.read_exactly(
                            min(rng.randint(0, 500), len(data) - len(out))
                        )
                    else:
                        out += await client.read_until(b"\n", max_size=400) + b"\n"
                    assert bytes(out) == data[: len(out)]
            assert bytes(out) == data


# -- end of stream, reset, iteration -----------------------------------------------


@pytest.mark.trio
async def test_async_iteration_until_peer_closes() -> None:
    pieces = [b"first", b"second", b"third" * 10000]
    with trio.fail_after(5):
        async with connected() as (client, peer):

            async def send_then_close() -> None:
                for piece in pieces:
                    await peer.send_all(piece)
                    await trio.sleep(0.01)
                await peer.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_then_close)
                received = [chunk async for chunk in client]
            assert all(received)
            assert b"".join(received) == b"".join(pieces)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()


@pytest.mark.trio
async def test_async_iteration_raises_on_reset() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await reset(peer)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                _ = [chunk async for chunk in client]


@pytest.mark.trio
async def test_eof_raises_connection_closed_every_time() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.aclose()
            for _ in range(3):
                with pytest.raises(trio_tcp.ConnectionClosedError, match="closed by the peer"):
                    await client.read_bytes()
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_exactly(1)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_until(b"\n")
            # A peer that stops sending may still be reading: writes still work.
            assert not client.closed


@pytest.mark.trio
async def test_read_until_eof_before_delimiter_keeps_bytes() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"no newline")
            await peer.aclose()
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_until(b"\n")
            assert await client.read_exactly(10) == b"no newline"


@pytest.mark.trio
async def test_peer_reset_is_connection_closed_with_cause() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await reset(peer)
            with pytest.raises(trio_tcp.ConnectionClosedError, match="reset") as excinfo:
                await client.read_bytes()
            assert any(isinstance(exc, ConnectionResetError) for exc in causes(excinfo.value))
            # Every later operation says the same, never a raw trio/OS error.
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.write_bytes(b"x")
            assert client.closed


# -- read timeout -------------------------------------------------------------


@pytest.mark.trio
async def test_read_timeout_then_connection_still_works(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=0.1) as (client, peer):
            for _ in range(3):
                start = trio.current_time()
                with pytest.raises(trio_tcp.ReadTimeoutError) as excinfo:
                    await client.read_bytes()
                assert 0.1 <= trio.current_time() - start < 0.6
            assert isinstance(excinfo.value, TimeoutError)
            assert not client.closed
            await peer.send_all(b"late")
            assert await client.read_bytes() == b"late"
            await client.write_bytes(b"reply")
            assert await receive_exactly(peer, 5) == b"reply"


@pytest.mark.trio
@pytest.mark.parametrize(
    "read",
    [
        lambda client: client.read_exactly(6),
        lambda client: client.read_until(b"\n"),
    ],
    ids=["read_exactly", "read_until"],
)
async def test_read_timeout_mid_message_keeps_received_bytes(
    read: Callable[[trio_tcp.Client], Awaitable[bytes]],
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=0.1) as (client, peer):
            await peer.send_all(b"abc")
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await read(client)
            await peer.send_all(b"def\n")
            assert await read(client) == b"abcdef"


@pytest.mark.trio
async def test_read_timeout_is_inactivity_not_total(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=0.1) as (client, peer):

            async def dribble() -> None:
                for byte in b"slow!":
                    await trio.sleep(0.06)
                    await peer.send_all(bytes([byte]))

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                assert await client.read_exactly(5) == b"slow!"
            # Longer than the timeout in total, but never 0.1 s without a byte.
            assert trio.current_time() - start >= 0.3


@pytest.mark.trio
async def test_read_timeout_none_waits_indefinitely(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5000):
        async with connected(timeout=None) as (client, peer):
            with trio.move_on_after(3600) as scope:
                await client.read_bytes()
            assert scope.cancelled_caught
            await peer.send_all(b"x")
            assert await client.read_bytes() == b"x"


@pytest.mark.trio
async def test_read_timeout_zero_with_nothing_to_read_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(5):
        async with connected(timeout=0) as (client, _peer):
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await client.read_bytes()


# -- write timeout ------------------------------------------------------------

BIG = 64 * 1024 * 1024


@pytest.mark.trio
async def test_write_timeout_closes_the_client() -> None:
    payload = random.Random(0).randbytes(BIG)
    with trio.fail_after(10):
        async with connected(write_timeout=0.5) as (client, peer):
            start = trio.current_time()
            with pytest.raises(trio_tcp.WriteTimeoutError) as excinfo:
                await client.write_bytes(payload)  # the peer never reads
            assert 0.5 <= trio.current_time() - start <= 3
            assert isinstance(excinfo.value, TimeoutError)
            assert client.closed
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.write_bytes(b"MARK")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_bytes()
            # The peer gets a prefix of the message and then the end of the
            # stream; never the rest, never the later write.
            received, _was_reset = await read_until_eof(peer)
            assert len(received) < len(payload)
            assert received == payload[: len(received)]


@pytest.mark.trio
async def test_write_timeout_none_waits_for_a_slow_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    payload = random.Random(1).randbytes(4 * 1024 * 1024)
    with trio.fail_after(5000):
        async with connected(write_timeout=None) as (client, peer):
            received: list[bytes] = []

            async def read_late() -> None:
                await trio.sleep(1000)
                received.append(await receive_exactly(peer, len(payload)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_late)
                await client.write_bytes(payload)
            assert received == [payload]
            assert not client.closed


# -- concurrency ------------------------------------------------------------


async def _read_bytes(client: trio_tcp.Client) -> object:
    return await client.read_bytes()


async def _read_exactly(client: trio_tcp.Client) -> object:
    return await client.read_exactly(1)


async def _read_until(client: trio_tcp.Client) -> object:
    return await client.read_until(b"\n")


async def _iterate(client: trio_tcp.Client) -> object:
    return await client.__anext__()


@pytest.mark.trio
@pytest.mark.parametrize(
    "second_reader",
    [_read_bytes, _read_exactly, _read_until, _iterate],
    ids=["read_bytes", "read_exactly", "read_until", "anext"],
)
async def test_concurrent_read_is_busy_and_first_reader_unaffected(
    second_reader: Callable[[trio_tcp.Client], Awaitable[object]],
) -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            results: list[bytes] = []

            async def first() -> None:
                results.append(await client.read_bytes())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await second_reader(client)
                await peer.send_all(b"for the first reader\n")
            assert results == [b"for the first reader\n"]
            # Once the first read is over, another task may read.
            await peer.send_all(b"next")
            assert await client.read_exactly(4) == b"next"


@pytest.mark.trio
async def test_concurrent_writes_are_whole_and_in_call_order() -> None:
    size = 256 * 1024
    writers = 20
    with trio.fail_after(10):
        async with connected() as (client, peer):
            call_order: list[int] = []

            async def write(index: int) -> None:
                # Nothing yields between recording the call and queueing on the
                # write lock, so this is the order the calls reached the client.
                call_order.append(index)
                await client.write_bytes(bytes([index + 1]) * size)

            results: list[tuple[bytes, bool]] = []

            async def read_all() -> None:
                results.append(await read_until_eof(peer))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                async with trio.open_nursery() as writing:
                    for index in range(writers):
                        writing.start_soon(write, index)
                await client.aclose()
            [(received, was_reset)] = results
    assert not was_reset
    assert len(received) == writers * size
    runs = [received[i : i + size] for i in range(0, len(received), size)]
    assert all(run == run[:1] * size for run in runs), "a message was interleaved"
    assert [run[0] - 1 for run in runs] == call_order
    assert sorted(call_order) == list(range(writers))


# -- connect failures ---------------------------------------------------


def _refusing_port() -> tuple[socket.socket, int]:
    """A port that is bound but not listening: connecting is refused, with no race."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.mark.trio
async def test_refused_port_is_connect_error_with_errno() -> None:
    sock, port = _refusing_port()
    with sock, trio.fail_after(5):
        start = trio.current_time()
        with pytest.raises(trio_tcp.ConnectError, match=f"127.0.0.1:{port}") as excinfo:
            await trio_tcp.Client.connect("127.0.0.1", port)
        assert trio.current_time() - start < 2
    refused = [
        exc
        for exc in causes(excinfo.value)
        if isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ]
    assert refused, "ECONNREFUSED is not in the cause chain"


@pytest.mark.trio
async def test_failed_connects_leak_no_file_descriptors() -> None:
    sock, port = _refusing_port()
    with sock, trio.fail_after(5):
        before = open_fds()
        for _ in range(20):
            with pytest.raises(trio_tcp.ConnectError):
                await trio_tcp.Client.connect("127.0.0.1", port)
        assert open_fds() == before


@pytest.mark.trio
async def test_unknown_host_is_connect_error() -> None:
    with trio.fail_after(10):
        with pytest.raises(
            trio_tcp.ConnectError, match=re.escape("nonexistent.invalid")
        ) as excinfo:
            await trio_tcp.Client.connect("nonexistent.invalid", 80)
    assert any(isinstance(exc, socket.gaierror) for exc in causes(excinfo.value))


@pytest.mark.trio
async def test_connect_timeout_on_a_full_backlog(autojump_clock: trio.testing.MockClock) -> None:
    # A listener that never accepts, with backlog 0: Linux queues one
    # connection; the kernel drops the SYNs of the next, which hangs.
    with socket.socket() as listening, socket.socket() as filler:
        listening.bind(("127.0.0.1", 0))
        listening.listen(0)
        port = listening.getsockname()[1]
        filler.settimeout(5)
        filler.connect(("127.0.0.1", port))
        with trio.fail_after(5):
            before = open_fds()
            start = trio.current_time()
            with pytest.raises(trio_tcp.ConnectError, match="timed out"):
                await trio_tcp.Client.connect("127.0.0.1", port, connect_timeout=0.3)
            assert 0.3 <= trio.current_time() - start < 1
            assert open_fds() == before


@pytest.mark.trio
@pytest.mark.parametrize("local_host", ["127.0.0.1", "127.0.0.2"])
async def test_local_host_binds_the_local_end(local_host: str) -> None:
    with trio.fail_after(5):
        async with connected(local_host=local_host) as (client, peer):
            assert client.local_host == local_host
            assert peer.socket.getpeername()[:2] == (local_host, client.local_port)
            await client.write_bytes(b"hi")
            assert await receive_exactly(peer, 2) == b"hi"


@pytest.mark.trio
@pytest.mark.parametrize("local_host", ["::1", "invalid"], ids=["ipv6-to-ipv4", "not-an-address"])
async def test_unusable_local_host_is_connect_error(local_host: str) -> None:
    with trio.fail_after(5):
        async with loopback_server() as server:
            with pytest.raises(trio_tcp.ConnectError) as excinfo:
                await trio_tcp.Client.connect(server.host, server.port, local_host=local_host)
            message = str(excinfo.value)
            assert "local_host" in message
            assert repr(local_host) in message


# -- argument validation -----------------------------------------------------

NAN = math.nan


@pytest.mark.trio
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"port": 70000}, trio_tcp.ConfigurationError, "port"),
        ({"port": 65536}, trio_tcp.ConfigurationError, "port"),
        ({"port": -1}, trio_tcp.ConfigurationError, "port"),
        ({"port": 0}, trio_tcp.ConfigurationError, "port"),
        ({"port": "80"}, TypeError, "port"),
        ({"port": True}, TypeError, "port"),
        ({"port": 1.5}, TypeError, "port"),
        ({"port": None}, TypeError, "port"),
        ({"host": ""}, trio_tcp.ConfigurationError, "host"),
        ({"host": None}, TypeError, "host"),
        ({"host": b"127.0.0.1"}, TypeError, "host"),
        ({"timeout": -1}, trio_tcp.ConfigurationError, "timeout"),
        ({"timeout": NAN}, trio_tcp.ConfigurationError, "timeout"),
        ({"timeout": math.inf}, trio_tcp.ConfigurationError, "timeout"),
        ({"timeout": "3"}, TypeError, "timeout"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"write_timeout": -1}, trio_tcp.ConfigurationError, "write_timeout"),
        ({"write_timeout": NAN}, trio_tcp.ConfigurationError, "write_timeout"),
        ({"write_timeout": "3"}, TypeError, "write_timeout"),
        ({"connect_timeout": 0}, trio_tcp.ConfigurationError, "connect_timeout"),
        ({"connect_timeout": -1}, trio_tcp.ConfigurationError, "connect_timeout"),
        ({"connect_timeout": NAN}, trio_tcp.ConfigurationError, "connect_timeout"),
        ({"connect_timeout": "3"}, TypeError, "connect_timeout"),
        ({"local_host": ""}, trio_tcp.ConfigurationError, "local_host"),
        ({"local_host": 1}, TypeError, "local_host"),
    ],
    ids=[
        "port-70000",
        "port-65536",
        "port-negative",
        "port-zero",
        "port-str",
        "port-bool",
        "port-float",
        "port-None",
        "host-empty",
        "host-None",
        "host-bytes",
        "timeout-negative",
        "timeout-nan",
        "timeout-inf",
        "timeout-str",
        "timeout-bool",
        "write_timeout-negative",
        "write_timeout-nan",
        "write_timeout-str",
        "connect_timeout-zero",
        "connect_timeout-negative",
        "connect_timeout-nan",
        "connect_timeout-str",
        "local_host-empty",
        "local_host-int",
    ],
)
async def test_bad_arguments_rejected_before_any_socket(
    options: dict[str, Any],
    error: type[Exception],
    match: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_sockets(*args: object, **kwargs: object) -> trio.SocketStream:
        raise AssertionError("a socket was opened before the arguments were checked")

    monkeypatch.setattr(trio, "open_tcp_stream", no_sockets)
    arguments: dict[str, Any] = {"host": "127.0.0.1", "port": 80, **options}
    with trio.fail_after(5):
        with pytest.raises(error, match=match):
            await trio_tcp.Client.connect(**arguments)
    assert issubclass(trio_tcp.ConfigurationError, ValueError)


# -- use after close -----------------------------------------------------------


async def _write(client: trio_tcp.Client) -> object:
    await client.write_bytes(b"x")
    return None


@pytest.mark.trio
@pytest.mark.parametrize(
    "operation",
    [_read_bytes, _read_exactly, _read_until, _iterate, _write],
    ids=["read_bytes", "read_exactly", "read_until", "anext", "write_bytes"],
)
async def test_use_after_close_is_connection_closed(
    operation: Callable[[trio_tcp.Client], Awaitable[object]],
) -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            await client.close()
            for _ in range(2):
                with pytest.raises(trio_tcp.ConnectionClosedError, match="closed") as excinfo:
                    await operation(client)
                assert not isinstance(excinfo.value, trio.ClosedResourceError)


@pytest.mark.trio
async def test_read_after_close_fails_even_with_buffered_bytes() -> None:
    with trio.fail_after(5):
        async with connected() as (client, peer):
            await peer.send_all(b"abc")
            await peer.aclose()
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_exactly(5)  # leaves b"abc" buffered
            await client.close()
            with pytest.raises(trio_tcp.ConnectionClosedError, match="closed locally"):
                await client.read_bytes()


@pytest.mark.trio
async def test_close_wakes_a_blocked_reader_with_connection_closed() -> None:
    with trio.fail_after(5):
        async with connected() as (client, _peer):
            errors: list[BaseException] = []

            async def reader() -> None:
                with pytest.raises(trio_tcp.ConnectionClosedError) as excinfo:
                    await client.read_bytes()
                errors.append(excinfo.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
            assert len(errors) == 1
            assert "closed locally" in str(errors[0])


@pytest.mark.trio
async def test_close_wakes_a_blocked_writer_with_connection_closed() -> None:
    payload = b"\0" * BIG
    with trio.fail_after(5):
        async with connected(write_timeout=None) as (client, peer):
            errors: list[BaseException] = []

            async def writer() -> None:
                with pytest.raises(trio_tcp.ConnectionClosedError) as excinfo:
                    await client.write_bytes(payload)  # the peer never reads
                errors.append(excinfo.value)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()
            assert len(errors) == 1
            received, _was_reset = await read_until_eof(peer)
            assert len(received) < len(payload)
