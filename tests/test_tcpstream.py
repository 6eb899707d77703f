"""``TCPStream`` honours the whole trio stream contract, checked by trio's own checker."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from trio_tcp._tcpstream import TCPStream, prepare_socket


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


async def _stream_pair() -> tuple[TCPStream, TCPStream]:
    await trio.lowlevel.checkpoint()
    left, right = _tcp_pair()
    for sock in (left, right):
        prepare_socket(sock)
    return TCPStream(left), TCPStream(right)


@pytest.mark.trio
async def test_half_closeable_stream_contract() -> None:
    with trio.fail_after(20):
        await trio.testing.check_half_closeable_stream(_stream_pair, None)


@pytest.mark.trio
async def test_receive_after_peer_reset_is_broken() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        # SO_LINGER on, zero seconds: close() sends RST instead of FIN.
        right.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        right.socket.close()
        with pytest.raises(trio.BrokenResourceError) as info:
            await left.receive_some(10)
        assert isinstance(info.value.__cause__, ConnectionResetError)
        await left.aclose()


@pytest.mark.trio
async def test_close_wakes_a_blocked_receiver() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await left.receive_some(10)

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            await left.aclose()
        await right.aclose()


@pytest.mark.trio
async def test_every_operation_is_a_checkpoint() -> None:
    with trio.fail_after(5):
        left, right = await _stream_pair()
        await right.send_all(b"ready")
        await trio.sleep(0.05)  # the data is there: receive takes the fast path
        with trio.testing.assert_checkpoints():
            assert await left.receive_some(10) == b"ready"
        with trio.testing.assert_checkpoints():
            await left.send_all(b"x")
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await left.receive_some(10)
        await left.aclose()
        await right.aclose()
