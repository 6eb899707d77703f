"""Framing end to end: a real ``Listener`` and ``Client`` on loopback, for every framer.

The sans-IO decoders are tested alone in ``test_framing.py``; here the same
rules are checked through sockets: whole messages per ``on_bytes``
call, framed replies, ``caller.write_message`` / ``write_bytes``, the client's
``read_message`` / ``write_message``, oversize frames in both directions, a
peer that stops mid-message, the per-message inactivity timeout, user-written
framings, bad framing objects, and the bound on buffering.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import pytest
import trio
import trio.testing
from _loopback import connected, loopback_server, read_until_eof, receive_exactly
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_tcp
from trio_tcp.framing import Decoder, Delimited, Framing, LengthPrefixed

#: ``max_size`` of the framings under test: small, so oversize is cheap to send.
MAX = 100

FRAMINGS = [
    pytest.param(Delimited(b"\n", max_size=MAX), id="delimited"),
    pytest.param(Delimited(b"\r\n", max_size=MAX), id="delimited-crlf"),
    pytest.param(LengthPrefixed(4, max_size=MAX), id="length-prefixed"),
    pytest.param(LengthPrefixed(1, max_size=MAX), id="length-prefixed-1"),
]


def oversize(framing: Framing) -> bytes:
    """The wire bytes of one message of ``MAX + 1`` bytes, which ``encode`` refuses to make."""
    if isinstance(framing, Delimited):
        return b"x" * (MAX + 1) + framing.delimiter
    assert isinstance(framing, LengthPrefixed)
    return (MAX + 1).to_bytes(framing.header_size, "big") + b"x" * (MAX + 1)


def unfinished(framing: Framing) -> bytes:
    """The first bytes of a message, stopping before its end."""
    return framing.encode(b"unfinished")[:-3]


def split(wire: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``wire`` at the given offsets (any order, duplicates allowed); no empty pieces."""
    points = [0, *sorted(set(cuts)), len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(points) if b > a]


# -- a recording server --------------------------------------------------------------


class Recorder(trio_tcp.ConnectionService):
    """A framed connection service that records what happens and replies in upper case.

    ``b"big"`` is answered with ``MAX + 1`` bytes, more than the framing allows.
    """

    def __init__(self, framing: Framing, caller: trio_tcp.Caller) -> None:
        self.framing = framing
        self.caller = caller
        self.messages: list[bytes] = []
        self.events: list[str] = []
        self.errors: list[trio_tcp.Error] = []
        self.closed = trio.Event()

    async def on_bytes(self, message: bytes) -> bytes | None:
        self.messages.append(message)
        if message == b"big":
            return b"y" * (MAX + 1)
        if message == b"quit":
            await self.caller.close()
            return None
        return message.upper()

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.events.append("error")
        self.errors.append(err)

    async def on_close(self) -> None:
        self.events.append("close")
        self.closed.set()


S = TypeVar("S", bound=trio_tcp.ConnectionService)


class Server(trio_tcp.Service, Generic[S]):
    """Makes a connection service per connection and finds it again by the client's port."""

    def __init__(self, make: Callable[[trio_tcp.Caller], S]) -> None:
        self.make = make
        self.by_port: dict[int, S] = {}
        self._lot = trio.lowlevel.ParkingLot()

    async def on_connect(self, caller: trio_tcp.Caller) -> S:
        service = self.make(caller)
        self.by_port[caller.remote_port] = service
        self._lot.unpark_all()
        return service

    async def connection(self, port: int) -> S:
        """The service of the connection whose client end is ``port``, once it exists."""
        while port not in self.by_port:
            await self._lot.park()
        return self.by_port[port]


def recording(framing: Framing) -> Server[Recorder]:
    return Server(lambda caller: Recorder(framing, caller))


