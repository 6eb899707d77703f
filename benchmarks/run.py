"""Benchmark trio_tcp's servers against raw Trio, anyio and asyncio, on loopback.

Usage (``nox -s bench -- ARGS`` runs the same in its own virtualenv)::

    python benchmarks/run.py                      # everything: 3 s x 3 repetitions
    python benchmarks/run.py --quick              # a smoke run: 0.5 s x 1
    python benchmarks/run.py --scenarios pingpong_50 connect_20 --servers trio_tcp trio_raw anyio
    python benchmarks/run.py --list               # scenarios, servers, and what cannot run here
    python benchmarks/run.py --json docs/performance.json --chart docs/performance.png

Each measurement starts a fresh server (``benchmarks/servers.py``) pinned to one
CPU and a load generator pinned to another: the project's C load generator,
built from ``benchmarks/loadgen/`` into a cache folder outside the repository,
``benchmarks/pyload.py`` where it cannot be built, and ``redis-benchmark``
(when installed) for the Redis scenarios. Within each repetition every
scenario runs on every server in turn, the starting server rotating from one
repetition to the next. The report gives medians over the repetitions and
their ratios to raw Trio and to anyio from the same run. Servers that need a
trio_tcp feature this version lacks, and scenarios whose client is missing,
are listed as not measured. See benchmarks/README.md and docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trustme
from _generators import REPO_ROOT, Generator, Generators, choose
from _machine import describe
from _procs import (
    READY_TIMEOUT,
    STOP_GRACE,
    BenchError,
    Finished,
    Pinning,
    memory_kib,
    process_cpu_s,
    run_load,
    run_process,
    server,
)
from _report import Row, Run, chart, markdown, summarise, table, write_json
from _scenarios import ALL_SERVERS, BY_NAME, SCENARIOS, Scenario
from servers import unavailable

# Where results go unless told otherwise (ignored by git; the docs get copies).
RESULTS = REPO_ROOT / "benchmarks" / "results"
# Settle time before reading a fresh server's baseline memory for ``hold``.
HOLD_SETTLE = 0.3
# redis-benchmark counts requests, not seconds: a warm-up run of this many
# requests per second of --warmup also measures the rate, from which the
# measured run's request count is chosen to last about --duration.
REDIS_WARMUP_RATE = 50_000
REDIS_MIN_REQUESTS = 2_000
# The fields of a result that count the operations a server performed.
OPS_FIELDS = ("cycles", "round_trips", "replies", "delivered", "requests")


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


def redis_result(done: Finished) -> dict[str, object]:
    """The figures of a ``redis-benchmark --csv`` run of one test."""
    text = done.out.decode(errors="replace")
    rows = [row for row in csv.reader(io.StringIO(text)) if row and row[0].startswith("PING")]
    if done.status != 0 or not rows:
        detail = (done.err.decode(errors="replace") or text).strip()[-300:] or "no output"
        raise BenchError(f"redis-benchmark failed (status {done.status}): {detail}")
    _, rps, mean, _minimum, p50, p95, p99, maximum = rows[0][:8]
    us = {"mean_us": mean, "p50_us": p50, "p95_us": p95, "p99_us": p99, "max_us": maximum}
    result: dict[str, object] = {"per_s": float(rps)}
    result.update({key: round(float(ms) * 1000, 1) for key, ms in us.items()})
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
    per_s = warm["per_s"]
    assert isinstance(per_s, float)
    requests = max(REDIS_MIN_REQUESTS, round(per_s * context.duration))
    cpu_before = process_cpu_s(pid)
    done = run_process([*base, "-n", str(requests)], context.pinning, limit)
    cpu_after = process_cpu_s(pid)
    result = redis_result(done)
    result.update(
        generator="redis-benchmark",
        requests=requests,
        warmup_requests=warm_n,
        measured_s=round(requests / float(result["per_s"] or 1), 4),  # type: ignore[arg-type]
        client_cpu=round(done.cpu_s / done.elapsed_s, 3),
    )
    if cpu_before is not None and cpu_after is not None:
        result["server_cpu_s"] = round(cpu_after - cpu_before, 6)
    return result


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
    tls_args = context.tls.server_args() if scenario.tls and context.tls else []
    limit = scenario.time_limit(context.duration, context.warmup)
    try:
        with server(kind, tls_args, context.pinning, context.folder / f"{kind}.log") as (pid, port):
            if scenario.client == "redis-benchmark":
                assert context.generators.redis_benchmark is not None  # planned only if found
                binary = context.generators.redis_benchmark
                run.result = measure_redis(binary, scenario, port, pid, context)
            else:
                load = scenario.load_args(port, context.duration, context.warmup)
                argv = [*context.generator(scenario).argv, *load, "--server-pid", str(pid)]
                if scenario.tls:
                    assert context.tls is not None
                    argv += ["--tls", str(context.tls.ca)]
                if scenario.mode == "hold":
                    run.result = measure_hold(pid, argv, context.pinning, limit)
                else:
                    run.result = run_load(argv, context.pinning, limit)
        derive(run.result)
        run.values = {m.key: figure(run.result, m.key) for m in scenario.metrics}
    except BenchError as exc:
        run.error = str(exc)
    return run


# -- planning -----------------------------------------------------------------------------


def plan(
    scenarios: Sequence[Scenario], servers: Sequence[str], generators: Generators
) -> tuple[list[tuple[Scenario, str]], list[str]]:
    """The (scenario, server) pairs of one repetition, in order, and what cannot run and why."""
    skipped = [f"{kind}: {reason}" for kind in servers if (reason := unavailable(kind))]
    pairs: list[tuple[Scenario, str]] = []
    for scenario in scenarios:
        kinds = [k for k in scenario.servers if k in servers and not unavailable(k)]
        if not kinds:
            continue
        reason = client_missing(scenario, generators)
        if reason:
            skipped.append(f"{scenario.name}: {reason}")
        else:
            pairs += [(scenario, kind) for kind in kinds]
    return pairs, skipped


def client_missing(scenario: Scenario, generators: Generators) -> str | None:
    """Why no client can drive ``scenario`` here, or None."""
    if scenario.client == "redis-benchmark":
        if generators.redis_benchmark is None:
            return "redis-benchmark is not on PATH (Debian: apt install redis-tools)"
        return None
    generator = generators.tls if scenario.tls else generators.plain
    if scenario.mode not in generator.modes:
        return f"{generator.name} has no {scenario.mode} mode (it needs the C load generator)"
    return None


def rotated(pairs: list[tuple[Scenario, str]], by: int) -> list[tuple[Scenario, str]]:
    """Within each scenario, start ``by`` servers later (so no server always goes first)."""
    out: list[tuple[Scenario, str]] = []
    for scenario in dict.fromkeys(s for s, _ in pairs):
        kinds = [k for s, k in pairs if s is scenario]
        shift = by % len(kinds)
        out += [(scenario, k) for k in kinds[shift:] + kinds[:shift]]
    return out


def progress(run: Run, scenario: Scenario, repeat: int) -> str:
    """One line per measurement, printed as it finishes."""
    head = f"[{run.repetition + 1}/{repeat}] {run.scenario:<15} {run.server:<21}"
    if run.error is not None:
        return f"{head} ERROR: {run.error}"
    main = scenario.metrics[0]
    line = f"{head} {run.values[main.key]:>12,.1f} {main.unit:<9}"
    extra = [f"{m.unit} {run.values[m.key]:.3f}" for m in scenario.metrics[1:]]
    cpu = (run.result.get("server_cpu", "?"), run.result.get("client_cpu", "?"))
    return line + "".join(f" {e}" for e in extra) + f" (server CPU {cpu[0]}, load CPU {cpu[1]})"


def run_all(
    pairs: list[tuple[Scenario, str]], context: Context, repeat: int
) -> tuple[list[Run], bool]:
    """Every repetition of every pair; return the runs and whether Ctrl-C cut them short."""
    runs: list[Run] = []
    try:
        for repetition in range(repeat):
            for scenario, kind in rotated(pairs, repetition):
                runs.append(measure(scenario, kind, repetition, context))
                print(progress(runs[-1], scenario, repeat), flush=True)
    except KeyboardInterrupt:
        return runs, True
    return runs, False


# -- the command --------------------------------------------------------------------------


def raise_fd_limit() -> None:
    """Let servers and load generators open the ``hold`` scenario's 1000+ sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--duration", type=float, default=3.0, help="measured seconds per run (default: 3)")
    add("--warmup", type=float, default=0.5, help="unmeasured seconds first (default: 0.5)")
    add("--repeat", type=int, default=3, help="repetitions; medians over them (default: 3)")
    add("--quick", action="store_true", help="a smoke run: --duration 0.5 --warmup 0.2 --repeat 1")
    add("--scenarios", nargs="+", choices=list(BY_NAME), default=list(BY_NAME), metavar="NAME")
    add("--servers", nargs="+", choices=ALL_SERVERS, default=list(ALL_SERVERS), metavar="KIND")
    add("--list", action="store_true", help="list the scenarios and servers, and exit")
    add(
        "--json",
        type=Path,
        default=RESULTS / "results.json",
        help="results file (default: %(default)s)",
    )
    add("--chart", type=Path, help="write a PNG chart of the ratios here (needs matplotlib)")
    add(
        "--markdown",
        type=Path,
        default=RESULTS / "results.md",
        help="the table as Markdown, for the docs",
    )
    add("--no-loadgen", action="store_true", help="use the Python load generator only")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 0.5, 0.2, 1
    if args.duration <= 0 or args.warmup < 0 or args.repeat < 1:
        parser.error("--duration must be > 0, --warmup >= 0 and --repeat >= 1")
    return args


