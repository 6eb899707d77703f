"""The outbox (``Caller.send_nowait``) and ``Group``: fan-out that no slow peer can hold up.

Served in memory with a small ``buffer_size``, so a peer that never reads
fills its connection after a few writes, as a real socket does after a few
megabytes; and under ``autojump_clock``, so stops and grace periods take no
real time. Nothing here measures time: a sender that waited on a stuck peer
would hang, and ``fail_after`` would fail the test.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually

import trio_tcp
from trio_tcp.framing import Delimited, Framing, LengthPrefixed
from trio_tcp.testing import MemoryServer, MemoryStream, open_memory_server

#: Bytes each direction of an in-memory connection holds: small, so a peer
#: that does not read is full after a few messages.
BUFFER = 1000


class Member(trio_tcp.ConnectionService):
    """Relays what it receives to the rest of the room, without waiting; records its end."""

    def __init__(self, room: Room, caller: trio_tcp.Caller) -> None:
        self.room = room
        self.caller = caller
        self.handled = 0
        self.errors: list[trio_tcp.Error] = []
        self.closes = 0

    async def on_bytes(self, data: bytes) -> None:
        self.room.group.send_nowait(data, exclude=self.caller)
        self.handled += 1

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.errors.append(err)

    async def on_close(self) -> None:
        self.closes += 1


class LineMember(Member):
    """A member of a line-based room: relays whole lines, framed for each member."""

    framing: Framing = Delimited(b"\n")

    async def on_bytes(self, data: bytes) -> None:
        self.room.group.send_message_nowait(data, exclude=self.caller)
        self.handled += 1


class Room:
    """A ``Service``: every connection joins one group."""

    def __init__(self, member: type[Member] = Member) -> None:
        self.group = trio_tcp.Group()
        self.member = member
        self.members: dict[str, Member] = {}

    async def on_connect(self, caller: trio_tcp.Caller) -> Member:
        member = self.members[caller.id] = self.member(self, caller)
        self.group.add(caller)
        return member

    async def of(self, server: MemoryServer, client: trio_tcp.Client | MemoryStream) -> Member:
        return self.members[(await server.caller(client)).id]


async def read_exactly(stream: MemoryStream, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = await stream.receive_some(size - len(received))
        assert chunk, f"the stream ended after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def read_to_eof(stream: MemoryStream) -> bytes:
    received = bytearray()
    while chunk := await stream.receive_some():
        received += chunk
    return bytes(received)


def outbox_tasks() -> int:
    """How many outbox writer tasks exist in this trio run."""
    return sum(1 for task in _all_tasks() if task.name.endswith("_run_outbox"))


def _all_tasks() -> Iterator[trio.lowlevel.Task]:
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        yield task
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)


# -- the sender never waits ----------------------------------------------------------


@pytest.mark.trio
async def test_a_senders_on_bytes_never_waits_for_a_peer_that_does_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = Room()
        async with open_memory_server(room, buffer_size=BUFFER) as server:
            stuck = await server.open_stream()  # never reads
            sender = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            for index in range(50):
                await sender.send_all(b"%0100d" % index)  # 100 bytes, 5000 in all
                await trio.testing.wait_all_tasks_blocked()
                assert (await room.of(server, sender)).handled == index + 1
            # The stuck peer's connection is full and the rest waits in its outbox.
            assert stuck.pending_input() == BUFFER
            assert (await server.caller(stuck)).outbox_size == 5000 - BUFFER
            assert (await room.of(server, stuck)).errors == []
            # Once it reads, it gets everything, in order.
            assert await read_exactly(stuck, 5000) == b"".join(b"%0100d" % i for i in range(50))


@pytest.mark.trio
async def test_healthy_peers_get_every_message_in_order_while_one_is_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = Room(LineMember)
        async with open_memory_server(room, buffer_size=BUFFER, outbox_limit=2000) as server:
            stuck = await server.open_stream()
            healthy = [await server.connect(framing=Delimited(b"\n")) for _ in range(5)]
            sender = await server.connect(framing=Delimited(b"\n"))
            await trio.testing.wait_all_tasks_blocked()
            lines = [b"line %03d %s" % (index, b"x" * 80) for index in range(100)]

            async def receive_all(client: trio_tcp.Client) -> None:
                for line in lines:
                    assert await client.read_message() == line

            async with trio.open_nursery() as nursery:
                for client in healthy:
                    nursery.start_soon(receive_all, client)
                for line in lines:
                    await sender.write_message(line)
            # The stuck peer went over its limit and was dropped; nobody else was.
            stuck_member = next(m for m in room.members.values() if m.errors)
            assert [type(error) for error in stuck_member.errors] == [trio_tcp.OutboxFullError]
            assert server.stats.outbox_overflows == 1
            assert len(room.group) == 6
            assert all(not m.errors for m in room.members.values() if m is not stuck_member)
            received = await read_to_eof(stuck)  # what fitted, then the end
            assert len(received) < sum(len(line) + 1 for line in lines)


# -- the limit -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100, 700, 2500])
@pytest.mark.trio
async def test_a_stuck_peer_costs_at_most_the_outbox_limit(
    size: int, autojump_clock: trio.testing.MockClock
) -> None:
    limit = 5000
    with trio.fail_after(60):
        room = Room()
        async with open_memory_server(room, buffer_size=BUFFER, outbox_limit=limit) as server:
            stuck = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            caller = await server.caller(stuck)
            queued = 0
            while True:
                caller.send_nowait(b"x" * size)
                if caller.closed:
                    break
                queued += size
                await trio.testing.wait_all_tasks_blocked()
                # What the server holds for this peer: queued, minus what its
                # connection took. The outbox counts it, the limit bounds it.
                held = queued - stuck.pending_input()
                assert held <= caller.outbox_size <= limit
            assert limit - size < queued - BUFFER <= limit
            assert server.stats.outbox_overflows == 1
        [member] = room.members.values()
        assert [type(error) for error in member.errors] == [trio_tcp.OutboxFullError]
        assert member.closes == 1


@pytest.mark.trio
async def test_an_overflow_is_reported_to_the_slow_peer_and_counted(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(60):
        room = Room()
        async with open_memory_server(room, buffer_size=BUFFER, outbox_limit=3000) as server:
            stuck = await server.open_stream()
            sender = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            stuck_member = await room.of(server, stuck)
            sender_member = await room.of(server, sender)
            stuck_caller = await server.caller(stuck)
            for _ in range(5):
                await sender.send_all(b"y" * 1000)
                await trio.testing.wait_all_tasks_blocked()
            [error] = stuck_member.errors
            assert isinstance(error, trio_tcp.OutboxFullError)
            assert "3000" in str(error)  # names the limit
            assert stuck_member.closes == 1
            assert await server.caller(sender) in room.group
            assert len(room.group) == 1  # the dropped peer left the group
            assert sender_member.handled == 5
            assert sender_member.errors == []
            assert server.stats.outbox_overflows == 1
            assert server.stats.active_connections == 1
            with pytest.raises(trio_tcp.ConnectionClosedError):
                stuck_caller.send_nowait(b"late")  # refused from now on
        assert not [r for r in caplog.records if r.levelname == "ERROR"]


@pytest.mark.trio
async def test_under_raise_the_sender_is_told_and_nothing_is_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = Room()
        options: dict[str, Any] = {"outbox_limit": 3000, "outbox_overflow": "raise"}
        async with open_memory_server(room, buffer_size=BUFFER, **options) as server:
            stuck = await server.open_stream()
            other = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            caller = await server.caller(stuck)
            caller.send_nowait(b"a" * 1000)  # fills its connection
            await trio.testing.wait_all_tasks_blocked()
            caller.send_nowait(b"b" * 3000)  # fills its outbox
            before = caller.outbox_size
            assert before == 3000
            with pytest.raises(trio_tcp.OutboxFullError):
                caller.send_nowait(b"c")
            assert caller.outbox_size == before
            assert not caller.closed
            # A group send names who missed it, and still reaches everyone else.
            assert room.group.send_nowait(b"d") == [caller]
            assert await read_exactly(other, 1) == b"d"
            assert server.stats.outbox_overflows == 0
            # The peer catches up: everything queued arrives, nothing refused does.
            assert await read_exactly(stuck, 4000) == b"a" * 1000 + b"b" * 3000
            caller.send_nowait(b"e")
            assert await read_exactly(stuck, 1) == b"e"
        assert all(not member.errors for member in room.members.values())


@pytest.mark.parametrize("policy", ["close", "raise"])
@pytest.mark.trio
async def test_one_message_bigger_than_the_limit_is_an_overflow(policy: str) -> None:
    with trio.fail_after(5):
        room = Room()
        async with open_memory_server(
            room,
            outbox_limit=100,
            outbox_overflow=policy,  # type: ignore[arg-type]
        ) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            caller = await server.caller(client)
            if policy == "raise":
                with pytest.raises(trio_tcp.OutboxFullError):
                    caller.send_nowait(b"x" * 101)
                caller.send_nowait(b"x" * 100)  # exactly the limit fits
                assert await read_exactly(client, 100) == b"x" * 100
            else:
                caller.send_nowait(b"x" * 101)
                assert caller.closed
                assert await read_to_eof(client) == b""


@pytest.mark.trio
async def test_an_overflow_over_tcp_with_a_small_receive_buffer() -> None:
    with trio.fail_after(30):
        room = Room()
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio_tcp.serve, 0, room, local_host="127.0.0.1", outbox_limit=64 * 1024
            )
            listener = await nursery.start(serve)
            stuck = trio.socket.socket()
            # Set before connecting, so the window the peer advertises stays small.
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await stuck.connect(("127.0.0.1", listener.port))
            await eventually(lambda: len(room.group) == 1)
            [caller] = room.group
            chunk = b"z" * 16384
            sent = 0
            while not caller.closed:
                caller.send_nowait(chunk)
                sent += len(chunk)
                assert caller.outbox_size <= 64 * 1024
                await trio.lowlevel.checkpoint()
            await eventually(lambda: listener.stats.active_connections == 0)
            [member] = room.members.values()
            assert [type(error) for error in member.errors] == [trio_tcp.OutboxFullError]
            assert member.closes == 1
            assert listener.stats.outbox_overflows == 1
            assert sent > 64 * 1024  # the kernel's buffers took some first
            stuck.close()
            await listener.graceful_stop()


# -- order -------------------------------------------------------------------------


class Mixed(trio_tcp.ConnectionService):
    """Answers one request with queued data, a write and a reply, in that order."""

    def __init__(self, caller: trio_tcp.Caller) -> None:
        self.caller = caller

    async def on_bytes(self, data: bytes) -> bytes:
        self.caller.send_nowait(b"1" * 3000)  # more than the connection holds
        await self.caller.write_bytes(b"2" * 10)  # waits for the queued data
        self.caller.send_nowait(b"3" * 10)
        return b"4" * 10


@pytest.mark.trio
async def test_queued_data_writes_and_replies_keep_their_order() -> None:
    class Serve:
        async def on_connect(self, caller: trio_tcp.Caller) -> Mixed:
            return Mixed(caller)

    with trio.fail_after(5):
        async with open_memory_server(Serve(), buffer_size=BUFFER) as server:
            client = await server.open_stream()
            await client.send_all(b"go")
            await trio.testing.wait_all_tasks_blocked()  # the write waits for the reader
            expected = b"1" * 3000 + b"2" * 10 + b"3" * 10 + b"4" * 10
            assert await read_exactly(client, len(expected)) == expected
            await client.send_all(b"go")  # once more: the outbox task is running now
            assert await read_exactly(client, len(expected)) == expected


# -- stops and the end of a connection ---------------------------------------------


@pytest.mark.trio
async def test_a_graceful_stop_sends_the_whole_outbox_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = Room()
        data = b"".join(b"%09d\n" % index for index in range(500))  # 5000 bytes
        async with open_memory_server(room, buffer_size=BUFFER) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            (await server.caller(client)).send_nowait(data)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.listener.graceful_stop, 10)
                assert await read_to_eof(client) == data
        [member] = room.members.values()
        assert (member.errors, member.closes) == ([], 1)


@pytest.mark.parametrize("end", ["graceful stop", "idle timeout", "caller.close"])
@pytest.mark.trio
async def test_an_orderly_close_ends_despite_a_peer_that_does_not_read(
    end: str, autojump_clock: trio.testing.MockClock
) -> None:
    # The outbox task is stuck sending to the peer, with more queued behind it:
    # the close gives such a peer no more than its usual chance (2 s), as it
    # does when the connection itself was writing. No write_timeout is set.
    with trio.fail_after(600):
        room = Room()
        async with open_memory_server(room, buffer_size=BUFFER, idle_timeout=60) as server:
            stuck = await server.open_stream()
            caller = await server.caller(stuck)
            caller.send_nowait(b"x" * 3000)
            await trio.testing.wait_all_tasks_blocked()
            caller.send_nowait(b"y" * 100)
            start = trio.current_time()
            if end == "graceful stop":
                await server.listener.graceful_stop()  # no timeout of its own
            elif end == "caller.close":
                await caller.close()
            while server.stats.active_connections:  # noqa: ASYNC110 - a counter, no event
                await trio.sleep(1)  # simulated: coarse polling is as good, and cheaper
            assert trio.current_time() - start < 60 + 5
            assert outbox_tasks() == 0
        [member] = room.members.values()
        assert member.closes == 1


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=lambda v: v.name
)
@pytest.mark.trio
async def test_the_outbox_over_tls(
    version: ssl.TLSVersion, ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_leaf.configure_cert(server_context)
    server_context.minimum_version = server_context.maximum_version = version
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(10):
        room = Room(LineMember)
        async with open_memory_server(room, secure_socket=server_context) as server:
            alice, bob = [
                await server.connect(framing=Delimited(b"\n"), ssl_context=client_context)
                for _ in range(2)
            ]
            await server.caller(bob)
            lines = [b"%d" % index * 500 for index in range(50)]  # while bob reads
            for line in lines:
                await alice.write_message(line)
            for line in lines:
                assert await bob.read_message() == line
            room.group.send_message_nowait(b"goodbye")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.listener.graceful_stop)
                assert await bob.read_message() == b"goodbye"
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await bob.read_message()  # close_notify, after the outbox
        assert all(not member.errors for member in room.members.values())


@pytest.mark.trio
async def test_an_immediate_stop_drops_the_outbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        room = Room()
        async with open_memory_server(room, buffer_size=BUFFER) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            (await server.caller(client)).send_nowait(b"x" * 5000)
            await trio.testing.wait_all_tasks_blocked()
            await server.listener.immediate_stop()
            assert outbox_tasks() == 0
            received = await read_to_eof(client)
            assert received == b"x" * BUFFER  # what the connection held; the rest is gone
        [member] = room.members.values()
        assert member.closes == 1


@pytest.mark.trio
async def test_the_outbox_task_starts_on_first_use_and_ends_with_its_connection() -> None:
    with trio.fail_after(5):
        room = Room()
        async with open_memory_server(room) as server:
            quiet = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            assert outbox_tasks() == 0  # a connection that never queues starts none
            loud = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            (await server.caller(loud)).send_nowait(b"hello")
            assert await read_exactly(loud, 5) == b"hello"
            assert outbox_tasks() == 1
            await loud.aclose()
            await eventually(lambda: server.stats.active_connections == 1)
            assert outbox_tasks() == 0  # joined before its connection's on_close
            await quiet.aclose()
        assert [m.closes for m in room.members.values()] == [1, 1]


@pytest.mark.trio
async def test_the_outbox_task_is_joined_before_on_close() -> None:
    seen: list[int] = []

    class Watch(Member):
        async def on_close(self) -> None:
            seen.append(outbox_tasks())

    with trio.fail_after(5):
        room = Room(Watch)
        async with open_memory_server(room, buffer_size=BUFFER) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            (await server.caller(client)).send_nowait(b"x" * 5000)  # the task is stuck sending
            await trio.testing.wait_all_tasks_blocked()
            client.reset()
        assert seen == [0]


@pytest.mark.parametrize("how", ["caller.close", "peer closed", "overflow"])
@pytest.mark.trio
async def test_send_nowait_on_a_closed_caller_raises(how: str) -> None:
    with trio.fail_after(5):
        room = Room(LineMember)
        async with open_memory_server(room, outbox_limit=10) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            caller = await server.caller(client)
            if how == "caller.close":
                await caller.close()
            elif how == "peer closed":
                await client.aclose()
                await eventually(lambda: server.stats.active_connections == 0)
            else:
                caller.send_nowait(b"x" * 11)
            with pytest.raises(trio_tcp.ConnectionClosedError):
                caller.send_nowait(b"more")
            with pytest.raises(trio_tcp.ConnectionClosedError):
                caller.send_message_nowait(b"more")
        [member] = room.members.values()
        assert member.closes == 1


@pytest.mark.trio
async def test_what_was_queued_before_caller_close_is_still_sent() -> None:
    class Goodbye(trio_tcp.ConnectionService):
        def __init__(self, caller: trio_tcp.Caller) -> None:
            self.caller = caller

        async def on_bytes(self, data: bytes) -> None:
            self.caller.send_nowait(b"x" * 3000)
            await self.caller.close()

    class Serve:
        async def on_connect(self, caller: trio_tcp.Caller) -> Goodbye:
            return Goodbye(caller)

    with trio.fail_after(5):
        async with open_memory_server(Serve(), buffer_size=BUFFER) as server:
            client = await server.open_stream()
            await client.send_all(b"bye")
            assert await read_to_eof(client) == b"x" * 3000


def test_send_nowait_needs_a_connection_served_by_a_listener() -> None:
    from trio_tcp._caller import Caller
    from trio_tcp._streams import Endpoints
    from trio_tcp._writer import Writer

    _, server_end = trio.testing.memory_stream_pair()
    writer = Writer(server_end)
    writer.outbox_limit = 100
    caller = Caller(writer, Endpoints("192.0.2.1", 1, "127.0.0.1", 2), lambda: None)
    with pytest.raises(trio_tcp.UsageError):
        caller.send_nowait(b"x")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"outbox_limit": -1}, trio_tcp.ConfigurationError, id="negative-limit"),
        pytest.param({"outbox_limit": "1k"}, TypeError, id="limit-not-int"),
        pytest.param({"outbox_limit": None}, TypeError, id="limit-none"),
        pytest.param({"outbox_overflow": "drop"}, trio_tcp.ConfigurationError, id="bad-policy"),
        pytest.param({"outbox_overflow": 1}, TypeError, id="policy-not-str"),
    ],
)
def test_outbox_options_are_checked(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        trio_tcp.Listener(0, **options)


# -- Group -------------------------------------------------------------------------


@pytest.mark.trio
async def test_group_members_leave_when_their_connection_ends() -> None:
    with trio.fail_after(5):
        room = Room()
        async with open_memory_server(room) as server:
            clients = [await server.open_stream() for _ in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            callers = [await server.caller(client) for client in clients]
            assert len(room.group) == 3
            assert set(room.group) == set(callers)
            await clients[0].aclose()  # the peer leaves
            await callers[1].close()  # the service closes it
            clients[2].reset()  # a reset
            await eventually(lambda: server.stats.active_connections == 0)
            assert len(room.group) == 0
            assert all(caller not in room.group for caller in callers)
            assert room.group.send_nowait(b"nobody") == []


@pytest.mark.trio
async def test_group_add_discard_and_exclude() -> None:
    with trio.fail_after(5):
        room = Room()
        async with open_memory_server(room) as server:
            a, b, c = [await server.open_stream() for _ in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            ca, cb, cc = [await server.caller(s) for s in (a, b, c)]
            other = trio_tcp.Group()
            other.add(ca)
            other.add(ca)  # twice: once
            other.add(cb)
            assert len(other) == 2
            assert repr(other) == "<trio_tcp.Group of 2>"
            other.discard(cb)
            other.discard(cc)  # not a member: nothing happens
            assert list(other) == [ca]
            room.group.send_nowait(bytearray(b"all but a"), exclude=ca)
            assert await read_exactly(b, 9) == b"all but a"
            assert await read_exactly(c, 9) == b"all but a"
            assert a.pending_input() == 0
            await cc.close()
            await eventually(lambda: server.stats.active_connections == 2)
            other.add(cc)  # a closed caller is not added
            assert cc not in other
            with pytest.raises(TypeError):
                other.add("not a caller")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                other.discard("not a caller")  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                other.send_nowait("text")  # type: ignore[arg-type]
            # A member of two groups leaves both.
            await a.aclose()
            await eventually(lambda: server.stats.active_connections == 1)
            assert len(other) == 0
            assert ca not in room.group


@pytest.mark.trio
async def test_group_messages_are_framed_for_each_member() -> None:
    class Lines(LineMember):
        framing = Delimited(b"\n")

    class Lengths(LineMember):
        framing = LengthPrefixed(2)

    class Mixed(Room):
        async def on_connect(self, caller: trio_tcp.Caller) -> Member:
            kind = Lines if len(self.members) % 2 == 0 else Lengths
            member = self.members[caller.id] = kind(self, caller)
            self.group.add(caller)
            return member

    with trio.fail_after(5):
        room = Mixed()
        async with open_memory_server(room) as server:
            lines = await server.connect(framing=Delimited(b"\n"))
            lengths = await server.connect(framing=LengthPrefixed(2))
            await trio.testing.wait_all_tasks_blocked()
            assert room.group.send_message_nowait(b"hello") == []
            assert await lines.read_message() == b"hello"
            assert await lengths.read_message() == b"hello"
            # Relayed from one framing to the other.
            await lengths.write_message(b"from lengths")
            assert await lines.read_message() == b"from lengths"
            await lines.write_message(b"from lines")
            assert await lengths.read_message() == b"from lines"


@pytest.mark.trio
async def test_a_message_one_member_cannot_frame_reaches_nobody() -> None:
    class Short(LineMember):
        framing = Delimited(b"\n", max_size=4)

    class Mixed(Room):
        async def on_connect(self, caller: trio_tcp.Caller) -> Member:
            kind = LineMember if not self.members else Short
            member = self.members[caller.id] = kind(self, caller)
            self.group.add(caller)
            return member

    with trio.fail_after(5):
        room = Mixed()
        async with open_memory_server(room) as server:
            roomy = await server.open_stream()
            short = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio_tcp.FramingError):
                room.group.send_message_nowait(b"too long")
            with pytest.raises(trio_tcp.FramingError):
                room.group.send_message_nowait(b"a\nb")
            assert [(await server.caller(s)).outbox_size for s in (roomy, short)] == [0, 0]
            room.group.send_message_nowait(b"ok")
            assert await read_exactly(roomy, 3) == b"ok\n"
            assert await read_exactly(short, 3) == b"ok\n"


@pytest.mark.trio
async def test_a_group_message_to_a_member_without_framing_is_a_usage_error() -> None:
    with trio.fail_after(5):
        room = Room()  # raw members
        async with open_memory_server(room) as server:
            client = await server.open_stream()
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio_tcp.UsageError, match="framing"):
                room.group.send_message_nowait(b"hi")
            with pytest.raises(trio_tcp.UsageError, match="framing"):
                (await server.caller(client)).send_message_nowait(b"hi")
            assert (await server.caller(client)).outbox_size == 0


@pytest.mark.trio
async def test_a_member_still_in_on_connect_does_not_break_a_broadcast() -> None:
    # A member is added in on_connect, which then waits: its framing is not
    # known until on_connect returns, so it cannot take messages yet. Another
    # member's broadcast must neither fail nor miss anyone else.
    admitted = trio.Event()

    class Slow(Room):
        def __init__(self) -> None:
            super().__init__(LineMember)

        async def on_connect(self, caller: trio_tcp.Caller) -> Member:
            self.group.add(caller)
            caller.send_nowait(b"welcome\n")  # raw bytes need no framing
            if len(self.group) == 3:
                await admitted.wait()
            member = self.members[caller.id] = self.member(self, caller)
            return member

    with trio.fail_after(5):
        room = Slow()
        async with open_memory_server(room) as server:
            a, b, late = [await server.connect(framing=Delimited(b"\n")) for _ in range(3)]
            await trio.testing.wait_all_tasks_blocked()
            for client in (a, b, late):
                assert await client.read_message() == b"welcome"
            await a.write_message(b"before")
            assert await b.read_message() == b"before"
            admitted.set()
            await trio.testing.wait_all_tasks_blocked()
            await a.write_message(b"after")
            assert await b.read_message() == b"after"
            assert await late.read_message() == b"after"  # "before" was not for it
            assert all(not member.errors for member in room.members.values())