@asynccontextmanager
async def serving(service: trio_tcp.Service) -> AsyncIterator[int]:
    """Serve ``service`` on a free loopback port; yield the port."""
    listener = trio_tcp.Listener(0, local_host="127.0.0.1")
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        assert listener.port is not None
        yield listener.port
        await listener.immediate_stop()


async def connect(port: int, framing: Framing | None) -> trio_tcp.Client:
    return await trio_tcp.Client.connect("127.0.0.1", port, framing=framing)


async def open_raw(port: int) -> trio.SocketStream:
    """A plain trio stream to the listener: it sends exactly the bytes the test gives it."""
    return await trio.open_tcp_stream("127.0.0.1", port)


def port_of(stream: trio.SocketStream) -> int:
    port: int = stream.socket.getsockname()[1]
    return port


# -- services: whole messages in, framed replies out -------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_request_response(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port, await connect(port, framing) as client:
            for request in (b"hello", b"", b"x" * MAX, b"world"):
                await client.write_message(request)
                assert await client.read_message() == request.upper()
            service = await server.connection(client.local_port)
        await service.closed.wait()
        assert service.messages == [b"hello", b"", b"x" * MAX, b"world"]
        assert service.events == ["close"]


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_burst_of_1000_messages_in_one_write(framing: Framing) -> None:
    messages = [b"message %d" % i for i in range(1000)]
    spy = Spy(framing)
    with trio.fail_after(5):
        server = recording(spy)
        async with serving(server) as port, await connect(port, framing) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.write_bytes, b"".join(map(framing.encode, messages)))
                replies = [await client.read_message() for _ in messages]
            service = await server.connection(client.local_port)
        assert replies == [message.upper() for message in messages]
        assert service.messages == messages  # 1000 on_bytes calls, in order
        # Proof that chunks carried many messages each (so that path was exercised).
        assert spy.feeds < len(messages)


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_one_byte_at_a_time(framing: Framing) -> None:
    messages = [b"ab", b"", b"cde"]
    wire = b"".join(map(framing.encode, messages))
    spy = Spy(framing)
    with trio.fail_after(5):
        server = recording(spy)
        async with serving(server) as port:
            stream = await open_raw(port)
            client_port = port_of(stream)
            async with stream:
                for i in range(len(wire)):
                    await stream.send_all(wire[i : i + 1])
                    await trio.testing.wait_all_tasks_blocked()
                replies = b"".join(framing.encode(message.upper()) for message in messages)
                assert await receive_exactly(stream, len(replies)) == replies
            service = await server.connection(client_port)
            await service.closed.wait()
        assert service.messages == messages
        assert spy.feeds == len(wire)  # each byte really was a chunk of its own
        assert service.events == ["close"]


def _messages_for(framing: Framing) -> st.SearchStrategy[bytes]:
    """Messages ``framing`` can carry, other than the ones ``Recorder`` treats specially."""

    def usable(message: bytes) -> bool:
        try:
            framing.encode(message)
        except trio_tcp.FramingError:
            return False
        return message not in (b"big", b"quit")

    messages = st.binary(max_size=MAX)
    if isinstance(framing, Delimited):
        delimiter = framing.delimiter
        messages = messages.map(lambda b: b.replace(delimiter, b""))
    return messages.filter(usable)


async def _send_in_chunks(framing: Framing, messages: list[bytes], chunks: list[bytes]) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port:
            stream = await open_raw(port)
            client_port = port_of(stream)
            async with stream:
                for chunk in chunks:
                    await stream.send_all(chunk)
                    # Let the server take it as one chunk before the next is sent.
                    await trio.testing.wait_all_tasks_blocked()
                replies = b"".join(framing.encode(message.upper()) for message in messages)
                assert await receive_exactly(stream, len(replies)) == replies
            service = await server.connection(client_port)
            await service.closed.wait()
        assert service.messages == messages
        assert service.events == ["close"]


