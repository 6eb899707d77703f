"""``examples/redis_server.py``: a real protocol on trio_tcp, tested in memory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio

from trio_tcp.testing import open_memory_server


def load_example() -> ModuleType:
    path = Path(__file__).parent.parent / "examples" / "redis_server.py"
    spec = importlib.util.spec_from_file_location("redis_server_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


redis = load_example()


async def exchange(stream: trio.abc.Stream, request: bytes, reply_size: int) -> bytes:
    await stream.send_all(request)
    received = bytearray()
    while len(received) < reply_size:
        chunk = await stream.receive_some()
        assert chunk, f"closed after {bytes(received)!r}"
        received += chunk
    return bytes(received)


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


@pytest.mark.trio
async def test_inline_and_array_commands() -> None:
    with trio.fail_after(5):
        async with open_memory_server(redis.RedisServer()) as server:
            client = await server.open_stream()
            assert await exchange(client, b"PING\r\n", 7) == b"+PONG\r\n"
            assert await exchange(client, command(b"PING"), 7) == b"+PONG\r\n"
            assert await exchange(client, command(b"ECHO", b"hi"), 8) == b"$2\r\nhi\r\n"
            assert await exchange(client, command(b"SET", b"k", b"v"), 5) == b"+OK\r\n"
            assert await exchange(client, command(b"GET", b"k"), 7) == b"$1\r\nv\r\n"
            assert await exchange(client, command(b"GET", b"nope"), 5) == b"$-1\r\n"
            assert await exchange(client, command(b"DEL", b"k", b"nope"), 4) == b":1\r\n"
            reply = await exchange(client, command(b"FLY"), 10)
            assert reply.startswith(b"-ERR unknown command")
            await client.aclose()


@pytest.mark.trio
async def test_a_value_containing_crlf_is_put_back_together() -> None:
    with trio.fail_after(5):
        value = b"two\r\nlines\r\n"
        async with open_memory_server(redis.RedisServer()) as server:
            client = await server.open_stream()
            assert await exchange(client, command(b"SET", b"k", value), 5) == b"+OK\r\n"
            expected = b"$%d\r\n%s\r\n" % (len(value), value)
            assert await exchange(client, command(b"GET", b"k"), len(expected)) == expected
            await client.aclose()


@pytest.mark.trio
async def test_pipelined_commands_are_answered_in_order() -> None:
    with trio.fail_after(5):
        async with open_memory_server(redis.RedisServer()) as server:
            client = await server.open_stream()
            pipeline = b"".join(command(b"ECHO", b"%d" % i) for i in range(10))
            expected = b"".join(b"$1\r\n%d\r\n" % i for i in range(10))
            assert await exchange(client, pipeline, len(expected)) == expected
            await client.aclose()


@pytest.mark.trio
async def test_a_malformed_request_gets_an_error_reply_not_a_crash() -> None:
    with trio.fail_after(5):
        async with open_memory_server(redis.RedisServer()) as server:
            client = await server.open_stream()
            reply = await exchange(client, b"*2\r\n$x\r\n", 10)
            assert reply.startswith(b"-ERR Protocol error")
            assert await exchange(client, b"PING\r\n", 7) == b"+PONG\r\n"
            await client.aclose()
            assert server.stats.errors == 0