def listing() -> str:
    """Every scenario with its servers, and every server that cannot run here."""
    lines = ["scenarios (servers; the first reference is raw Trio):"]
    for s in SCENARIOS:
        client = "" if s.client == "loadgen" else f" [{s.client}]"
        lines.append(f"  {s.name:<16} {s.title}{client}: {', '.join(s.servers)}")
    lines.append("servers this trio_tcp cannot run:")
    lines += [f"  {k}: {reason}" for k in ALL_SERVERS if (reason := unavailable(k))] or ["  none"]
    return "\n".join(lines)


def announce(
    machine: dict[str, object],
    pairs: list[tuple[Scenario, str]],
    skipped: list[str],
    args: argparse.Namespace,
) -> None:
    """Say what will run, on what, with which load generator, and for how long at most."""
    limits = (
        READY_TIMEOUT + s.time_limit(args.duration, args.warmup) + STOP_GRACE for s, _ in pairs
    )
    worst = sum(limits) * args.repeat / 60
    typical = len(pairs) * (args.warmup + args.duration + 1.2) * args.repeat / 60
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), {machine['python']}, ", end="")
    print(f"trio {machine['trio']}, {machine['openssl']}")
    print(f"pinning: {machine['pinning']}")
    print("load generators: " + "; ".join(map(str, machine["load_generator_notes"])))  # type: ignore[call-overload]
    for line in skipped:
        print(f"not measured: {line}")
    print(f"{len(pairs)} measurements x {args.repeat} repetitions: ", end="")
    print(f"about {typical:.1f} min (bounded by {worst:.0f} min)", flush=True)
    if args.repeat < 3:
        print("note: fewer than 3 repetitions; medians are not robust (smoke run)")


