"""Benchmark trio_tcp's echo servers against raw Trio and asyncio, on loopback.

Usage (``nox -s bench -- ARGS`` runs the same in its own virtualenv)::

    python benchmarks/run.py                        # everything: 3 s x 3 repetitions
    python benchmarks/run.py --duration 0.5 --repeat 1 --scenarios pingpong_1
    python benchmarks/run.py --json docs/performance.json --chart docs/performance.png

Each measurement starts a fresh server (``benchmarks/servers.py``) pinned to one
CPU and a load generator pinned to another: the C loadgen, built from
``../shared/tools/loadgen/loadgen.c`` (or ``--loadgen-source``) into a cache
folder, or ``benchmarks/pyload.py`` without it. Within each repetition every
scenario runs on every server in turn, the starting server rotating from one
repetition to the next; the report gives medians over the repetitions and
their ratio to raw Trio. See docs/performance.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trustme
from _generators import REPO_ROOT, Generator, Generators, choose
from _machine import describe
from _procs import READY_TIMEOUT, STOP_GRACE, BenchError, Pinning, memory_kib, run_load, server
from _report import Row, Run, chart, markdown, summarise, table, write_json
from _scenarios import ALL_SERVERS, BY_NAME, SCENARIOS, Scenario

# Where results go unless told otherwise (ignored by git; the docs get copies).
RESULTS = REPO_ROOT / "benchmarks" / "results"
# Settle time before reading a fresh server's baseline memory for ``hold``.
HOLD_SETTLE = 0.3


class TLSFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 (the C loadgen checks the IP)."""

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
        self, args: argparse.Namespace, pinning: Pinning, folder: Path, tls: TLSFiles | None
    ) -> None:
        self.duration: float = args.duration
        self.warmup: float = args.warmup
        self.pinning = pinning
        self.folder = folder
        self.tls = tls


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


def figure(result: dict[str, object], metric: str) -> float:
    """The scenario's number from a load generator result."""
    value = result.get(metric)
    if not isinstance(value, (int, float)):
        raise BenchError(f"no {metric} in the result: {result}")
    return float(value)


def measure(
    scenario: Scenario,
    kind: str,
    repetition: int,
    generator: Generator,
    context: Context,
) -> Run:
    """One fresh server, one load run: the scenario's figure, or the error that stopped it."""
    run = Run(scenario.name, kind, repetition, generator.name)
    tls_args = context.tls.server_args() if scenario.tls and context.tls else []
    cafile = str(context.tls.ca) if context.tls else None
    limit = scenario.time_limit(context.duration, context.warmup)
    try:
        with server(kind, tls_args, context.pinning, context.folder / f"{kind}.log") as (pid, port):
            load = scenario.load_args(port, context.duration, context.warmup, cafile)
            argv = [*generator.argv, *load]
            if scenario.mode == "hold":
                run.result = measure_hold(pid, argv, context.pinning, limit)
            else:
                run.result = run_load(argv, context.pinning, limit)
        run.value = figure(run.result, scenario.metric)
    except BenchError as exc:
        run.error = str(exc)
    return run


def plan(scenarios: Sequence[Scenario], servers: Sequence[str]) -> list[tuple[Scenario, str]]:
    """The (scenario, server) pairs of one repetition, in order."""
    return [(s, kind) for s in scenarios for kind in s.servers if kind in servers]


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
    head = f"[{run.repetition + 1}/{repeat}] {run.scenario:<14} {run.server:<17}"
    if run.value is None:
        return f"{head} ERROR: {run.error}"
    cpu = run.result.get("client_cpu", "?")
    return f"{head} {run.value:>12,.1f} {scenario.unit:<9} (load CPU {cpu})"


