"""A small Trio load generator: the fallback when the C loadgen cannot be built.

It takes the C loadgen's options and modes (all but ``fanout``) and prints the
same JSON line (with ``"generator": "pyload"``), so the runner treats both alike::

    python benchmarks/pyload.py pingpong -p PORT -c 50 -s 64 -d 3
    python benchmarks/pyload.py connect -p PORT -c 8 -s 64 -d 3 --tls ca.pem
    python benchmarks/pyload.py pipeline -p PORT -c 50 --depth 16 -d 3

Being Python, it saturates its own core long before the C loadgen would: its
figures compare servers with each other, not with the C loadgen's. The
``client_cpu`` field (CPU seconds per second) says when it was the bottleneck.
Pingpong, connect, hold and pipeline check every byte received; stream counts them.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import resource
import ssl
import sys
import time
from collections.abc import Awaitable, Callable

import trio

HOST = "127.0.0.1"
READ_SIZE = 256 * 1024
MODES = ("pingpong", "stream", "connect", "hold", "pipeline")
REQUEST, REPLY = b"PING\n", b"PONG\n"


@dataclasses.dataclass
class Stats:
    """Counters shared by the connection tasks; reset when measuring starts."""

    measuring: bool = False
    ops: int = 0
    bytes_read: int = 0
    connect_errors: int = 0
    opened: int = 0
    failed: int = 0
    closed_by_server: int = 0
    latencies_ns: list[int] = dataclasses.field(default_factory=list)
    all_opened: trio.Event = dataclasses.field(default_factory=trio.Event)  # hold: none pending
    server_cpu: float | None = None  # the server's CPU seconds while measuring

    def done(self, started_ns: int) -> None:
        """Count one round trip or cycle that began at ``started_ns``."""
        if self.measuring:
            self.ops += 1
            self.latencies_ns.append(time.perf_counter_ns() - started_ns)


@dataclasses.dataclass(frozen=True)
class Options:
    """The command line, as in the C loadgen."""

    mode: str
    port: int
    conns: int
    size: int
    duration: float
    warmup: float
    setup_timeout: float
    window: int
    depth: int
    open_inflight: int
    cafile: str | None
    server_pid: int | None


def cpu_seconds() -> float:
    """CPU time used by this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(pid: int | None) -> float | None:
    """The server's CPU time so far, from its CPU-time clock (see ``_procs.process_cpu_s``)."""
    if pid is None:
        return None
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        return None


