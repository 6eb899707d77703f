"""Load a server with N connections for a while, then report throughput, latency and errors.

``pingpong`` (the default) sends ``--size`` bytes and waits for them to come
back before sending again, on every connection at once: round trips per
second and latency percentiles (the server must echo, e.g. ``trio-tcp
serve``). ``stream`` writes continuously while reading whatever comes back:
throughput in each direction (any server that reads: echo or discard).

All connections are opened before the clock starts; one that cannot be
opened ends the run (exit status 1). Errors during the run are counted and
reported, and make the exit status 1. Ctrl-C ends the run early: the summary
is still printed, and the status is 130.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

import trio_tcp

from ._options import (
    UsageError,
    add_client_tls_arguments,
    client_secure_socket,
    count,
    endpoint,
    format_bytes,
    parse_size,
    port,
    positive_seconds,
    say,
    wants_client_tls,
)

__all__ = ["EPILOG", "HELP", "LatencyRecorder", "add_arguments", "check", "percentile", "run"]

HELP = "load generator: round trips or throughput, latency percentiles"
EPILOG = """\
examples:
  trio-tcp serve --port 3000 &                      # an echo server to load
  trio-tcp bench localhost 3000                     # 10 connections, 64 B, 5 s
  trio-tcp bench localhost 3000 --connections 100 --size 1K --duration 10
  trio-tcp bench localhost 3000 --mode stream --size 64K
  trio-tcp bench localhost 3000 --json | jq .latency_ms.p99
  trio-tcp bench localhost 3443 --cafile certs/ca.pem   # over TLS

Once connected, what is measured is said first, then progress, on stderr (updated in place on
a terminal, one line per second otherwise); the summary, or with --json one
JSON object, to stdout.
Exit status: 0 clean run, 1 could not connect or errors during the run, 130 Ctrl-C.
"""

#: After the run's end, how long an unfinished round trip (or the last bytes
#: of a stream) may take before it is cancelled and counted as an error.
FINISH_TIMEOUT = 2.0
#: Stream mode: the run is over once nothing has come back for this long.
STREAM_QUIET = 0.2
#: Connections opened at once: a burst of thousands would overflow the
#: server's accept backlog and turn into refusals that are not the server's fault.
CONNECT_CONCURRENCY = 64
#: Latency samples kept exactly; beyond this a uniform reservoir of this size
#: (8 MB of doubles) stands in for all of them, so a long run stays bounded.
MAX_SAMPLES = 1_000_000
DEFAULT_SIZES = {"pingpong": 64, "stream": 64 * 1024}
PERCENTILES = (50, 90, 99)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-tcp bench``."""
    parser.add_argument("host", metavar="HOST", help="server name or address")
    parser.add_argument("port", metavar="PORT", type=port, help="server port")
    parser.add_argument(
        "-c",
        "--connections",
        type=count,
        default=10,
        metavar="N",
        help="connections in parallel (default: %(default)s)",
    )
    parser.add_argument(
        "-s",
        "--size",
        type=parse_size,
        metavar="S",
        help="bytes per message (pingpong) or write (stream): 64, 1K, 4M (default: 64 B "
        "for pingpong, 64K for stream)",
    )
    parser.add_argument(
        "-d",
        "--duration",
        type=positive_seconds,
        default=5.0,
        metavar="D",
        help="seconds to run (default: %(default)g)",
    )
    parser.add_argument(
        "--mode", choices=("pingpong", "stream"), default="pingpong", help="default: pingpong"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        metavar="S",
        help="give up opening a connection after S seconds (default: %(default)g)",
    )
    add_client_tls_arguments(parser)


def check(args: argparse.Namespace) -> None:
    """Reject a lone --cert or --key, and port 0."""
    wants_client_tls(args)
    if args.port == 0:
        raise UsageError("argument PORT: port 0 cannot be connected to")


# -- measuring ---------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) of sorted values, by the nearest-rank method.

    Nearest rank always returns a value that was measured, and p100 is the maximum.

    Raises:
        ValueError: ``ordered`` is empty or ``q`` is out of range.
    """
    if not ordered:
        raise ValueError("no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


class LatencyRecorder:
    """Latencies in seconds: exact up to ``limit`` samples, then a uniform reservoir.

    Count, mean and maximum are always exact; percentiles are exact until
    ``limit`` samples and estimates (Algorithm R) after that.
    """

    __slots__ = ("_limit", "_random", "_samples", "count", "max", "total")

    def __init__(self, limit: int = MAX_SAMPLES, *, seed: int | None = None) -> None:
        self._samples = array("d")
        self._limit = limit
        self._random = random.Random(seed)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        """Record one latency."""
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        if len(self._samples) < self._limit:
            self._samples.append(value)
        else:
            slot = self._random.randrange(self.count)
            if slot < self._limit:
                self._samples[slot] = value

    def percentiles(self, qs: Sequence[float] = PERCENTILES) -> list[float] | None:
        """The given percentiles, or ``None`` before the first sample."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return [percentile(ordered, q) for q in qs]


