"""A recording echo backend behind HAProxy, run as its own process; and how to start one.

::

    python tests/_backend.py --records FILE [--port PORT] [--reuse-port] [--grace S]

It serves line-framed echo on 127.0.0.1 with ``proxy_protocol=True`` and
prints ``listening on PORT`` once it accepts. On SIGTERM (or SIGINT) it stops
gracefully, as ``trio-tcp serve`` does, then writes one JSON object per
connection to the records file, followed by one with the listener's stats and
trio_tcp's log lines above DEBUG, and exits 0.

Each connection's record is keyed by the real client's port, from the PROXY
header: which requests it answered, how many bytes went each way, whether
the stop reached it and how much input was then waiting unread. That is what
tells a request the server lost from one that never reached it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

import trio_tcp
from trio_tcp._streams import pending_input
from trio_tcp.framing import Delimited

__all__ = ["Backend", "Record", "read_records", "start_backend"]


@dataclass
class Record:
    """What happened to one connection (the fields are JSON's)."""

    #: The client's port from the PROXY header (0 without one: a LOCAL health check).
    client_port: int
    #: ``"PROXY"`` or ``"LOCAL"``.
    command: str
    #: The requests answered (their text, without the newline).
    answered: list[str] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    #: A graceful stop reached the connection (``on_stop`` ran).
    stopped: bool = False
    #: Input received and not read when ``on_stop`` ran: nothing will read it.
    unread_at_stop: int = 0
    #: Seconds from the stop reaching the connection (or the connection
    #: starting, if later) to ``on_stop``: how long it waited for input.
    waited: float = 0.0
    error: str | None = None


class _Recorder(trio_tcp.Service):
    def __init__(self) -> None:
        self.records: list[Record] = []
        #: When the graceful stop began.
        self.stopping_since = math.inf

    async def on_connect(self, caller: trio_tcp.Caller) -> _Echo:
        proxy = caller.proxy
        command = proxy.command if proxy is not None else ""
        port = proxy.source[1] if proxy is not None and proxy.source is not None else 0
        record = Record(port, command)
        self.records.append(record)
        return _Echo(self, record, caller)


class _Echo(trio_tcp.ConnectionService):
    framing = Delimited(b"\n", max_size=4096)

    def __init__(self, recorder: _Recorder, record: Record, caller: trio_tcp.Caller) -> None:
        self.recorder = recorder
        self.record = record
        self.caller = caller
        self.started = trio.current_time()

    async def on_bytes(self, data: bytes) -> bytes:
        self.record.answered.append(data.decode())
        return data

    async def on_stop(self) -> None:
        self.record.stopped = True
        # Measured where the connection decides it has served everything.
        self.record.unread_at_stop = pending_input(self.caller._stream) or 0
        since = max(self.started, self.recorder.stopping_since)
        self.record.waited = trio.current_time() - since

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.record.error = f"{type(err).__name__}: {err}"

    async def on_close(self) -> None:
        self.record.bytes_in = self.caller.bytes_received
        self.record.bytes_out = self.caller.bytes_sent


class _Lines(logging.Handler):
    """Keeps trio_tcp's log lines above DEBUG, and when the listening sockets closed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        #: Wall-clock time the listener closed its listening sockets (0: not yet).
        self.closed_at = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno > logging.DEBUG:
            self.lines.append(f"{record.levelname} {record.getMessage()}")
        elif record.getMessage().startswith("listening sockets closed"):
            self.closed_at = record.created


async def _serve(port: int, records: Path, grace: float, reuse_port: bool) -> None:
    logged = _Lines()
    logger = logging.getLogger("trio_tcp")
    logger.addHandler(logged)
    logger.setLevel(logging.DEBUG)
    recorder = _Recorder()
    listener = trio_tcp.Listener(
        port, local_host="127.0.0.1", proxy_protocol=True, reuse_port=reuse_port
    )
    listener.attach(recorder)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(*, task_status: trio.TaskStatus[None]) -> None:
                await listener.serve(task_status=task_status)
                nursery.cancel_scope.cancel()

            await nursery.start(serve)
            print(f"listening on {listener.port}", flush=True)
            async for _ in signals:
                recorder.stopping_since = trio.current_time()
                nursery.start_soon(listener.graceful_stop, grace)
                break
    with records.open("w") as out:
        for record in recorder.records:
            out.write(json.dumps(asdict(record)) + "\n")
        stats = asdict(listener.stats)
        final = {"stats": stats, "log": logged.lines, "closed_at": logged.closed_at}
        out.write(json.dumps(final) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    trio.run(_serve, args.port, args.records, args.grace, args.reuse_port)


# -- starting one, and reading what it recorded ---------------------------------------------


class Backend:
    """A running backend process: its port, and where it writes its records."""

    def __init__(self, process: trio.Process, port: int, records: Path) -> None:
        self.process = process
        self.port = port
        self.records = records

    async def stop(self) -> None:
        """SIGTERM (a graceful stop), and wait until the process has exited."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        await self.process.wait()
        if self.process.stdout is not None:
            await self.process.stdout.aclose()

    async def kill(self) -> None:
        """SIGKILL, and wait until the process has exited (however the caller is cancelled)."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
            if self.process.stdout is not None:
                await self.process.stdout.aclose()


async def start_backend(records: Path, *, port: int = 0, reuse_port: bool = False) -> Backend:
    """Start a backend process; return once it accepts connections."""
    command = [sys.executable, __file__, "--records", str(records), "--port", str(port)]
    if reuse_port:
        command.append("--reuse-port")
    # The child imports trio_tcp from wherever this process does.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                if not chunk:
                    raise RuntimeError("the backend exited before it listened")
                line += chunk
    except BaseException:
        await Backend(process, 0, records).kill()
        raise
    return Backend(process, int(line.split()[-1]), records)


def read_records(path: Path) -> tuple[list[Record], dict[str, Any], list[str], float]:
    """What a stopped backend wrote: connections, stats, log lines above DEBUG, and the
    wall-clock time its listening sockets closed."""
    connections: list[Record] = []
    stats: dict[str, Any] = {}
    log: list[str] = []
    closed_at = 0.0
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if "stats" in entry:
            stats, log, closed_at = entry["stats"], entry["log"], entry["closed_at"]
        else:
            connections.append(Record(**entry))
    return connections, stats, log, closed_at


if __name__ == "__main__":
    main()
