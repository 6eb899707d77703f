"""``TCPListener``: trio's ``SocketListener`` contract, every accept errno, and the serving loop.

Accept errors are driven by a fake listening socket whose ``accept()`` raises
the errnos a test chooses (the kernel cannot be made to on demand), readiness
coming from a real socketpair so trio's I/O waits work on it. The serving
loop's side (out of file descriptors: pause, log a little, retry) runs over a
fake trio listener, and once for real, in a child process with a low
``RLIMIT_NOFILE``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections import deque
from typing import Any

import pytest
import trio
import trio.testing
from _loopback import eventually, open_fds
from _sockets import reset_now

import trio_tcp
from trio_tcp._memory import memory_connection
from trio_tcp._streams import Endpoints, endpoints
from trio_tcp._tcplistener import CAPACITY_ERRNOS, SKIP_ERRNOS, TCPListener
from trio_tcp._tcpstream import TCPStream

PEER = ("192.0.2.1", 40001)


class FakeListeningSocket:
    """Just enough of a listening stdlib socket: ``accept()`` plays back queued events.

    An event is an ``OSError`` to raise or a connected socket to return. The
    fake is readable while events wait (a byte sits in a real socketpair),
    so ``wait_readable`` works on it as on the real thing.
    """

    def __init__(self) -> None:
        self._ready, self._wake = socket.socketpair()
        self._ready.setblocking(False)
        self.events: deque[OSError | socket.socket] = deque()
        self.accepts = 0

    def push(self, *events: OSError | socket.socket) -> None:
        self.events.extend(events)
        if self._wake.fileno() != -1:  # not closed
            self._wake.send(b"!")

    def gettimeout(self) -> float:
        return 0.0

    def fileno(self) -> int:
        return self._ready.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        self.accepts += 1
        if not self.events:
            raise BlockingIOError(errno.EAGAIN, "no connection waiting")
        event = self.events.popleft()
        if not self.events:
            while True:  # no longer readable
                try:
                    self._ready.recv(64)
                except BlockingIOError:
                    break
        if isinstance(event, OSError):
            raise event
        return event, PEER

    def close(self) -> None:
        self._ready.close()
        self._wake.close()


def fake_listener() -> tuple[TCPListener, FakeListeningSocket]:
    fake = FakeListeningSocket()
    return TCPListener(fake), fake  # type: ignore[arg-type]


def connection() -> socket.socket:
    """A connected socket to stand for an accepted connection (the other end is closed)."""
    mine, theirs = socket.socketpair()
    theirs.close()
    return mine


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def errno_id(code: int) -> str:
    return errno.errorcode[code]


# -- accept errnos -----------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("code", sorted(SKIP_ERRNOS), ids=errno_id)
async def test_errors_of_the_connection_being_accepted_are_skipped(code: int) -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        accepted = connection()
        fake.push(oserror(code), oserror(code), accepted)
        with trio.testing.assert_checkpoints():
            stream = await listener.accept()
        assert stream.socket is accepted
        assert fake.accepts == 3
        await stream.aclose()
        await listener.aclose()


@pytest.mark.trio
@pytest.mark.parametrize("code", [errno.EBADF, errno.ENOTSOCK], ids=errno_id)
async def test_a_listening_socket_closed_underfoot_is_closed_resource(code: int) -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        fake.push(oserror(code))
        with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError) as info:
            await listener.accept()
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == code
        await listener.aclose()


@pytest.mark.trio
@pytest.mark.parametrize("code", sorted(CAPACITY_ERRNOS), ids=errno_id)
async def test_capacity_errors_are_raised_for_the_serving_loop(code: int) -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        accepted = connection()
        fake.push(oserror(code), accepted)
        with (
            trio.testing.assert_checkpoints(),
            pytest.raises(OSError, match=re.escape(os.strerror(code))),
        ):
            await listener.accept()
        # Nothing was lost: the next accept gets the connection.
        stream = await listener.accept()
        assert stream.socket is accepted
        await stream.aclose()
        await listener.aclose()


@pytest.mark.trio
async def test_an_unexpected_errno_is_raised_as_it_is() -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        fake.push(oserror(errno.EFAULT))
        with trio.testing.assert_checkpoints(), pytest.raises(OSError, match="Bad address"):
            await listener.accept()
        await listener.aclose()


@pytest.mark.trio
async def test_accept_nowait_skips_takes_and_returns_none_when_empty() -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        with trio.testing.assert_no_checkpoints():
            assert listener.accept_nowait() is None
            accepted = connection()
            fake.push(oserror(errno.ECONNABORTED), accepted)
            stream = listener.accept_nowait()
            assert stream is not None
            assert stream.socket is accepted
            assert listener.accept_nowait() is None
            fake.push(oserror(errno.EMFILE))
            with pytest.raises(OSError, match="Too many open files"):
                listener.accept_nowait()
        await stream.aclose()
        await listener.aclose()


# -- closing -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_closed_listener_refuses_accept() -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        await listener.aclose()
        with trio.testing.assert_checkpoints():
            await listener.aclose()  # again: harmless, still a checkpoint
        fake.push(connection())  # even with a connection waiting
        with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
            await listener.accept()
        with pytest.raises(trio.ClosedResourceError):
            listener.accept_nowait()
        waiting = fake.events.pop()
        assert isinstance(waiting, socket.socket)
        waiting.close()


@pytest.mark.trio
async def test_closing_wakes_a_blocked_accept() -> None:
    with trio.fail_after(5):
        listener, _ = fake_listener()
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await listener.accept()

            nursery.start_soon(accept)
            await trio.testing.wait_all_tasks_blocked()
            listener.close_now()


# -- waiting -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_accept_is_a_checkpoint_and_cancellable() -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        # Already cancelled: raises before taking a connection that is waiting.
        fake.push(connection())
        with trio.CancelScope() as scope:
            scope.cancel()
            await listener.accept()
        assert scope.cancelled_caught
        assert fake.accepts == 0
        # A connection ready at once: still a checkpoint.
        with trio.testing.assert_checkpoints():
            stream = await listener.accept()
        await stream.aclose()
        # Waiting for one: cancellable.
        with trio.move_on_after(0.05) as scope:
            await listener.accept()
        assert scope.cancelled_caught
        await listener.aclose()


@pytest.mark.trio
async def test_accept_waits_for_the_next_connection() -> None:
    with trio.fail_after(5):
        listener, fake = fake_listener()
        accepted = connection()
        async with trio.open_nursery() as nursery:

            async def arrive() -> None:
                await trio.testing.wait_all_tasks_blocked()
                fake.push(accepted)

            nursery.start_soon(arrive)
            stream = await listener.accept()
        assert stream.socket is accepted
        await stream.aclose()
        await listener.aclose()


def test_a_blocking_listening_socket_is_refused() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as sock,
        pytest.raises(ValueError, match="non-blocking"),
    ):
        TCPListener(sock)


# -- real sockets --------------------------------------------------------------------------


def _listening() -> socket.socket:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@pytest.mark.trio
async def test_accept_returns_a_prepared_stream_with_the_peer_address() -> None:
    with trio.fail_after(5):
        listener = TCPListener(_listening())
        with socket.create_connection(listener.socket.getsockname()) as client:
            stream = await listener.accept()
            assert isinstance(stream, TCPStream)
            assert stream.socket.gettimeout() == 0.0
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert stream.peer == client.getsockname()
            client.sendall(b"hi")
            assert await stream.receive_some(10) == b"hi"
            await stream.aclose()
        await listener.aclose()


@pytest.mark.trio
async def test_a_peer_that_reset_before_accept_is_still_known_by_its_address() -> None:
    # The peer is gone by the time we accept: getpeername() fails, but the
    # address accept() returned is kept on the stream.
    with trio.fail_after(5):
        listener = TCPListener(_listening())
        client = socket.create_connection(listener.socket.getsockname())
        address = client.getsockname()
        reset_now(client)
        await trio.sleep(0.01)  # the RST has arrived
        stream = await listener.accept()
        with pytest.raises(OSError, match="not connected"):
            stream.socket.getpeername()
        assert stream.peer == address
        ends = endpoints(stream)
        assert (ends.remote_host, ends.remote_port) == address
        await stream.aclose()
        await listener.aclose()


@pytest.mark.trio
async def test_a_real_socket_closed_underfoot_is_a_closed_listener() -> None:
    with trio.fail_after(5):
        listener = TCPListener(_listening())
        listener.socket.close()  # the socket, not the listener
        with trio.testing.assert_checkpoints(), pytest.raises(trio.ClosedResourceError):
            await listener.accept()
        with pytest.raises(trio.ClosedResourceError):
            listener.accept_nowait()
        await listener.aclose()


@pytest.mark.trio
async def test_accept_nowait_takes_what_the_kernel_has_completed() -> None:
    with trio.fail_after(5):
        listener = TCPListener(_listening())
        assert listener.accept_nowait() is None
        clients = [socket.create_connection(listener.socket.getsockname()) for _ in range(3)]
        streams: list[TCPStream] = []
        while (stream := listener.accept_nowait()) is not None:
            streams.append(stream)
        assert {stream.peer for stream in streams} == {client.getsockname() for client in clients}
        for stream in streams:
            stream.close_now()
        for client in clients:
            client.close()
        await listener.aclose()


# -- trio's tables ---------------------------------------------------------------------------


def test_errno_tables_agree_with_trio() -> None:
    # trio's tables are private: if trio renames them, there is nothing to compare.
    highlevel_socket = pytest.importorskip("trio._highlevel_socket")
    serve_listeners = pytest.importorskip("trio._highlevel_serve_listeners")
    names = getattr(highlevel_socket, "_ignorable_accept_errno_names", None)
    skipped = getattr(highlevel_socket, "_ignorable_accept_errnos", None)
    capacity = getattr(serve_listeners, "ACCEPT_CAPACITY_ERRNOS", None)
    if names is None or skipped is None or capacity is None:
        pytest.skip("trio renamed its accept errno tables")
    assert set(skipped) == SKIP_ERRNOS
    assert {getattr(errno, name) for name in names if hasattr(errno, name)} == SKIP_ERRNOS
    assert set(capacity) == CAPACITY_ERRNOS
    assert not SKIP_ERRNOS & CAPACITY_ERRNOS


# -- the serving loop out of file descriptors ---------------------------------------------


class ShortOfDescriptors(trio.abc.Listener[trio.abc.Stream]):
    """A trio listener whose accept fails with EMFILE ``failures`` times, then connects once."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.client: trio.abc.Stream | None = None

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self.attempts <= self.failures:
            raise oserror(errno.EMFILE)
        if self.client is None:
            self.client, server = memory_connection(Endpoints("192.0.2.9", 5000, "", 0))
            return server
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Echo(trio_tcp.Service):
    def __init__(self) -> None:
        self.callers: list[trio_tcp.Caller] = []

    def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.callers.append(caller)
        return _Echo()