@pytest.mark.parametrize("framing", FRAMINGS)
@settings(max_examples=15)
@given(data=st.data())
def test_any_chunking_delivers_the_same_messages(framing: Framing, data: st.DataObject) -> None:
    messages = data.draw(st.lists(_messages_for(framing), max_size=6), label="messages")
    wire = b"".join(map(framing.encode, messages))
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    trio.run(_send_in_chunks, framing, messages, split(wire, cuts))


class TwoArguments(trio_tcp.ConnectionService):
    """``on_bytes(caller, message)``: pushes a framed message and raw bytes, then replies."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing

    async def on_bytes(self, caller: trio_tcp.Caller, message: bytes) -> bytes:
        await caller.write_message(b"ack " + message)  # framed
        await caller.write_bytes(b"<raw>")  # exactly these bytes, no framing
        return message[::-1]  # framed


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_caller_form_write_message_and_raw_write_bytes(framing: Framing) -> None:
    with trio.fail_after(5):
        async with serving(Server(lambda _: TwoArguments(framing))) as port:
            stream = await open_raw(port)
            async with stream:
                await stream.send_all(framing.encode(b"hello") + framing.encode(b"abc"))
                expected = b"".join(
                    (
                        framing.encode(b"ack hello"),
                        b"<raw>",
                        framing.encode(b"olleh"),
                        framing.encode(b"ack abc"),
                        b"<raw>",
                        framing.encode(b"cba"),
                    )
                )
                assert await receive_exactly(stream, len(expected)) == expected
                await stream.send_eof()
                assert await read_until_eof(stream) == (b"", False)


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_caller_write_message_from_other_tasks(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port, await connect(port, framing) as client:
            await client.write_message(b"hi")
            assert await client.read_message() == b"HI"
            caller = (await server.connection(client.local_port)).caller
            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(caller.write_message, b"push %d" % i)
            pushed = [await client.read_message() for _ in range(20)]
            # Each one whole (not interleaved), in whichever order the tasks ran.
            assert sorted(pushed) == sorted(b"push %d" % i for i in range(20))
            with pytest.raises(trio_tcp.FramingError, match="max_size"):
                await caller.write_message(b"z" * (MAX + 1))
            # Nothing of it was sent, and the connection is still open.
            await client.write_message(b"still there?")
            assert await client.read_message() == b"STILL THERE?"


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_close_from_on_bytes_drops_the_rest_of_the_chunk(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port:
            stream = await open_raw(port)
            client_port = port_of(stream)
            async with stream:
                burst = b"".join(map(framing.encode, [b"a", b"quit", b"b", b"big"]))
                await stream.send_all(burst)
                data, _ = await read_until_eof(stream)
            service = await server.connection(client_port)
            await service.closed.wait()
        assert data == framing.encode(b"A")
        assert service.messages == [b"a", b"quit"]
        assert service.events == ["close"]


# -- services: errors ----------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_oversize_frame_from_a_client_ends_only_its_connection(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with (
            serving(server) as port,
            await connect(port, framing) as bad,
            await connect(port, framing) as good,
        ):
            await good.write_message(b"before")
            assert await good.read_message() == b"BEFORE"
            await bad.write_message(b"fine")
            assert await bad.read_message() == b"FINE"

            await bad.write_bytes(oversize(framing))
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await bad.read_message()
            service = await server.connection(bad.local_port)
            await service.closed.wait()
            assert service.events == ["error", "close"]
            [error] = service.errors
            assert isinstance(error, trio_tcp.FramingError)
            assert f"max_size={MAX}" in str(error)
            assert service.messages == [b"fine"]

            await good.write_message(b"after")
            assert await good.read_message() == b"AFTER"
            assert (await server.connection(good.local_port)).events == []


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_oversize_reply_reaches_on_error_and_nothing_is_sent(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port:
            stream = await open_raw(port)
            client_port = port_of(stream)
            async with stream:
                await stream.send_all(framing.encode(b"ok"))
                assert await receive_exactly(stream, len(framing.encode(b"OK"))) == (
                    framing.encode(b"OK")
                )
                await stream.send_all(framing.encode(b"big"))
                data, _ = await read_until_eof(stream)
            service = await server.connection(client_port)
            await service.closed.wait()
        assert data == b""  # not a byte of the refused reply
        assert service.events == ["error", "close"]
        [error] = service.errors
        assert isinstance(error, trio_tcp.FramingError)
        assert "max_size" in str(error)


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_peer_closing_mid_message_is_a_framing_error(framing: Framing) -> None:
    with trio.fail_after(5):
        server = recording(framing)
        async with serving(server) as port:
            stream = await open_raw(port)
            client_port = port_of(stream)
            async with stream:
                await stream.send_all(framing.encode(b"whole") + unfinished(framing))
                await stream.send_eof()
                assert await read_until_eof(stream) == (framing.encode(b"WHOLE"), False)
            service = await server.connection(client_port)
            await service.closed.wait()
        assert service.messages == [b"whole"]
        assert service.events == ["error", "close"]
        [error] = service.errors
        assert isinstance(error, trio_tcp.FramingError)
        assert "middle of a message" in str(error)


class Unframed(trio_tcp.ConnectionService):
    """No ``framing`` attribute: ``caller.write_message`` must refuse."""

    def __init__(self) -> None:
        self.refusals: list[Exception] = []

    async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> bytes:
        try:
            await caller.write_message(data)
        except trio_tcp.Error as exc:
            self.refusals.append(exc)
        return data


@pytest.mark.trio
async def test_messages_need_a_framing_on_both_sides() -> None:
    with trio.fail_after(5):
        server = Server(lambda _: Unframed())
        async with serving(server) as port, await connect(port, None) as client:
            with pytest.raises(trio_tcp.Error, match="framing"):
                await client.write_message(b"x")
            with pytest.raises(trio_tcp.Error, match="framing"):
                await client.read_message()
            await client.write_bytes(b"raw")
            assert await client.read_exactly(3) == b"raw"  # echoed raw, nothing else
            service = await server.connection(client.local_port)
            [refusal] = service.refusals
            assert type(refusal) is trio_tcp.UsageError
            assert "framing" in str(refusal)


# -- clients ----------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_client_write_message_too_big_sends_nothing(framing: Framing) -> None:
    with trio.fail_after(5):
        async with connected(framing=framing) as (client, peer):
            with pytest.raises(trio_tcp.FramingError, match="max_size"):
                await client.write_message(b"z" * (MAX + 1))
            assert not client.closed
            await client.write_message(b"z" * MAX)  # exactly max_size is fine
            await client.aclose()
            assert await read_until_eof(peer) == (framing.encode(b"z" * MAX), False)


@pytest.mark.trio
async def test_client_write_message_containing_the_delimiter_sends_nothing() -> None:
    framing = Delimited(b"\n")
    with trio.fail_after(5):
        async with connected(framing=framing) as (client, peer):
            with pytest.raises(trio_tcp.FramingError, match="delimiter"):
                await client.write_message(b"two\nlines")
            await client.write_message(b"one line")
            await client.aclose()
            assert await read_until_eof(peer) == (b"one line\n", False)


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_client_read_message_too_big(framing: Framing) -> None:
    with trio.fail_after(5):
        async with connected(framing=framing) as (client, peer):
            await peer.send_all(framing.encode(b"fine"))
            assert await client.read_message() == b"fine"
            await peer.send_all(oversize(framing))
            with pytest.raises(trio_tcp.FramingError, match=f"max_size={MAX}"):
                await client.read_message()
            # The boundaries are lost: a later good-looking message is not trusted.
            await peer.send_all(framing.encode(b"after"))
            with pytest.raises(trio_tcp.FramingError, match="earlier") as excinfo:
                await client.read_message()
            assert isinstance(excinfo.value.__cause__, trio_tcp.FramingError)
            # Writing still works (to say goodbye); the client is not closed for you.
            assert not client.closed
            await client.write_message(b"bye")
            assert await receive_exactly(peer, len(framing.encode(b"bye"))) == (
                framing.encode(b"bye")
            )


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_client_read_message_at_end_of_stream(framing: Framing) -> None:
    with trio.fail_after(5):
        # Between messages: the ordinary end.
        async with connected(framing=framing) as (client, peer):
            await peer.send_all(framing.encode(b"last"))
            await peer.aclose()
            assert await client.read_message() == b"last"
            with pytest.raises(trio_tcp.ConnectionClosedError, match="peer") as excinfo:
                await client.read_message()
            assert "middle" not in str(excinfo.value)
        # In the middle of a message: ConnectionClosedError, like read_exactly, saying so.
        async with connected(framing=framing) as (client, peer):
            await peer.send_all(framing.encode(b"whole") + unfinished(framing))
            await peer.aclose()
            assert await client.read_message() == b"whole"
            with pytest.raises(trio_tcp.ConnectionClosedError, match="middle of a message"):
                await client.read_message()
            with pytest.raises(trio_tcp.ConnectionClosedError):
                await client.read_message()


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_read_timeout_is_per_message_inactivity(
    framing: Framing, autojump_clock: trio.testing.MockClock
) -> None:
    wire = framing.encode(b"slowly but surely")
    with trio.fail_after(5):
        async with connected(framing=framing, timeout=0.1) as (client, peer):

            async def dribble() -> None:
                for i in range(len(wire)):
                    await trio.sleep(0.06)
                    await peer.send_all(wire[i : i + 1])

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dribble)
                assert await client.read_message() == b"slowly but surely"
            # Far longer than the timeout in total, but never 0.1 s without a byte.
            assert trio.current_time() - start >= 0.06 * len(wire) > 0.1


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_read_timeout_mid_message_keeps_the_partial_message(
    framing: Framing, autojump_clock: trio.testing.MockClock
) -> None:
    wire = framing.encode(b"interrupted message")
    with trio.fail_after(5):
        async with connected(framing=framing, timeout=0.1) as (client, peer):
            await peer.send_all(wire[:5])
            start = trio.current_time()
            with pytest.raises(trio_tcp.ReadTimeoutError):
                await client.read_message()
            assert trio.current_time() - start == pytest.approx(0.1)
            await peer.send_all(wire[5:] + framing.encode(b"next"))
            assert await client.read_message() == b"interrupted message"
            assert await client.read_message() == b"next"


# -- user-written and bad framings --------------------------------------------------------


class FixedSize:
    """The worked example of docs/framing.md: every message is exactly ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, message: bytes) -> bytes:
        if len(message) != self.size:
            raise trio_tcp.FramingError(f"record must be {self.size} bytes, got {len(message)}")
        return message

    def decoder(self) -> FixedSizeDecoder:
        return FixedSizeDecoder(self.size)


