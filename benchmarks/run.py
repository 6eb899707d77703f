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
import resource
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from _generators import REPO_ROOT, Generators, choose
from _machine import describe
from _measure import Context, TLSFiles, measure
from _procs import READY_TIMEOUT, SLOW_READY_TIMEOUT, SLOW_STOP_GRACE, STOP_GRACE, Pinning
from _report import Row, Run, chart, markdown, summarise, table, write_json
from _scenarios import ALL_SERVERS, BY_NAME, SCENARIOS, Scenario
from servers import unavailable

# Where results go unless told otherwise (ignored by git; the docs get copies).
RESULTS = REPO_ROOT / "benchmarks" / "results"


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
    if scenario.client == "callgrind":
        if generators.callgrind is None:
            return "valgrind or callgrind_control is not on PATH (Debian: apt install valgrind)"
        if generators.plain.name != "loadgen":
            return "counting operations needs the C load generator"
        return None
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
    figures = [f"{run.values[m.key]:>12,.1f} {m.unit:<9}" for m in scenario.metrics]
    cpus = [
        f"{who} CPU {value}"
        for who, key in (("server", "server_cpu"), ("load", "client_cpu"))
        if (value := run.result.get(key)) is not None
    ]
    return f"{head} {' '.join(figures)}" + (f" ({', '.join(cpus)})" if cpus else "")


def run_all(
    pairs: list[tuple[Scenario, str]], context: Context, repeat: int
) -> tuple[list[Run], bool]:
    """Every repetition of every pair; return the runs and whether Ctrl-C cut them short."""
    runs: list[Run] = []
    try:
        for repetition in range(repeat):
            for scenario, kind in rotated(pairs, repetition):
                if scenario.client == "callgrind" and repetition > 0:
                    continue  # instruction counts barely move: once is enough
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
    add(
        "--scenarios",
        nargs="+",
        choices=list(BY_NAME),
        metavar="NAME",
        help="scenarios to run (default: all; with --quick, all but the callgrind ones)",
    )
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
    if args.scenarios is None:
        # A server under callgrind takes tens of seconds per measurement: not a smoke run.
        args.scenarios = [s.name for s in SCENARIOS if not (args.quick and s.client == "callgrind")]
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
    notes: Sequence[str],
    pairs: list[tuple[Scenario, str]],
    skipped: list[str],
    args: argparse.Namespace,
) -> None:
    """Say what will run, on what, with which load generator, and for how long at most."""
    typical = worst = 0.0
    count = 0
    for scenario, _ in pairs:
        times = 1 if scenario.client == "callgrind" else args.repeat
        slow = scenario.client == "callgrind"
        ready, grace = (
            (SLOW_READY_TIMEOUT, SLOW_STOP_GRACE) if slow else (READY_TIMEOUT, STOP_GRACE)
        )
        count += times
        typical += times * scenario.typical_s(args.duration, args.warmup)
        worst += times * (ready + scenario.time_limit(args.duration, args.warmup) + grace)
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), {machine['python']}, ", end="")
    print(f"trio {machine['trio']}, {machine['openssl']}")
    print(f"pinning: {machine['pinning']}")
    print("load generators: " + "; ".join(notes))
    for line in skipped:
        print(f"not measured: {line}")
    print(f"{count} measurements ({args.repeat} repetitions): ", end="")
    print(f"about {typical / 60:.1f} min (bounded by {worst / 60:.0f} min)", flush=True)
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


def stop_on_signals() -> None:
    """Make SIGTERM, and SIGINT even where it was ignored, stop the run as Ctrl-C does.

    A shell starts a background job with SIGINT ignored, and ``kill`` sends
    SIGTERM: either way the measurement under way must still stop its server
    and load generator (the ``finally`` blocks that a KeyboardInterrupt runs).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print and write the results.

    Returns 0, or 1 if a measurement failed, or 130 after Ctrl-C or SIGTERM (nothing is
    written then, so that an interrupted run never replaces a complete one).
    Servers and scenarios that cannot run here are reported, not failures.
    """
    args = parse_args(argv)
    if args.list:
        print(listing())
        return 0
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    stop_on_signals()
    pinning = Pinning.detect()
    pinning.pin_self()
    raise_fd_limit()
    generators = choose(use_loadgen=not args.no_loadgen)
    pairs, skipped = plan(scenarios, args.servers, generators)
    if not pairs:
        print("\n".join(f"not measured: {line}" for line in skipped))
        sys.exit("nothing to run: no selected server can run in the selected scenarios")
    machine = describe(pinning.description, generators.summary, generators.notes)
    announce(machine, generators.notes, pairs, skipped, args)
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
    print("srv CPU: the server's CPU use while measured (1.00 = its whole core; less under a")
    print("throughput load means it waited: for the client, or for a CPU other processes held)")
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
