"""Running ``trio-tcp`` as a real subprocess in tests: one-shot commands and a running ``serve``.

``serving(...)`` starts ``python -m trio_tcp serve --port 0 ...``, waits for
its ``listening on HOST:PORT`` line (stdout's only line) and collects the log
(stderr) as it comes; the process is killed and reaped on exit whatever
happens, so no test leaves a server behind.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

__all__ = [
    "APP_SOURCE",
    "CLI",
    "LOCAL",
    "Served",
    "alive",
    "ask_pid",
    "both",
    "finish",
    "one_line",
    "run_cli",
    "serving",
    "write_app",
]

CLI = [sys.executable, "-m", "trio_tcp"]
LOCAL = "127.0.0.1"
LISTENING = re.compile(rb"listening on \S+:(\d+)\n")
T = TypeVar("T")

#: A user's app for ``serve APP``: every reply says which process served it.
APP_SOURCE = """\
import os

import trio_tcp


class Reply(trio_tcp.ConnectionService):
    async def on_bytes(self, data):
        return b"%d %s" % (os.getpid(), data)


class PidEcho(trio_tcp.Service):
    async def on_connect(self, caller):
        return Reply()


service = PidEcho()


def make_service():
    return PidEcho()
"""


def write_app(directory: Path, name: str = "pidecho", source: str = APP_SOURCE) -> Path:
    """Write an app module ``name`` into ``directory``; return its path."""
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


async def ask_pid(port: int, host: str = LOCAL) -> int:
    """One connection to a pidecho app: the process id that served it."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"hi\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = await stream.receive_some()
            assert chunk, f"connection closed after {reply!r}"
            reply += chunk
    pid, rest = reply.split(b" ", 1)
    assert rest == b"hi\n", reply
    return int(pid)


async def run_cli(
    *args: str, stdin: Any = b"", timeout: float = 10, **options: Any
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trio_tcp ARGS`` to completion and capture its output."""
    with trio.fail_after(timeout):
        return await trio.run_process(
            [*CLI, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            **options,
        )


class Served:
    """A running ``trio-tcp serve``: its port, stdout (the announcement) and stderr (the log)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.port = 0
        self.out = bytearray()
        self.err = bytearray()
        self._ended: set[int] = set()  # ids of the buffers whose stream has ended
        self._grew = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
        """Collect one of the process's outputs, waking whoever waits for it."""
        assert stream is not None
        async for chunk in stream:
            into += chunk
            self._grew.set()
        self._ended.add(id(into))
        self._grew.set()

    async def _wait(self, into: bytearray, needle: bytes | re.Pattern[bytes]) -> None:
        def found() -> bool:
            if isinstance(needle, bytes):
                return needle in into
            return needle.search(into) is not None

        while not found():
            assert id(into) not in self._ended, (
                f"{needle!r} never came; stdout: {bytes(self.out)!r}; stderr: {bytes(self.err)!r}"
            )
            self._grew = trio.Event()
            await self._grew.wait()

    async def wait_for_line(self) -> bytes:
        """Wait for stdout's first line and return it."""
        await self._wait(self.out, b"\n")
        return bytes(self.out.split(b"\n", 1)[0])

    async def wait_for(self, needle: bytes | re.Pattern[bytes]) -> None:
        """Wait until the log (stderr) contains ``needle``; fail if it ends without it."""
        await self._wait(self.err, needle)

    async def stop(self, signum: int = signal.SIGINT) -> int:
        """Signal the server and return its exit status."""
        self.process.send_signal(signum)
        return await self.process.wait()


@asynccontextmanager
async def serving(
    *args: str, port: bool = True, cli: Sequence[str] = CLI, **options: Any
) -> AsyncIterator[Served]:
    """``trio-tcp serve --port 0 ARGS``, killed on exit.

    Without ``--port 0`` if not ``port``; ``cli`` is how to run ``trio-tcp``;
    ``options`` go to :func:`trio.lowlevel.open_process`.
    """
    command = [*cli, "serve", *(["--port", "0"] if port else []), *args]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
    )
    served = Served(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.drain, process.stdout, served.out)
            nursery.start_soon(served.drain, process.stderr, served.err)
            line = await served.wait_for_line()
            match = LISTENING.match(line + b"\n")
            assert match is not None, f"the first line is not 'listening on': {bytes(served.out)!r}"
            served.port = int(match.group(1))
            yield served
            if process.poll() is None:
                process.kill()
    finally:
        await finish(process)
    # Whatever the test checked, no process of the command may have crashed or warned.
    assert not re.search(rb"Traceback|Warning:", served.err), bytes(served.err).decode()


async def finish(process: trio.Process) -> None:
    """Kill ``process`` if it still runs, reap it and close its pipes."""
    with trio.CancelScope(shield=True):
        if process.poll() is None:
            process.kill()
        await process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                await pipe.aclose()


async def both(first: Awaitable[T], second: Awaitable[T]) -> tuple[T, T]:
    """Await two things concurrently (two subprocesses start in the time of one)."""
    done: dict[int, T] = {}

    async def keep(awaitable: Awaitable[T], index: int) -> None:
        done[index] = await awaitable

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep, first, 0)
        nursery.start_soon(keep, second, 1)
    return done[0], done[1]


def one_line(stderr: bytes) -> str:
    """The single line of ``stderr`` (and assert that it is one line, without a traceback)."""
    text = stderr.decode()
    assert text.endswith("\n"), text
    assert text.count("\n") == 1, text
    assert "Traceback" not in text
    return text.strip()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The state follows the command name, which is in parentheses.
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