class FixedSizeDecoder:
    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = bytearray()  # never more than size - 1 bytes between calls

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        whole = len(self.buffer) - len(self.buffer) % self.size
        records = [bytes(self.buffer[i : i + self.size]) for i in range(0, whole, self.size)]
        del self.buffer[:whole]
        return records

    def pending(self) -> int:
        return len(self.buffer)


class Spy:
    """Wraps a framing; counts decoder feeds and records the most any decoder buffered."""

    def __init__(self, inner: Framing) -> None:
        self.inner = inner
        self.feeds = 0
        self.fed = 0
        self.most_pending = 0

    def encode(self, message: bytes) -> bytes:
        return self.inner.encode(message)

    def decoder(self) -> SpyDecoder:
        return SpyDecoder(self, self.inner.decoder())


class SpyDecoder:
    def __init__(self, spy: Spy, inner: Decoder) -> None:
        self.spy = spy
        self.inner = inner

    def feed(self, data: bytes) -> Sequence[bytes]:
        self.spy.feeds += 1
        self.spy.fed += len(data)
        try:
            return self.inner.feed(data)
        finally:
            self.spy.most_pending = max(self.spy.most_pending, self.inner.pending())

    def pending(self) -> int:
        return self.inner.pending()


@pytest.mark.trio
async def test_user_defined_framing_on_both_sides() -> None:
    records = [bytes([i]) * 8 for i in range(50)]
    with trio.fail_after(5):
        server = recording(FixedSize(8))
        async with serving(server) as port, await connect(port, FixedSize(8)) as client:
            await client.write_bytes(b"".join(records)[:-3])  # a burst, cut mid-record
            await client.write_bytes(b"".join(records)[-3:])
            assert [await client.read_message() for _ in records] == [r.upper() for r in records]
            with pytest.raises(trio_tcp.FramingError, match="8 bytes"):
                await client.write_message(b"short")
            await client.write_message(b"abcdefgh")
            assert await client.read_message() == b"ABCDEFGH"
            service = await server.connection(client.local_port)
        await service.closed.wait()
        assert service.messages == [*records, b"abcdefgh"]
        assert service.events == ["close"]