class _Run:
    """Shared by every worker: when to stop, what happened."""

    def __init__(self, stop_at: float) -> None:
        self.stop_at = stop_at
        self.stopped_at: float | None = None
        self.latency = LatencyRecorder()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.errors: Counter[str] = Counter()
        self.unfinished = 0
        self.interrupted = False

    def fail(self, exc: BaseException) -> None:
        self.errors[str(exc) or type(exc).__name__] += 1


async def _pingpong(client: trio_tcp.Client, size: int, run: _Run) -> None:
    payload = b"x" * size
    # Looked up once: the loop should cost what the round trip costs, not more.
    write, read, record = client.write_bytes, client.read_exactly, run.latency.add
    clock, now = time.perf_counter, trio.current_time
    while now() < run.stop_at:
        started = clock()
        await write(payload)
        await read(size)
        record(clock() - started)


async def _stream(client: trio_tcp.Client, size: int, run: _Run) -> None:
    payload = bytes(size)
    async with trio.open_nursery() as nursery:

        async def read_back() -> None:
            """Count what comes back until it has been quiet for a moment after the run."""
            last = trio.current_time()
            while True:
                with trio.move_on_at(max(run.stop_at, last) + STREAM_QUIET) as quiet:
                    chunk = await client.read_bytes()
                if quiet.cancelled_caught:
                    return
                run.bytes_received += len(chunk)
                last = trio.current_time()

        async def failing(work: Callable[[], Awaitable[None]]) -> None:
            # One error per connection: the other direction is cancelled.
            try:
                await work()
            except trio_tcp.Error as exc:
                run.fail(exc)
                nursery.cancel_scope.cancel()

        async def write() -> None:
            while trio.current_time() < run.stop_at:
                await client.write_bytes(payload)
                run.bytes_sent += size

        nursery.start_soon(failing, read_back)
        await failing(write)


async def _worker(client: trio_tcp.Client, size: int, mode: str, run: _Run) -> None:
    run.unfinished += 1  # until it ends by itself, or by an error
    if mode == "pingpong":
        try:
            await _pingpong(client, size, run)
        except trio_tcp.Error as exc:
            run.fail(exc)
    else:
        await _stream(client, size, run)
    run.unfinished -= 1
    await client.aclose()


async def _connect_all(args: argparse.Namespace) -> list[trio_tcp.Client]:
    """Open every connection, or close those opened and raise the first failure."""
    secure_socket = client_secure_socket(args)
    clients: list[trio_tcp.Client] = []
    failures: list[trio_tcp.Error] = []
    limiter = trio.CapacityLimiter(CONNECT_CONCURRENCY)

    async def connect() -> None:
        async with limiter:
            if failures:
                return
            try:
                client = await trio_tcp.Client.connect(
                    args.host,
                    args.port,
                    timeout=None,
                    write_timeout=None,
                    connect_timeout=args.timeout,
                    secure_socket=secure_socket,
                )
            except trio_tcp.Error as exc:
                failures.append(exc)
            else:
                clients.append(client)

    async with trio.open_nursery() as nursery:
        for _ in range(args.connections):
            nursery.start_soon(connect)
    if failures:
        for client in clients:
            await client.aclose()
        raise failures[0]
    return clients


async def run(args: argparse.Namespace) -> int:
    """Connect, run, summarise; return the exit status."""
    size = args.size or DEFAULT_SIZES[args.mode]
    clients = await _connect_all(args)
    headline = _headline(
        args.host, args.port, args.mode, wants_client_tls(args), args.connections, size
    )
    say(f"{headline}, {args.duration:g} s (Ctrl-C ends it early)")
    started = trio.current_time()
    bench = _Run(started + args.duration)
    workers = trio.CancelScope(deadline=bench.stop_at + FINISH_TIMEOUT)
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def interrupt() -> None:
                async for _ in signals:
                    bench.interrupted = True
                    bench.stop_at = min(bench.stop_at, trio.current_time())
                    workers.deadline = min(workers.deadline, bench.stop_at + FINISH_TIMEOUT)

            nursery.start_soon(interrupt)
            nursery.start_soon(_progress, bench, args.mode, started)
            with workers:
                async with trio.open_nursery() as pool:
                    for client in clients:
                        pool.start_soon(_worker, client, size, args.mode, bench)
            nursery.cancel_scope.cancel()
    for client in clients:
        await client.aclose()  # those cancelled at the finish timeout
    if bench.unfinished:
        stuck = "no reply" if args.mode == "pingpong" else "writes still blocked"
        bench.errors[f"{stuck} {FINISH_TIMEOUT:g} s after the end"] += bench.unfinished
    elapsed = min(trio.current_time(), bench.stop_at) - started
    summary = _summary(args, size, bench, elapsed)
    if args.json:
        print(json.dumps(summary, indent=2), flush=True)
    else:
        print(_text(summary), flush=True)
    if bench.interrupted:
        return 130
    return 1 if bench.errors else 0