def write_outputs(
    args: argparse.Namespace,
    rows: list[Row],
    runs: list[Run],
    skipped: list[str],
    machine: dict[str, object],
    command: str,
) -> None:
    """Write the JSON, the Markdown table and (if asked and possible) the chart."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.json, rows, runs, skipped, machine, **settings)
    print(f"JSON written to {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, skipped, machine, command))
        print(f"Markdown table written to {args.markdown}")
    if args.chart:
        print(chart(args.chart, rows, machine))


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print and write the results.

    Returns 0, or 1 if a measurement failed, or 130 after Ctrl-C (nothing is
    written then, so that an interrupted run never replaces a complete one).
    Servers and scenarios that cannot run here are reported, not failures.
    """
    args = parse_args(argv)
    if args.list:
        print(listing())
        return 0
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    pinning = Pinning.detect()
    pinning.pin_self()
    raise_fd_limit()
    generators = choose(use_loadgen=not args.no_loadgen)
    pairs, skipped = plan(scenarios, args.servers, generators)
    if not pairs:
        print("\n".join(f"not measured: {line}" for line in skipped))
        sys.exit("nothing to run: no selected server can run in the selected scenarios")
    machine = describe(pinning.description, generators.summary, generators.notes)
    announce(machine, pairs, skipped, args)
    with tempfile.TemporaryDirectory(prefix="trio-tcp-bench-") as folder:
        tls = TLSFiles(Path(folder)) if any(s.tls for s, _ in pairs) else None
        context = Context(args, pinning, generators, Path(folder), tls)
        runs, interrupted = run_all(pairs, context, args.repeat)
    rows = summarise(runs, scenarios)
    print()
    print(table(rows))
    print("vs trio: median / median of the raw Trio server of the same protocol;", end=" ")
    print("vs anyio: / median of anyio on Trio (echo scenarios)")
    print("KiB/conn and CPU s/10k (server CPU seconds per 10,000 connections): lower is better")
    print("load CPU: the load generator's own CPU use (1.00 = a full core); * = may have saturated")
    for line in skipped:
        print(f"not measured: {line}")
    if interrupted:
        print("interrupted: results above are partial; no file was written")
        return 130
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    write_outputs(args, rows, runs, skipped, machine, command)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