@pytest.mark.trio
async def test_bad_framing_is_a_type_error_at_connect_before_any_socket() -> None:
    with trio.fail_after(5):
        # A bound port that does not listen: connecting would be refused (ConnectError).
        sock = trio.socket.socket()
        with sock:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            with pytest.raises(TypeError, match="framing must have encode"):
                await trio_tcp.Client.connect("127.0.0.1", port, framing=object())  # type: ignore[arg-type]
            with pytest.raises(trio_tcp.ConnectError):
                await trio_tcp.Client.connect("127.0.0.1", port, framing=Delimited(b"\n"))


class FailingDecoder(FixedSize):
    def decoder(self) -> FixedSizeDecoder:
        raise RuntimeError("no decoder today")


@pytest.mark.trio
async def test_client_connect_closes_the_socket_if_the_decoder_fails() -> None:
    with trio.fail_after(5):
        async with loopback_server() as server:
            with pytest.raises(RuntimeError, match="no decoder today"):
                await trio_tcp.Client.connect(server.host, server.port, framing=FailingDecoder(4))
            peer = await server.accept()
            assert await read_until_eof(peer) == (b"", False)  # closed, not leaked


class Greeter(trio_tcp.Service):
    """Greets in ``on_connect``, where the connection service (and its framing) is not yet known."""

    def __init__(self, framing: Framing) -> None:
        self.framing = framing
        self.refusals: list[trio_tcp.Error] = []

    async def on_connect(self, caller: trio_tcp.Caller) -> Recorder:
        try:
            await caller.write_message(b"welcome")
        except trio_tcp.Error as exc:
            self.refusals.append(exc)
        await caller.write_bytes(self.framing.encode(b"welcome"))  # what the docs advise
        return Recorder(self.framing, caller)


