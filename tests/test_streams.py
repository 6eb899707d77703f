"""``_streams``: the transport view, pending input, the lingering close, endpoints, closing.

Real loopback sockets where the kernel's answer is the point (what waits
unread, what the peer has acknowledged, FIN and RST), in-memory streams
where only the logic is; TLS over both TLS versions with the session's
certificates.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from _sockets import clog, reset_now, stream_pair

from trio_tcp._config import LINGER_BYTES, LINGER_TIME, RECEIVE_SIZE
from trio_tcp._memory import MemoryStream, memory_connection
from trio_tcp._streams import (
    Endpoints,
    TransportView,
    close_now,
    close_now_sync,
    close_stream,
    endpoints,
    linger,
    peer_name,
    pending_input,
)
from trio_tcp._tcplistener import TCPListener
from trio_tcp._tcpstream import TCPStream, prepare_socket

CLIENT = Endpoints("192.0.2.7", 40123, "127.0.0.1", 3000)


async def _eventually_pending(stream: trio.abc.Stream, count: int) -> None:
    # The kernel says nothing when bytes arrive: poll (the caller's fail_after bounds it).
    while pending_input(stream) != count:  # noqa: ASYNC110
        await trio.sleep(0.001)


async def _tls_pair(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> tuple[trio.SSLStream[TransportView], trio.SSLStream[TCPStream], TCPStream]:
    """(server TLS over a view over TCP, client TLS over TCP, the server's TCP), shaken hands."""
    client_tcp, server_tcp = await stream_pair()
    server = trio.SSLStream(TransportView(server_tcp), server_context, server_side=True)
    client = trio.SSLStream(client_tcp, client_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client, server_tcp


async def _memory_tls_pair(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> tuple[trio.SSLStream[TransportView], trio.SSLStream[MemoryStream], MemoryStream]:
    """As :func:`_tls_pair`, over a bounded in-memory connection (for the mock clock)."""
    client_end, server_end = memory_connection(CLIENT, buffer_size=4096)
    server = trio.SSLStream(TransportView(server_end), server_context, server_side=True)
    client = trio.SSLStream(client_end, client_context, server_hostname="localhost")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client, server_end


# -- TransportView: read-ahead bytes come first ---------------------------------------------


@pytest.mark.trio
async def test_prefixed_stream_returns_the_prefix_first_then_reads_on() -> None:
    with trio.fail_after(5):
        left, right = trio.testing.memory_stream_pair()
        stream = TransportView(right, b"abcdef")
        await left.send_all(b"ghi")
        assert await stream.receive_some(4) == b"abcd"
        assert await stream.receive_some() == b"ef"
        assert await stream.receive_some(10) == b"ghi"
        await stream.send_all(b"back")
        assert await left.receive_some() == b"back"
        await stream.wait_send_all_might_not_block()
        with pytest.raises(ValueError, match="max_bytes"):
            await TransportView(right, b"x").receive_some(0)
        await stream.aclose()
        assert await left.receive_some() == b""


@pytest.mark.trio
async def test_a_cancelled_receive_loses_no_prefix() -> None:
    with trio.fail_after(5):
        _, right = trio.testing.memory_stream_pair()
        stream = TransportView(right, b"abc")
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.receive_some()
        assert scope.cancelled_caught
        assert await stream.receive_some() == b"abc"


@pytest.mark.trio
async def test_receiving_the_prefix_is_a_checkpoint() -> None:
    with trio.fail_after(5):
        _, right = trio.testing.memory_stream_pair()
        stream = TransportView(right, b"abc")
        with trio.testing.assert_checkpoints():
            assert await stream.receive_some(1) == b"a"
        assert stream.pending_prefix() == 2


@pytest.mark.trio
async def test_closing_a_view_only_half_closes_the_transport() -> None:
    with trio.fail_after(5):
        peer, tcp = await stream_pair()
        view = TransportView(tcp, b"unread prefix")
        assert view.socket is tcp.socket
        await view.aclose()
        assert view.pending_prefix() == 0
        assert await peer.receive_some(10) == b""  # our FIN
        # The transport is still open, for its owner to read the peer's last bytes.
        await peer.send_all(b"last words")
        assert await tcp.receive_some(100) == b"last words"
        await view.aclose()  # again: harmless
        await peer.aclose()
        await view.aclose()  # the peer gone: still quiet
        await tcp.aclose()
        await view.aclose()  # the transport closed under it: still quiet


@pytest.mark.trio
async def test_tls_over_a_view_closes_with_close_notify_and_fin_not_the_socket(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(5):
        server, client, server_tcp = await _tls_pair(server_context, client_context)
        await server.aclose()
        assert await client.receive_some() == b""  # close_notify: a clean TLS end
        assert await client.transport_stream.receive_some() == b""  # then FIN
        assert server_tcp.socket.fileno() != -1  # the socket is the connection's to close
        await client.transport_stream.send_all(b"after")
        assert await server_tcp.receive_some(10) == b"after"
        await server_tcp.aclose()
        await client.transport_stream.aclose()


# -- pending_input ---------------------------------------------------------------------------


@pytest.mark.trio
async def test_pending_input_counts_a_views_prefix_and_the_kernel_queue() -> None:
    with trio.fail_after(5):
        peer, tcp = await stream_pair()
        view = TransportView(tcp, b"abc")
        assert pending_input(view) == 3
        await peer.send_all(b"defg")
        await _eventually_pending(view, 7)
        assert await view.receive_some() == b"abc"
        assert pending_input(view) == 4
        assert await view.receive_some() == b"defg"
        assert pending_input(view) == 0
        await peer.aclose()
        await tcp.aclose()


@pytest.mark.trio
async def test_pending_input_through_tls_counts_what_tls_holds_and_the_kernel_holds(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(5):
        server, client, server_tcp = await _tls_pair(server_context, client_context)
        assert pending_input(server) == 0
        await client.send_all(b"hello world")
        # Not decrypted yet: counted as it arrived, encrypted (a little more).
        while not pending_input(server):  # noqa: ASYNC110
            await trio.sleep(0.001)
        assert pending_input(server) == server_tcp.pending_input() > len(b"hello world")
        assert await server.receive_some(5) == b"hello"
        # Decrypted and not read yet: counted from TLS's buffer.
        assert pending_input(server) == len(b" world")
        assert await server.receive_some() == b" world"
        assert pending_input(server) == 0
        await server_tcp.aclose()
        await client.transport_stream.aclose()


@pytest.mark.trio
async def test_pending_input_of_other_streams() -> None:
    with trio.fail_after(5):
        # An in-memory connection says so itself.
        client, server = memory_connection(CLIENT)
        await client.send_all(b"12345")
        assert pending_input(server) == 5
        assert pending_input(TransportView(server, b"ab")) == 7
        # trio's own socket stream: asked of its socket.
        left, right = socket.socketpair()
        trio_left = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        right.sendall(b"xyz")
        await _eventually_pending(trio_left, 3)
        await trio_left.aclose()
        assert pending_input(trio_left) is None  # closed: nothing to ask
        right.close()
        # A stream that cannot tell.
        memory_left, memory_right = trio.testing.memory_stream_pair()
        await memory_left.send_all(b"x")
        assert pending_input(memory_right) is None
        assert pending_input(TransportView(memory_right, b"ab")) == 2


# -- linger --------------------------------------------------------------------------------


@pytest.mark.trio
async def test_linger_ends_at_the_peers_end_of_stream_counting_what_it_discards() -> None:
    with trio.fail_after(5):
        # Nothing to ask about acknowledgements: read to the end of stream.
        peer, stream = trio.testing.memory_stream_pair()
        await peer.send_all(b"x" * 1000)
        await peer.send_eof()
        assert await linger(stream) == (1000, True)


@pytest.mark.trio
async def test_linger_over_tcp_reads_to_the_end_while_ours_is_unacknowledged() -> None:
    with trio.fail_after(5):
        peer, stream = await stream_pair(small_buffers=True)
        await clog(stream)  # ours sits unacknowledged: the peer does not read
        await peer.send_all(b"x" * 3000)
        await peer.send_eof()
        assert (stream.unacked_output() or 0) > 0
        assert await linger(stream) == (3000, True)
        await peer.aclose()
        await stream.aclose()


@pytest.mark.trio
async def test_linger_ends_early_when_nothing_is_unread_and_all_is_acknowledged() -> None:
    with trio.fail_after(5):
        peer, stream = await stream_pair()
        await stream.send_all(b"our last reply")
        await peer.send_all(b"0123456789")  # and the peer keeps the connection open
        await _eventually_pending(stream, 10)
        start = trio.current_time()
        assert await linger(stream) == (10, False)
        assert trio.current_time() - start < LINGER_TIME / 4
        assert await peer.receive_some(100) == b"our last reply"
        await peer.aclose()
        await stream.aclose()


@pytest.mark.trio
async def test_linger_waits_until_the_peer_has_acknowledged_everything() -> None:
    with trio.fail_after(5):
        peer, stream = await stream_pair(small_buffers=True)
        ours, theirs = await clog(stream, peer)
        received = 0

        async def read_late() -> None:
            # The peer catches up a little later: only then is closing safe.
            nonlocal received
            await trio.sleep(0.2)
            while received < ours:
                received += len(await peer.receive_some(1 << 16))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_late)
            start = trio.current_time()
            discarded, eof = await linger(stream)
            elapsed = trio.current_time() - start
        assert 0.2 <= elapsed < LINGER_TIME
        assert (discarded, eof) == (theirs, False)
        assert stream.unacked_output() == 0
        await peer.aclose()
        await stream.aclose()


@pytest.mark.trio
async def test_linger_is_bounded_in_time(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(100):
        _, stream = trio.testing.memory_stream_pair()  # a peer that never closes
        start = trio.current_time()
        assert await linger(stream) == (0, False)
        assert trio.current_time() - start == pytest.approx(LINGER_TIME)


@pytest.mark.trio
async def test_linger_is_bounded_in_bytes() -> None:
    with trio.fail_after(5):
        peer, stream = trio.testing.memory_stream_pair()
        await peer.send_all(b"x" * (LINGER_BYTES + 5 * RECEIVE_SIZE))  # and never EOF
        discarded, eof = await linger(stream)
        assert LINGER_BYTES <= discarded < LINGER_BYTES + RECEIVE_SIZE
        assert not eof


@pytest.mark.trio
async def test_linger_stops_quietly_at_a_reset() -> None:
    with trio.fail_after(5):
        peer, stream = await stream_pair(small_buffers=True)
        await clog(stream)  # unacknowledged: linger would wait for the peer
        reset_now(peer.socket)
        assert await linger(stream) == (0, False)
        await stream.aclose()


# -- endpoints -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_endpoints_of_an_accepted_tcp_stream_through_its_layers(
    server_context: ssl.SSLContext,
) -> None:
    with trio.fail_after(5):
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        listener = TCPListener(listening)
        with socket.create_connection(listening.getsockname()) as client:
            stream = await listener.accept()
            expected = Endpoints(*client.getsockname(), *listening.getsockname())
            assert endpoints(stream) == expected
            view = TransportView(stream)
            assert endpoints(view) == expected
            assert endpoints(trio.SSLStream(view, server_context, server_side=True)) == expected
            await stream.aclose()
        await listener.aclose()


@pytest.fixture
def unix_path() -> Iterator[Path]:
    # A short directory: a UNIX socket path must fit in about 100 bytes.
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "s"


@pytest.mark.trio
async def test_endpoints_of_unix_sockets_are_paths_without_ports(unix_path: Path) -> None:
    with trio.fail_after(5), socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(unix_path))
        listening.listen()
        connecting = socket.socket(socket.AF_UNIX)
        connecting.connect(str(unix_path))
        accepted, _ = listening.accept()
        prepare_socket(accepted)
        server_side = TCPStream(accepted)
        client_side = trio.SocketStream(trio.socket.from_stdlib_socket(connecting))
        # The connecting side is unbound: its name is empty.
        assert endpoints(server_side) == Endpoints("", 0, str(unix_path), 0)
        assert endpoints(client_side) == Endpoints(str(unix_path), 0, "", 0)
        assert peer_name(endpoints(client_side)) == str(unix_path)
        assert peer_name(endpoints(server_side)) == "unknown peer"
        await server_side.aclose()
        await client_side.aclose()


@pytest.mark.trio
async def test_endpoints_of_an_in_memory_stream_are_its_own_through_its_layers(
    server_context: ssl.SSLContext,
) -> None:
    with trio.fail_after(5):
        client, server = memory_connection(CLIENT)
        assert endpoints(client) == CLIENT
        assert endpoints(server) == Endpoints("127.0.0.1", 3000, "192.0.2.7", 40123)
        tls = trio.SSLStream(TransportView(server), server_context, server_side=True)
        assert endpoints(tls) == endpoints(server)
        await client.aclose()
        await server.aclose()


def test_endpoints_of_a_stream_without_a_socket_are_blank() -> None:
    left, _ = trio.testing.memory_stream_pair()
    assert endpoints(left) == Endpoints("", 0, "", 0)


@pytest.mark.parametrize(
    ("ends", "name"),
    [
        (Endpoints("192.0.2.7", 40123, "", 0), "192.0.2.7:40123"),
        (Endpoints("2001:db8::7", 443, "", 0), "[2001:db8::7]:443"),
        (Endpoints("/run/app.sock", 0, "", 0), "/run/app.sock"),
        (Endpoints("", 0, "", 0), "unknown peer"),
    ],
    ids=["ipv4", "ipv6", "unix-path", "blank"],
)
def test_peer_name_for_log_lines(ends: Endpoints, name: str) -> None:
    assert peer_name(ends) == name


# -- closing ---------------------------------------------------------------------------------


@pytest.mark.trio
async def test_close_now_sync_finds_the_socket_under_the_layers() -> None:
    with trio.fail_after(5):
        peer, tcp = await stream_pair()
        assert close_now_sync(TransportView(TransportView(tcp)))
        assert tcp.socket.fileno() == -1
        left, _ = trio.testing.memory_stream_pair()
        assert not close_now_sync(left)  # nothing to close without awaiting
        await peer.aclose()


@pytest.mark.trio
async def test_close_now_closes_even_in_a_cancelled_scope() -> None:
    with trio.fail_after(5):
        peer, tcp = await stream_pair()
        left, _ = trio.testing.memory_stream_pair()
        with trio.CancelScope() as scope:
            scope.cancel()
            await close_now(tcp)
            await close_now(left)
        assert tcp.socket.fileno() == -1
        with pytest.raises(trio.ClosedResourceError):
            await left.send_all(b"x")
        await peer.aclose()


@pytest.mark.trio
async def test_close_stream_in_a_cancelled_scope_is_forceful_at_once(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        server, client, transport = await _memory_tls_pair(server_context, client_context)
        sent = transport.peer_unread()
        start = trio.current_time()
        with trio.CancelScope() as scope:
            scope.cancel()
            await close_stream(server)
        assert trio.current_time() == start
        assert transport.peer_unread() == sent  # no close_notify went out
        # The transport is its owner's to close; once it is, the peer sees no clean end.
        await transport.aclose()
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()


@pytest.mark.trio
async def test_close_stream_gives_a_peer_that_never_reads_a_bounded_time(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(100):
        server, _, transport = await _memory_tls_pair(server_context, client_context)
        await transport.send_all(bytes(4096 - transport.peer_unread()))  # no room for close_notify
        start = trio.current_time()
        await close_stream(server, timeout=3)
        assert trio.current_time() - start == pytest.approx(3)
        await transport.aclose()