def percentile_us(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile in microseconds (as the C loadgen computes it)."""
    if not sorted_ns:
        return 0.0
    rank = min(len(sorted_ns), max(1, math.ceil(p / 100 * len(sorted_ns))))
    return sorted_ns[rank - 1] / 1000


async def open_stream(opts: Options, context: ssl.SSLContext | None) -> trio.abc.Stream:
    """Connect (and, with TLS, finish the handshake) to the server."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(HOST, opts.port)
    if context is not None:
        tls = trio.SSLStream(stream, context, server_hostname=HOST)
        await tls.do_handshake()
        stream = tls
    return stream


async def exchange(stream: trio.abc.Stream, message: bytes) -> None:
    """Send ``message`` and read back exactly its echo."""
    await stream.send_all(message)
    got = 0
    while got < len(message):
        chunk = await stream.receive_some(len(message) - got)
        if not chunk:
            raise trio.BrokenResourceError("server closed the connection")
        if chunk != message[got : got + len(chunk)]:
            raise RuntimeError("echo does not match what was sent")
        got += len(chunk)


# -- modes: each runs forever (until cancelled) on one connection -------------------------


async def pingpong(stream: trio.abc.Stream, opts: Options, stats: Stats) -> None:
    """Round trips of one ``size``-byte message at a time."""
    message = bytes(i % 251 for i in range(opts.size))
    while True:
        started = time.perf_counter_ns()
        await exchange(stream, message)
        stats.done(started)


async def stream_writes(stream: trio.abc.Stream, opts: Options, stats: Stats) -> None:
    """Write continuously, at most ``window`` bytes ahead of the echo read back."""
    chunk = bytes(i % 251 for i in range(opts.size))
    written = read = 0
    room = trio.Event()

    async def reader() -> None:
        nonlocal read
        while data := await stream.receive_some(READ_SIZE):
            read += len(data)
            if stats.measuring:
                stats.bytes_read += len(data)
            room.set()
        raise trio.BrokenResourceError("server closed the connection")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        while True:
            while written - read >= opts.window:
                room = trio.Event()
                await room.wait()
            await stream.send_all(chunk)
            written += len(chunk)


async def pipelined(stream: trio.abc.Stream, opts: Options, stats: Stats) -> None:
    """Keep ``depth`` PING lines in flight; send one more for each PONG read back."""
    sent_at: collections.deque[int] = collections.deque()
    offset = 0  # within the reply being read

    async def send(count: int) -> None:
        now = time.perf_counter_ns()
        sent_at.extend([now] * count)
        await stream.send_all(REQUEST * count)

    await send(opts.depth)
    while data := await stream.receive_some(READ_SIZE):
        done = 0
        for byte in data:
            if byte != REPLY[offset]:
                raise RuntimeError(f"unexpected reply byte {byte:#04x}")
            offset = (offset + 1) % len(REPLY)
            if offset == 0:
                stats.done(sent_at.popleft())
                done += 1
        if done:
            await send(done)
    raise trio.BrokenResourceError("server closed the connection")


async def connect_cycles(opts: Options, context: ssl.SSLContext | None, stats: Stats) -> None:
    """Connect, send, read the echo, close; again and again."""
    message = bytes(i % 251 for i in range(opts.size))
    while True:
        started = time.perf_counter_ns()
        try:
            stream = await open_stream(opts, context)
            try:
                await exchange(stream, message)
            finally:
                await stream.aclose()
        except (OSError, trio.BrokenResourceError):
            stats.connect_errors += 1
            continue
        stats.done(started)


async def hold_one(
    opts: Options, context: ssl.SSLContext | None, stats: Stats, gate: trio.Semaphore
) -> None:
    """Open one connection, exchange a byte, then keep it idle until cancelled."""
    stream: trio.abc.Stream | None = None
    try:
        async with gate:
            stream = await open_stream(opts, context)
            await exchange(stream, b"\x00")
    except (OSError, trio.BrokenResourceError):
        stats.failed += 1
        if stream is not None:
            await trio.aclose_forcefully(stream)
        stream = None
    else:
        stats.opened += 1
    if stats.opened + stats.failed == opts.conns:
        stats.all_opened.set()
    if stream is None:
        return
    async with stream:
        try:
            if not await stream.receive_some(1):
                stats.closed_by_server += 1
        except trio.BrokenResourceError:
            stats.closed_by_server += 1


# -- driving a run ------------------------------------------------------------------------


async def measured(
    opts: Options, stats: Stats, body: Callable[[trio.Nursery], Awaitable[None]]
) -> tuple[float, float]:
    """Start ``body``'s tasks, warm up, measure; return (seconds, CPU per second)."""
    async with trio.open_nursery() as nursery:
        await body(nursery)
        await trio.sleep(opts.warmup)
        stats.measuring, stats.ops, stats.bytes_read = True, 0, 0
        stats.latencies_ns.clear()
        t0, cpu0 = time.perf_counter(), cpu_seconds()
        server0 = server_cpu_seconds(opts.server_pid)
        await trio.sleep(opts.duration)
        stats.measuring = False
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        server1 = server_cpu_seconds(opts.server_pid)
        nursery.cancel_scope.cancel()
    if server0 is not None and server1 is not None:
        stats.server_cpu = server1 - server0
    return seconds, cpu / seconds


async def run(opts: Options) -> dict[str, object]:
    """Run one mode and return its result fields."""
    if opts.mode == "hold":  # no warm-up: hold for ``duration`` once all are open
        opts = dataclasses.replace(opts, warmup=0.0)
    context = None
    if opts.cafile is not None:
        context = ssl.create_default_context(cafile=opts.cafile)
    stats = Stats()
    t_begin = time.perf_counter()

    async def start(nursery: trio.Nursery) -> None:
        if opts.mode == "connect":
            for _ in range(opts.conns):
                nursery.start_soon(connect_cycles, opts, context, stats)
            return
        if opts.mode == "hold":
            gate = trio.Semaphore(opts.open_inflight)
            for _ in range(opts.conns):
                nursery.start_soon(hold_one, opts, context, stats, gate)
            await stats.all_opened.wait()
            return
        with trio.fail_after(opts.setup_timeout):
            streams = [await open_stream(opts, context) for _ in range(opts.conns)]
        mode = {"pingpong": pingpong, "stream": stream_writes, "pipeline": pipelined}[opts.mode]
        for stream in streams:
            nursery.start_soon(mode, stream, opts, stats)

    with trio.fail_after(opts.setup_timeout + opts.warmup + opts.duration + 5):
        seconds, client_cpu = await measured(opts, stats, start)
    return result_fields(opts, stats, seconds, client_cpu, time.perf_counter() - t_begin)


def result_fields(
    opts: Options, stats: Stats, seconds: float, client_cpu: float, elapsed: float
) -> dict[str, object]:
    """The JSON object the C loadgen would print for this run."""
    out: dict[str, object] = {
        "mode": opts.mode,
        "tls": opts.cafile is not None,
        "conns": opts.conns,
        "size": 1 if opts.mode == "hold" else opts.size,
        "warmup_s": opts.warmup,
        "measured_s": round(seconds, 4),
        "client_cpu": round(client_cpu, 3),
        "generator": "pyload",
    }
    if stats.server_cpu is not None:
        out["server_cpu_s"] = round(stats.server_cpu, 6)
    if opts.mode in ("pingpong", "connect", "pipeline"):
        lat = sorted(stats.latencies_ns)
        out[{"pingpong": "round_trips", "connect": "cycles", "pipeline": "replies"}[opts.mode]] = (
            stats.ops
        )
        out["per_s"] = round(stats.ops / seconds, 1)
        for p in (50, 90, 99):
            out[f"p{p}_us"] = round(percentile_us(lat, p), 2)
        if opts.mode == "connect":
            out["connect_errors"] = stats.connect_errors
    elif opts.mode == "stream":
        out["bytes_read"] = stats.bytes_read
        out["mb_per_s"] = round(stats.bytes_read / seconds / 1e6, 2)
    else:
        out.update(opened=stats.opened, failed=stats.failed)
        out.update(closed_by_server=stats.closed_by_server, open_s=round(elapsed - seconds, 3))
    return out


def parse_args(argv: list[str] | None = None) -> Options:
    """The C loadgen's command line (the options this suite uses)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("-c", "--conns", type=int, default=1)
    parser.add_argument("-s", "--size", type=int, default=64)
    parser.add_argument("-d", "--duration", type=float, default=3.0)
    parser.add_argument("-w", "--warmup", type=float, default=0.5)
    parser.add_argument("-t", "--setup-timeout", type=float, default=20.0)
    parser.add_argument("--window", type=int, default=256 * 1024)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--open-inflight", type=int, default=32)
    parser.add_argument("--tls", dest="cafile", metavar="CAFILE")
    parser.add_argument("--server-pid", type=int)
    return Options(**vars(parser.parse_args(argv)))


def main() -> None:
    """Run one mode; print one JSON line (``{"error": ...}`` and status 1 on failure)."""
    opts = parse_args()
    try:
        result = trio.run(run, opts)
    except Exception as exc:  # every failure becomes the JSON error line
        print(json.dumps({"mode": opts.mode, "error": repr(exc), "generator": "pyload"}))
        sys.exit(1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
