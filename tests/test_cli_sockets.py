"""``trio-tcp serve`` on sockets it did not bind: ``--fd N`` and systemd socket activation.

The test process binds a listening socket on a port 0 and hands it over as
a parent would (``pass_fds``); for socket activation a small launcher puts it
on descriptor 3 and sets ``LISTEN_FDS`` / ``LISTEN_PID`` for its own process
id, then ``exec``s the command, exactly as systemd does.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from _cli_process import LOCAL, ask_pid, one_line, run_cli, serving, write_app
from _loopback import receive_exactly

from trio_tcp import BindError
from trio_tcp._cli import _sockets
from trio_tcp._cli._options import CommandError

#: Puts argv[1]'s descriptor on 3, sets systemd's variables for its own pid
#: (which exec keeps), and execs the rest of its arguments.
LAUNCHER = """\
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A listening socket on 127.0.0.1, port 0, as a parent process would open it."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        sock.listen()
        yield sock


async def echo_once(port: int) -> None:
    stream = await trio.open_tcp_stream(LOCAL, port)
    async with stream:
        await stream.send_all(b"ping")
        assert await receive_exactly(stream, 4) == b"ping"


@pytest.mark.trio
async def test_serve_fd(listening: socket.socket) -> None:
    fd, port = listening.fileno(), listening.getsockname()[1]
    with trio.fail_after(10):
        async with serving("--fd", str(fd), port=False, pass_fds=(fd,)) as server:
            assert server.port == port
            await echo_once(port)
            await server.wait_for(b" close ")
            assert await server.stop() == 0
    assert b"stopped: 1 connection(s), 4 B in, 4 B out" in server.err


@pytest.mark.trio
async def test_serve_fd_with_workers(listening: socket.socket, tmp_path: Path) -> None:
    write_app(tmp_path)
    fd, port = listening.fileno(), listening.getsockname()[1]
    argv = ["pidecho:service", "--app-dir", str(tmp_path), "--workers", "2", "--fd", str(fd)]
    with trio.fail_after(15):
        async with serving(*argv, port=False, pass_fds=(fd,)) as server:
            assert server.port == port
            pid = await ask_pid(port)
            assert pid != server.process.pid
            assert await server.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.trio
async def test_systemd_socket_activation(
    listening: socket.socket, tmp_path: Path, workers: str
) -> None:
    write_app(tmp_path)
    (tmp_path / "launch.py").write_text(LAUNCHER)
    fd, port = listening.fileno(), listening.getsockname()[1]
    launch = [sys.executable, str(tmp_path / "launch.py"), str(fd), "-m", "trio_tcp"]
    # No --fd, and a --port that would be taken: the activated socket wins.
    argv = ["pidecho:service", "--app-dir", str(tmp_path), "--workers", workers, "--port", "1"]
    with trio.fail_after(15):
        async with serving(*argv, port=False, cli=launch, pass_fds=(fd,)) as server:
            assert server.port == port
            pid = await ask_pid(port)
            assert (pid == server.process.pid) == (workers == "1")
            assert await server.stop() == 0


def test_systemd_fds_are_ours_only_for_our_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    for pid, expected in ((os.getpid(), [3, 4]), (1, [])):
        monkeypatch.setenv("LISTEN_PID", str(pid))
        monkeypatch.setenv("LISTEN_FDS", "2")
        monkeypatch.setenv("LISTEN_FDNAMES", "a:b")
        assert _sockets.systemd_fds() == expected
        # Read once: neither a later call nor a child process sees them.
        assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)
    assert _sockets.systemd_fds() == []


def test_systemd_fds_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "two")
    with pytest.raises(CommandError, match="LISTEN_FDS='two': not numbers"):
        _sockets.systemd_fds()


def test_from_fds_rejects_what_is_not_a_listening_socket(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        unbound = stack.enter_context(socket.socket())
        datagram = stack.enter_context(socket.socket(type=socket.SOCK_DGRAM))
        for sock in (unbound, datagram):
            with pytest.raises(CommandError, match=rf"--fd {sock.fileno()}: not a listening"):
                _sockets.from_fds([sock.fileno()], source="--fd")
            assert sock.fileno() != -1  # still open: it was not ours to close
        file = stack.enter_context(open(tmp_path / "file", "w"))
        with pytest.raises(CommandError, match=rf"--fd {file.fileno()}: not a socket"):
            _sockets.from_fds([file.fileno()], source="--fd")


@pytest.mark.trio
async def test_serve_fd_that_is_not_open_exits_1() -> None:
    result = await run_cli("serve", "--fd", "97")
    assert result.returncode == 1
    assert one_line(result.stderr) == "trio-tcp: --fd 97: Bad file descriptor"


@pytest.mark.trio
async def test_bind_for_workers_on_every_family_uses_one_port() -> None:
    sockets = await _sockets.bind(None, 0, backlog=None, reuse_port=False)
    try:
        assert len({sock.getsockname()[1] for sock in sockets}) == 1
        assert {sock.family for sock in sockets} <= {socket.AF_INET, socket.AF_INET6}
    finally:
        _sockets.close_all(sockets)


@pytest.mark.trio
async def test_bind_for_workers_reports_a_port_in_use(listening: socket.socket) -> None:
    port = listening.getsockname()[1]
    with pytest.raises(
        BindError, match=rf"cannot listen on {LOCAL}:{port}: Address already in use"
    ):
        await _sockets.bind(LOCAL, port, backlog=None, reuse_port=False)
