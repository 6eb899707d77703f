"""One measurement: a fresh server, a load generator, and the figures they yield.

Four ways to measure, by the scenario's client:

* ``loadgen`` (or pyload in its place): one run of ``--warmup`` + ``--duration``
  seconds; ``hold`` also samples the server's memory;
* ``redis-benchmark``: a warm-up run that finds the rate, then a run of about
  ``--duration`` seconds;
* ``callgrind``: the server runs under ``valgrind --tool=callgrind``; after a
  warm-up of a fixed number of operations the counters are dumped and set
  aside, then exactly :data:`CALLGRIND_OPS` operations run and the
  instructions they cost the server are dumped and counted.
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import time
from pathlib import Path

import trustme
from _generators import Generator, Generators
from _procs import (
    BenchError,
    Finished,
    Pinning,
    memory_kib,
    process_cpu_s,
    run_load,
    run_process,
    server,
)
from _report import Run
from _scenarios import CALLGRIND_LIMIT, Scenario

# Settle time before reading a fresh server's baseline memory for ``hold``.
HOLD_SETTLE = 0.3
# redis-benchmark counts requests, not seconds: a warm-up run of this many
# requests per second of --warmup also measures the rate, from which the
# measured run's request count is chosen to last about --duration.
REDIS_WARMUP_RATE = 50_000
REDIS_MIN_REQUESTS = 2_000
# The fields of a result that count the operations a server performed.
OPS_FIELDS = ("cycles", "round_trips", "replies", "delivered", "requests")
# Operations per mode under callgrind: (warm-up, counted). Enough that the
# connections in flight when counting starts and ends weigh little, few enough
# for a server running tens of times slower.
CALLGRIND_OPS = {"connect": (200, 1000), "pingpong": (2_000, 20_000)}
# Before a dump: time for the slowed server to finish with connections the
# client has already closed.
CALLGRIND_SETTLE = 1.0


class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 (the load generator checks the IP)."""

    def __init__(self, folder: Path) -> None:
        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        self.ca = folder / "ca.pem"
        self.chain = folder / "server.pem"
        self.key = folder / "server.key"
        ca.cert_pem.write_to_path(str(self.ca))
        issued.private_key_pem.write_to_path(str(self.key))
        for i, pem in enumerate(issued.cert_chain_pems):
            pem.write_to_path(str(self.chain), append=i > 0)

    def server_args(self) -> list[str]:
        """The TLS options of ``servers.py``."""
        return ["--cert", str(self.chain), "--key", str(self.key)]


class Context:
    """What every measurement of a run shares."""

    def __init__(
        self,
        args: argparse.Namespace,
        pinning: Pinning,
        generators: Generators,
        folder: Path,
        tls: TLSFiles | None,
    ) -> None:
        self.duration: float = args.duration
        self.warmup: float = args.warmup
        self.pinning = pinning
        self.generators = generators
        self.folder = folder
        self.tls = tls

    def generator(self, scenario: Scenario) -> Generator:
        """The load generator of a loadgen-style scenario."""
        return self.generators.tls if scenario.tls else self.generators.plain

    def generator_name(self, scenario: Scenario) -> str:
        """What drives ``scenario``, for the results."""
        if scenario.client == "redis-benchmark":
            return "redis-benchmark"
        if scenario.client == "callgrind":
            return f"{self.generators.plain.name} + callgrind"
        return self.generator(scenario).name


# -- measuring ----------------------------------------------------------------------------


def measure_hold(pid: int, argv: list[str], pinning: Pinning, limit: float) -> dict[str, object]:
    """Run ``hold`` and add the server's memory per connection to the result.

    The figure is (VmHWM after the run - VmRSS before it) / connections opened;
    the peak VmRSS sampled while the connections were held is kept alongside.
    """
    time.sleep(HOLD_SETTLE)
    try:
        before = memory_kib(pid)
        held = [before["VmRSS"]]
        result = run_load(
            argv, pinning, limit, sample=lambda: held.append(memory_kib(pid)["VmRSS"])
        )
        after = memory_kib(pid)
    except (OSError, KeyError) as exc:
        raise BenchError(f"cannot read the server's memory: {exc!r}") from exc
    opened = result.get("opened")
    if not isinstance(opened, int) or opened <= 0:
        raise BenchError(f"hold opened no connections: {result}")
    result.update(
        rss_before_kib=before["VmRSS"],
        hwm_after_kib=after["VmHWM"],
        rss_held_max_kib=max(held),
        kib_per_conn=round((after["VmHWM"] - before["VmRSS"]) / opened, 2),
        held_kib_per_conn=round((max(held) - before["VmRSS"]) / opened, 2),
    )
    return result


def redis_result(done: Finished) -> dict[str, float]:
    """The figures of a ``redis-benchmark --csv`` run of one test."""
    text = done.out.decode(errors="replace")
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].startswith("PING")]
    if done.status != 0 or not rows:
        detail = (done.err.decode(errors="replace") or text).strip()[-300:] or "no output"
        raise BenchError(f"redis-benchmark failed (status {done.status}): {detail}")
    _, rps, mean, _minimum, p50, p95, p99, maximum = rows[0][:8]
    us = {"mean_us": mean, "p50_us": p50, "p95_us": p95, "p99_us": p99, "max_us": maximum}
    result = {key: round(float(ms) * 1000, 1) for key, ms in us.items()}
    result["per_s"] = float(rps)
    return result