def run_all(
    pairs: list[tuple[Scenario, str]], generators: Generators, context: Context, repeat: int
) -> tuple[list[Run], bool]:
    """Every repetition of every pair; return the runs and whether Ctrl-C cut them short."""
    runs: list[Run] = []
    try:
        for repetition in range(repeat):
            for scenario, kind in rotated(pairs, repetition):
                generator = generators.tls if scenario.tls else generators.plain
                runs.append(measure(scenario, kind, repetition, generator, context))
                print(progress(runs[-1], scenario, repeat), flush=True)
    except KeyboardInterrupt:
        return runs, True
    return runs, False


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
    add("--scenarios", nargs="+", choices=list(BY_NAME), default=list(BY_NAME), metavar="NAME")
    add("--servers", nargs="+", choices=ALL_SERVERS, default=list(ALL_SERVERS), metavar="KIND")
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
    add("--loadgen-source", help="path of loadgen.c (or set $TRIO_TCP_LOADGEN_SOURCE)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.repeat < 1:
        parser.error("--duration must be > 0, --warmup >= 0 and --repeat >= 1")
    return args


def announce(
    machine: dict[str, object],
    generators: Generators,
    pairs: list[tuple[Scenario, str]],
    args: argparse.Namespace,
) -> None:
    """Say what will run, on what, with which load generator, and for how long at most."""
    limits = (
        READY_TIMEOUT + s.time_limit(args.duration, args.warmup) + STOP_GRACE for s, _ in pairs
    )
    worst = sum(limits) * args.repeat / 60
    typical = len(pairs) * (args.warmup + args.duration + 1.0) * args.repeat / 60
    print(f"machine: {machine['cpu']} ({machine['cores']} cores), {machine['python']}, ", end="")
    print(f"trio {machine['trio']}, {machine['openssl']}")
    print(f"pinning: {machine['pinning']}")
    print("load generator: " + "; ".join(generators.notes))
    print(f"{len(pairs)} measurements x {args.repeat} repetitions: ", end="")
    print(f"about {typical:.1f} min (bounded by {worst:.0f} min)", flush=True)
    if args.repeat < 3:
        print("note: fewer than 3 repetitions; medians are not robust (smoke run)")


def write_outputs(
    args: argparse.Namespace,
    rows: list[Row],
    runs: list[Run],
    machine: dict[str, object],
    command: str,
) -> None:
    """Write the JSON, the Markdown table and (if asked and possible) the chart."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_json(args.json, rows, runs, machine, **settings)
    print(f"JSON written to {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(rows, machine, command))
        print(f"Markdown table written to {args.markdown}")
    if args.chart:
        print(chart(args.chart, rows, machine))


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print and write the results.

    Returns 0, or 1 if a measurement failed, or 130 after Ctrl-C (nothing is
    written then, so that an interrupted run never replaces a complete one).
    """
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    pairs = plan(scenarios, args.servers)
    if not pairs:
        sys.exit("nothing to run: no selected server takes part in the selected scenarios")
    pinning = Pinning.detect()
    pinning.pin_self()
    raise_fd_limit()
    generators = choose(use_loadgen=not args.no_loadgen, explicit_source=args.loadgen_source)
    machine = describe(pinning.description, generators.summary, generators.notes)
    announce(machine, generators, pairs, args)
    with tempfile.TemporaryDirectory(prefix="trio-tcp-bench-") as folder:
        tls = TLSFiles(Path(folder)) if any(s.tls for s, _ in pairs) else None
        context = Context(args, pinning, Path(folder), tls)
        runs, interrupted = run_all(pairs, generators, context, args.repeat)
    rows = summarise(runs, scenarios)
    print()
    print(table(rows))
    print("ratio: median / median of trio_raw (TLS rows: trio_raw_tls);", end=" ")
    print("hold is memory per connection: lower is better")
    print("load CPU: the load generator's own CPU use (1.00 = a full core); * = may have saturated")
    if interrupted:
        print("interrupted: results above are partial; no file was written")
        return 130
    command = " ".join(["python benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    write_outputs(args, rows, runs, machine, command)
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
