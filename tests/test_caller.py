"""``Caller``: the listener's handle on one connection, over an in-memory stream."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import trio_tcp
from trio_tcp._caller import Caller
from trio_tcp._streams import Endpoints
from trio_tcp._writer import Writer

ENDPOINTS = Endpoints("192.0.2.7", 40123, "127.0.0.1", 3000)


class StopSpy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def make_caller() -> tuple[Caller, trio.abc.Stream, StopSpy]:
    client, server = trio.testing.memory_stream_pair()
    spy = StopSpy()
    return Caller(Writer(server), ENDPOINTS, spy), client, spy


def test_attributes_of_a_plain_connection() -> None:
    caller, _, _ = make_caller()
    assert caller.remote_host == "192.0.2.7"
    assert caller.remote_port == 40123
    assert caller.local_host == "127.0.0.1"
    assert caller.local_port == 3000
    assert caller.is_secure is False
    assert caller.tls_version is None
    assert caller.cipher is None
    assert caller.peer_certificate is None
    assert caller.closed is False
    assert isinstance(caller, trio.abc.AsyncResource)


def test_ids_are_unique_strings() -> None:
    ids = [make_caller()[0].id for _ in range(200)]
    assert all(isinstance(id_, str) and id_ for id_ in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.trio
async def test_repr_names_the_public_class_and_the_state() -> None:
    with trio.fail_after(5):
        caller, _, _ = make_caller()
        text = repr(caller)
        assert text.startswith("<trio_tcp.Caller ")
        assert caller.id in text
        assert "192.0.2.7:40123" in text
        assert "open" in text
        await caller.close()
        assert "closed" in repr(caller)


@pytest.mark.trio
async def test_write_bytes_sends_bytes_like_data() -> None:
    with trio.fail_after(5):
        caller, client, _ = make_caller()
        await caller.write_bytes(b"one ")
        await caller.write_bytes(bytearray(b"two "))
        await caller.write_bytes(memoryview(b"three"))
        assert await client.receive_some() == b"one two three"


@pytest.mark.parametrize(
    "value",
    [pytest.param("text", id="str"), pytest.param(7, id="int"), pytest.param(None, id="none")],
)
@pytest.mark.trio
async def test_write_bytes_rejects_non_bytes(value: object) -> None:
    with trio.fail_after(5):
        caller, _, _ = make_caller()
        with pytest.raises(TypeError):
            await caller.write_bytes(value)  # type: ignore[arg-type]
        assert not caller.closed  # a programming error does not end the connection


@pytest.mark.trio
async def test_write_message_without_framing_is_an_error() -> None:
    with trio.fail_after(5):
        caller, _, _ = make_caller()
        with pytest.raises(trio_tcp.Error, match="framing"):
            await caller.write_message(b"hello")
        with pytest.raises(TypeError):
            await caller.write_message("hello")  # type: ignore[arg-type]


@pytest.mark.trio
async def test_write_message_uses_the_service_framing() -> None:
    with trio.fail_after(5):
        caller, client, _ = make_caller()
        caller._framing = trio_tcp.framing.Delimited(b"\n")  # set by the connection driver
        await caller.write_message(b"line")
        assert await client.receive_some() == b"line\n"


@pytest.mark.trio
async def test_close_is_idempotent_and_stops_reading_once() -> None:
    with trio.fail_after(5):
        caller, _, spy = make_caller()
        await caller.close()
        await caller.close()
        await caller.aclose()
        assert caller.closed
        assert spy.calls == 1  # the connection's task does the closing
        with pytest.raises(trio_tcp.ConnectionClosedError):
            await caller.write_bytes(b"late")


@pytest.mark.trio
async def test_async_with_closes() -> None:
    with trio.fail_after(5):
        caller, _, spy = make_caller()
        async with caller:
            pass
        assert caller.closed
        assert spy.calls == 1