def measure_redis(
    binary: str, scenario: Scenario, port: int, pid: int, context: Context
) -> dict[str, object]:
    """A warm-up run that also finds the rate, then a run of about ``--duration`` seconds."""
    base = [binary, "-h", "127.0.0.1", "-p", str(port), "-t", scenario.mode, *scenario.options]
    base.append("--csv")
    limit = scenario.time_limit(context.duration, context.warmup)
    warm_n = max(REDIS_MIN_REQUESTS, round(REDIS_WARMUP_RATE * context.warmup))
    warm = redis_result(run_process([*base, "-n", str(warm_n)], context.pinning, limit))
    requests = max(REDIS_MIN_REQUESTS, round(warm["per_s"] * context.duration))
    cpu_before = process_cpu_s(pid)
    done = run_process([*base, "-n", str(requests)], context.pinning, limit)
    cpu_after = process_cpu_s(pid)
    figures = redis_result(done)
    result: dict[str, object] = {
        **figures,
        "generator": "redis-benchmark",
        "requests": requests,
        "warmup_requests": warm_n,
        "measured_s": round(requests / (figures["per_s"] or 1.0), 4),
        "client_cpu": round(done.cpu_s / done.elapsed_s, 3),
    }
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_s"] = round(cpu_after - cpu_before, 6)
    return result


def measure_callgrind(scenario: Scenario, kind: str, context: Context) -> dict[str, object]:
    """The instructions ``kind`` spends per operation, under callgrind (see the module doc)."""
    assert context.generators.callgrind is not None  # planned only if found
    valgrind, control = context.generators.callgrind
    out = context.folder / f"{scenario.name}-{kind}.callgrind"
    wrapper = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"]
    warmup, count = CALLGRIND_OPS[scenario.mode]
    log = context.folder / f"{kind}.log"
    with server(kind, [], context.pinning, log, wrapper=wrapper, slow=True) as (pid, port):

        def load(operations: int) -> dict[str, object]:
            argv = [*context.generators.plain.argv, scenario.mode, "-p", str(port)]
            argv += [*scenario.options, "-n", str(operations), "-d", f"{CALLGRIND_LIMIT:g}"]
            return run_load(argv, context.pinning, CALLGRIND_LIMIT + 30)

        load(warmup)
        dump(control, pid, out)  # start-up and warm-up: set aside
        result = load(count)
        instructions = dump(control, pid, out)
    result.update(
        generator=f"{context.generators.plain.name} + callgrind",
        instructions=instructions,
        ir_per_op=round(instructions / count),
    )
    return result


def dump(control: str, pid: int, out: Path) -> int:
    """Have callgrind write (and zero) its counters; return the instructions counted."""
    time.sleep(CALLGRIND_SETTLE)
    try:
        subprocess.run([control, "--dump", str(pid)], capture_output=True, timeout=60.0, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        raise BenchError(f"callgrind_control --dump failed: {exc}") from exc
    # Each dump is a new part file: OUT.1, OUT.2, ...
    parts = sorted(out.parent.glob(f"{out.name}.*"), key=lambda p: int(p.suffix[1:]))
    if not parts:
        raise BenchError(f"callgrind wrote no profile next to {out}")
    for line in parts[-1].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"no instruction total in {parts[-1]}")


def derive(result: dict[str, object]) -> None:
    """Add the runner's own figures: server CPU per operation and per 10,000 connections.

    Raises:
        BenchError: a churn run in which no connection completed (a rate of 0
            would otherwise pass for a figure).
    """
    if result.get("cycles") == 0:
        errors = result.get("connect_errors")
        raise BenchError(f"no connection completed its cycle ({errors} failed)")
    cpu = result.get("server_cpu_s")
    seconds = result.get("measured_s")
    if not isinstance(cpu, (int, float)):
        return
    if isinstance(seconds, (int, float)) and seconds > 0:
        result["server_cpu"] = round(cpu / seconds, 3)
    ops = next((v for k in OPS_FIELDS if isinstance(v := result.get(k), int)), None)
    if ops:
        result["server_cpu_us_per_op"] = round(cpu / ops * 1e6, 3)
        if "cycles" in result:
            result["cpu_s_per_10k"] = round(cpu / ops * 10_000, 4)


def figure(result: dict[str, object], key: str) -> float:
    """One of the scenario's figures from a result."""
    value = result.get(key)
    if not isinstance(value, (int, float)):
        raise BenchError(f"no {key} in the result: {result}")
    return float(value)


def measure(scenario: Scenario, kind: str, repetition: int, context: Context) -> Run:
    """One fresh server, one load run: the scenario's figures, or the error that stopped it."""
    run = Run(scenario.name, kind, repetition, context.generator_name(scenario))
    try:
        if scenario.client == "callgrind":
            run.result = measure_callgrind(scenario, kind, context)
        else:
            run.result = measure_live(scenario, kind, context)
        derive(run.result)
        run.values = {m.key: figure(run.result, m.key) for m in scenario.metrics}
    except BenchError as exc:
        run.error = str(exc)
    return run


def measure_live(scenario: Scenario, kind: str, context: Context) -> dict[str, object]:
    """A server at full speed under loadgen, pyload or redis-benchmark."""
    tls_args = context.tls.server_args() if scenario.tls and context.tls else []
    limit = scenario.time_limit(context.duration, context.warmup)
    with server(kind, tls_args, context.pinning, context.folder / f"{kind}.log") as (pid, port):
        if scenario.client == "redis-benchmark":
            assert context.generators.redis_benchmark is not None  # planned only if found
            return measure_redis(context.generators.redis_benchmark, scenario, port, pid, context)
        load = scenario.load_args(port, context.duration, context.warmup)
        argv = [*context.generator(scenario).argv, *load, "--server-pid", str(pid)]
        if scenario.tls:
            assert context.tls is not None
            argv += ["--tls", str(context.tls.ca)]
        if scenario.mode == "hold":
            return measure_hold(pid, argv, context.pinning, limit)
        return run_load(argv, context.pinning, limit)
