"""Connected loopback sockets and ``TCPStream`` pairs for the transport tests.

"Clogged" pairs have both directions full, the state
``trio.testing.check_half_closeable_stream`` needs to check the blocking
paths: small kernel buffers, then writes until ``send`` would block.
"""

from __future__ import annotations

import socket
import struct

import trio

from trio_tcp._tcpstream import TCPStream, prepare_socket

__all__ = ["clog", "clogged_stream_pair", "reset_now", "stream_pair", "tcp_pair"]

#: Socket buffer size asked for clogged pairs (the kernel doubles it and keeps
#: its own minimum): a few KiB fill in a handful of writes.
_SMALL_BUFFER = 4096


def tcp_pair(*, small_buffers: bool = False) -> tuple[socket.socket, socket.socket]:
    """A connected pair of blocking 127.0.0.1 sockets: (client, accepted)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.socket()
        if small_buffers:
            # Before connect() and listen(): the receive window is fixed at the handshake.
            for sock in (server, client):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SMALL_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SMALL_BUFFER)
        client.connect(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


async def stream_pair(*, small_buffers: bool = False) -> tuple[TCPStream, TCPStream]:
    """Two connected ``TCPStream``s over loopback."""
    await trio.lowlevel.checkpoint()
    left, right = tcp_pair(small_buffers=small_buffers)
    for sock in (left, right):
        prepare_socket(sock)
    return TCPStream(left), TCPStream(right)


def _fill(sock: socket.socket) -> int:
    sent = 0
    chunk = bytes(65536)
    while True:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            return sent


async def clog(*streams: TCPStream) -> list[int]:
    """Write on each stream until its ``send`` would block, and stays blocked.

    The first refusal is not final: the kernel moves queued data on to the
    peer and frees room as acknowledgements come back. So fill, let it
    settle, and fill again until nothing more fits. Both directions of a
    pair clogged together stay so; one direction alone may take a couple
    of KiB more once the peer's delayed acknowledgement comes (~40 ms):
    still full for any large send, but not to the byte.

    Returns:
        How many bytes were written on each stream.
    """
    totals = [0] * len(streams)
    while True:
        sent = [_fill(stream.socket) for stream in streams]
        totals = [total + more for total, more in zip(totals, sent, strict=True)]
        if not any(sent):
            return totals
        await trio.sleep(0.005)  # the kernel has no event for "settled"


async def clogged_stream_pair() -> tuple[TCPStream, TCPStream]:
    """Two connected ``TCPStream``s whose sends both block until the other side reads."""
    left, right = await stream_pair(small_buffers=True)
    await clog(left, right)
    return left, right


def reset_now(sock: socket.socket) -> None:
    """Close ``sock`` with an RST instead of a FIN (``SO_LINGER`` on, zero seconds)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