@pytest.mark.trio
@pytest.mark.parametrize("framing", FRAMINGS)
async def test_greeting_from_on_connect(framing: Framing) -> None:
    with trio.fail_after(5):
        server = Greeter(framing)
        async with serving(server) as port, await connect(port, framing) as client:
            assert await client.read_message() == b"welcome"
            await client.write_message(b"hi")
            assert await client.read_message() == b"HI"
        [refusal] = server.refusals
        assert "framing" in str(refusal)


class Broken(Recorder):
    """A connection service whose ``framing`` is the object under test."""

    def __init__(self, framing: object, caller: trio_tcp.Caller) -> None:
        super().__init__(Delimited(b"\n"), caller)
        self.framing = framing  # type: ignore[assignment]


class NoDecoder:
    def encode(self, message: bytes) -> bytes:
        return message


class DecoderWithoutPending:
    def encode(self, message: bytes) -> bytes:
        return message

    def decoder(self) -> object:
        return self


class BuggyDecoder(FixedSizeDecoder):
    def feed(self, data: bytes) -> list[bytes]:
        raise IndexError("a bug in a user's decoder")


class BuggyFeed(FixedSize):
    def decoder(self) -> BuggyDecoder:
        return BuggyDecoder(self.size)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("framing", "cause", "where"),
    [
        pytest.param(object(), TypeError, "connection service", id="plain-object"),
        pytest.param(NoDecoder(), TypeError, "connection service", id="no-decoder"),
        pytest.param(DecoderWithoutPending(), TypeError, "decoder()", id="decoder-no-pending"),
        pytest.param(BuggyFeed(4), IndexError, "decoder", id="feed-raises"),
    ],
)
async def test_bad_service_framing_is_reported_at_connection_start(
    framing: object, cause: type[Exception], where: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_tcp")
    with trio.fail_after(5):
        bad_server = Server(lambda caller: Broken(framing, caller))
        good_server = recording(Delimited(b"\n"))
        async with serving(bad_server) as bad_port, serving(good_server) as good_port:
            stream = await open_raw(bad_port)
            client_port = port_of(stream)
            async with stream:
                await stream.send_all(b"data\n")
                data, _ = await read_until_eof(stream)
            service = await bad_server.connection(client_port)
            await service.closed.wait()
            assert data == b""
            assert service.events == ["error", "close"]
            [error] = service.errors
            assert isinstance(error.__cause__, cause)
            assert any(where in record.getMessage() for record in caplog.records)
            # Logged as the service's fault, not as an internal error of trio_tcp.
            assert not any("internal error" in record.getMessage() for record in caplog.records)
            async with await connect(good_port, Delimited(b"\n")) as client:
                await client.write_message(b"unaffected")
                assert await client.read_message() == b"UNAFFECTED"


# -- bounded buffering ---------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024
#: The most one read can add on top of a decoder's own bound.
ONE_READ = 65536


@pytest.mark.trio
async def test_server_cuts_off_a_peer_streaming_without_a_delimiter() -> None:
    spy = Spy(Delimited(b"\n", max_size=1000))
    with trio.fail_after(5):
        server = recording(spy)
        listener = trio_tcp.Listener(0, local_host="127.0.0.1")
        listener.attach(server)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            assert listener.port is not None
            stream = await open_raw(listener.port)
            client_port = port_of(stream)
            async with stream:
                chunk = b"x" * ONE_READ
                try:
                    for _ in range(TEN_MB // len(chunk)):
                        await stream.send_all(chunk)
                except trio.BrokenResourceError:
                    pass  # the server hung up on us: the point of the test
                await read_until_eof(stream)  # and the connection is over
            service = await server.connection(client_port)
            await service.closed.wait()
            [error] = service.errors
            assert isinstance(error, trio_tcp.FramingError)
            assert "max_size=1000" in str(error)
            assert service.events == ["error", "close"]
            assert spy.most_pending <= 1000
            assert listener.stats.bytes_received <= 1000 + ONE_READ
            await listener.immediate_stop()


@pytest.mark.trio
@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(Delimited(b"\n", max_size=1000), id="delimited"),
        pytest.param(LengthPrefixed(4, max_size=1000), id="length-prefixed"),
    ],
)
async def test_client_cuts_off_a_peer_streaming_an_endless_message(framing: Framing) -> None:
    spy = Spy(framing)
    header = b"" if isinstance(framing, Delimited) else (2**31).to_bytes(4, "big")
    with trio.fail_after(5):
        async with connected(framing=spy) as (client, peer), trio.open_nursery() as nursery:

            async def stream_forever() -> None:
                await peer.send_all(header)
                chunk = b"x" * ONE_READ
                for _ in range(TEN_MB // len(chunk)):
                    await peer.send_all(chunk)

            nursery.start_soon(stream_forever)
            with pytest.raises(trio_tcp.FramingError, match="max_size=1000"):
                await client.read_message()
            nursery.cancel_scope.cancel()
        assert spy.most_pending <= 1000
        assert spy.fed <= 1000 + ONE_READ