# -- reporting ---------------------------------------------------------------------------


async def _progress(bench: _Run, mode: str, started: float) -> None:
    """One status line a second on stderr: rewritten in place on a terminal."""
    tty = sys.stderr.isatty()
    last_count, last_sent, last_time = 0, 0, started
    try:
        while True:
            await trio.sleep(1)
            now = trio.current_time()
            interval = now - last_time
            errors = sum(bench.errors.values())
            if mode == "pingpong":
                latency = bench.latency
                done = latency.count - last_count
                mean = (latency.total / latency.count * 1000) if latency.count else 0.0
                line = (
                    f"{now - started:5.1f} s  {latency.count:,} round trips  "
                    f"{done / interval:,.0f}/s  mean {mean:.3f} ms  errors {errors}"
                )
                last_count = latency.count
            else:
                rate = (bench.bytes_sent - last_sent) / interval / 1e6
                line = (
                    f"{now - started:5.1f} s  sent {format_bytes(bench.bytes_sent)} "
                    f"({rate:,.1f} MB/s)  received {format_bytes(bench.bytes_received)}  "
                    f"errors {errors}"
                )
                last_sent = bench.bytes_sent
            last_time = now
            sys.stderr.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            sys.stderr.flush()
    finally:
        if tty and last_time != started:
            # Clear the progress line: the summary that follows has the totals.
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _summary(args: argparse.Namespace, size: int, bench: _Run, elapsed: float) -> dict[str, Any]:
    latency = bench.latency
    if args.mode == "pingpong":
        bench.bytes_sent = bench.bytes_received = latency.count * size
    elapsed = max(elapsed, 1e-9)
    values = latency.percentiles()
    latency_ms: dict[str, float] | None = None
    if values is not None:
        latency_ms = {f"p{q}": round(v * 1000, 4) for q, v in zip(PERCENTILES, values, strict=True)}
        latency_ms["max"] = round(latency.max * 1000, 4)
        latency_ms["mean"] = round(latency.total / latency.count * 1000, 4)
    pingpong = args.mode == "pingpong"
    return {
        "host": args.host,
        "port": args.port,
        "mode": args.mode,
        "tls": wants_client_tls(args),
        "connections": args.connections,
        "size": size,
        "duration": round(elapsed, 3),
        "round_trips": latency.count if pingpong else None,
        "round_trips_per_second": round(latency.count / elapsed, 1) if pingpong else None,
        "bytes_sent": bench.bytes_sent,
        "bytes_received": bench.bytes_received,
        "mb_per_second_sent": round(bench.bytes_sent / elapsed / 1e6, 3),
        "mb_per_second_received": round(bench.bytes_received / elapsed / 1e6, 3),
        "latency_ms": latency_ms,
        "errors": sum(bench.errors.values()),
        "error_messages": dict(bench.errors),
        "interrupted": bench.interrupted,
    }


def _headline(host: str, port: int, mode: str, tls: bool, connections: int, size: int) -> str:
    """``bench pingpong 127.0.0.1:3000 (TLS): 10 connections, 64 B messages``."""
    unit = "messages" if mode == "pingpong" else "writes"
    return (
        f"bench {mode} {endpoint(host, port)}{' (TLS)' if tls else ''}: "
        f"{connections} connections, {format_bytes(size)} {unit}"
    )


def _text(s: dict[str, Any]) -> str:
    headline = _headline(s["host"], s["port"], s["mode"], s["tls"], s["connections"], s["size"])
    lines = [f"{headline}, {s['duration']:.2f} s{' (interrupted)' if s['interrupted'] else ''}"]
    if s["mode"] == "pingpong":
        lines.append(f"  round trips  {s['round_trips']:,} ({s['round_trips_per_second']:,.0f}/s)")
        lines.append(f"  throughput   {s['mb_per_second_sent']:,.2f} MB/s each way")
        if s["latency_ms"] is not None:
            ms = s["latency_ms"]
            lines.append(
                "  latency      "
                + "   ".join(f"{k} {ms[k]:.3f} ms" for k in ("p50", "p90", "p99", "max"))
            )
    else:
        lines.append(
            f"  sent         {format_bytes(s['bytes_sent'])} ({s['mb_per_second_sent']:,.1f} MB/s)"
        )
        lines.append(
            f"  received     {format_bytes(s['bytes_received'])} "
            f"({s['mb_per_second_received']:,.1f} MB/s)"
        )
    lines.append(f"  errors       {s['errors']}")
    lines.extend(f"    {n} x {message}" for message, n in s["error_messages"].items())
    return "\n".join(lines)