class _Echo(trio_tcp.ConnectionService):
    def on_bytes(self, data: bytes) -> bytes:
        return data


@pytest.mark.trio
async def test_out_of_descriptors_the_loop_logs_rarely_retries_and_resumes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_tcp")
    with trio.fail_after(100):
        # 35 failures, 0.1 s apart: 3.5 s out of descriptors.
        fake = ShortOfDescriptors(failures=35)
        service = Echo()
        listener = trio_tcp.Listener(0)
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            nursery.start_soon(listener.serve_listeners, [fake])
            await eventually(lambda: bool(service.callers))
            assert trio.current_time() - start == pytest.approx(3.5, abs=0.15)
            assert fake.client is not None
            await fake.client.send_all(b"ping")
            assert await fake.client.receive_some() == b"ping"
            await listener.immediate_stop()
    lines = [r for r in caplog.records if "accept failed" in r.getMessage()]
    # About one line a second, never one per failure; later ones count the rest.
    assert 3 <= len(lines) <= 5
    assert all(r.levelno == logging.ERROR for r in lines)
    assert "Too many open files" in lines[0].getMessage()
    assert "similar since the last report" in lines[-1].getMessage()


_CHILD = textwrap.dedent(
    """
    import os, resource, sys
    import trio, trio_tcp

    class Echo(trio_tcp.ConnectionService):
        def on_bytes(self, data):
            return data

    class Factory(trio_tcp.Service):
        def on_connect(self, caller):
            return Echo()

    async def main():
        listener = trio_tcp.Listener(0, local_host="127.0.0.1")
        listener.attach(Factory())
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            # Room for two connections, no more.
            used = len(os.listdir("/proc/self/fd"))
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (used + 2, hard))
            print(listener.port, flush=True)
            await trio.wrap_file(sys.stdin).read()  # until the test closes our stdin
            await listener.immediate_stop()

    trio.run(main)
    """
)


@pytest.mark.trio
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count descriptors")
async def test_a_real_descriptor_limit_pauses_serving_until_descriptors_free_up() -> None:
    with trio.fail_after(20):
        before = open_fds()
        child = await trio.lowlevel.open_process(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stderr is not None
        try:
            port = int((await child.stdout.receive_some(100)).strip())
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
            for client in clients:
                await client.send_all(b"ping")
            # Two are served; the others wait in the backlog while accept fails.
            for client in clients[:2]:
                assert await client.receive_some(4) == b"ping"
            errors = b""
            while b"Too many open files" not in errors:
                errors += await child.stderr.receive_some(4096)
            for client in clients[:2]:
                await client.aclose()
            # Descriptors are free again: the waiting two are served.
            for client in clients[2:]:
                assert await client.receive_some(4) == b"ping"
                await client.aclose()
            await child.stdin.aclose()
            assert await child.wait() == 0
        finally:
            child.kill()
            await child.wait()
            for pipe in (child.stdin, child.stdout, child.stderr):
                await pipe.aclose()
        assert errors.count(b"accept failed") <= 2  # rate-limited, not one per retry
    assert open_fds() == before
