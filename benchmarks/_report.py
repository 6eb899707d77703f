"""Turn the runs into medians and ratios, and show them: terminal table, Markdown, JSON, chart."""

from __future__ import annotations

import dataclasses
import json
import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from _machine import one_line
from _scenarios import BY_NAME, Scenario

# A load generator using this much of its core may have been the bottleneck.
SATURATED_CPU = 0.9


@dataclasses.dataclass
class Run:
    """One measurement: one scenario against one server in one repetition."""

    scenario: str
    server: str
    repetition: int
    generator: str
    value: float | None = None
    result: dict[str, object] = dataclasses.field(default_factory=dict)
    error: str | None = None


@dataclasses.dataclass
class Row:
    """The median of a scenario on a server over the repetitions, and its ratio."""

    scenario: Scenario
    server: str
    generator: str
    values: list[float]
    errors: list[str]
    median: float | None = None
    ratio: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    client_cpu: float | None = None

    @property
    def saturated(self) -> bool:
        """Whether the load generator was near its own CPU limit in some run."""
        return self.client_cpu is not None and self.client_cpu >= SATURATED_CPU


def median_of(runs: Sequence[Run], key: str) -> float | None:
    """Median of a numeric result field over the runs that have it."""
    values = [float(v) for r in runs if isinstance(v := r.result.get(key), (int, float))]
    return statistics.median(values) if values else None


def summarise(runs: Sequence[Run], scenarios: Sequence[Scenario]) -> list[Row]:
    """One row per scenario and server, with medians and ratios to the baseline server."""
    rows: list[Row] = []
    for scenario in scenarios:
        group = [r for r in runs if r.scenario == scenario.name]
        servers = list(dict.fromkeys(r.server for r in group))
        scenario_rows = [
            make_row(scenario, s, [r for r in group if r.server == s]) for s in servers
        ]
        base = next((r.median for r in scenario_rows if r.server == scenario.baseline), None)
        for row in scenario_rows:
            if row.median is not None and base:
                row.ratio = row.median / base
        rows += scenario_rows
    return rows


def make_row(scenario: Scenario, server: str, runs: list[Run]) -> Row:
    """Summarise one server's runs of one scenario."""
    ok = [r for r in runs if r.value is not None]
    cpus = [float(c) for r in ok if isinstance(c := r.result.get("client_cpu"), (int, float))]
    return Row(
        scenario=scenario,
        server=server,
        generator=runs[0].generator if runs else "?",
        values=[r.value for r in ok if r.value is not None],
        errors=[r.error for r in runs if r.error],
        median=statistics.median([r.value for r in ok if r.value is not None]) if ok else None,
        p50_us=median_of(ok, "p50_us"),
        p99_us=median_of(ok, "p99_us"),
        client_cpu=max(cpus) if cpus else None,
    )


def cells(row: Row) -> list[str]:
    """A row's table cells: scenario, server, median, unit, ratio, p50, p99, load CPU, runs."""

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    runs = f"{len(row.values)}" + (f" ({len(row.errors)} failed)" if row.errors else "")
    cpu = num(row.client_cpu, ".2f") + (" *" if row.saturated else "")
    median = "error" if row.median is None else format(row.median, ",.1f")
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
    latency = [num(row.p50_us, ".0f"), num(row.p99_us, ".0f")]
    return [row.scenario.name, row.server, median, row.scenario.unit, ratio, *latency, cpu, runs]


HEADER = ["scenario", "server", "median", "unit", "ratio", "p50 µs", "p99 µs", "load CPU", "runs"]
LEFT = {0, 1, 3}  # text columns; the others are numbers, aligned right


def table(rows: Sequence[Row]) -> str:
    """The results as an aligned plain-text table."""
    body = [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in [HEADER, *body]) for i in range(len(HEADER))]

    def fmt(line: list[str]) -> str:
        parts = [
            c.ljust(w) if i in LEFT else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule, *(fmt(line) for line in body)])


def markdown(rows: Sequence[Row], machine: dict[str, object], command: str) -> str:
    """The results as a Markdown table with the machine and the command, for the docs."""
    lines = [
        f"Measured {machine['date']} with `{command}`",
        f"on {one_line(machine)}; {machine['pinning']};",
        f"load generator: {machine['load_generator']}.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if i in LEFT else "---:" for i in range(len(HEADER))) + "|",
    ]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_json(
    path: Path,
    rows: Sequence[Row],
    runs: Sequence[Run],
    machine: dict[str, object],
    **settings: object,
) -> None:
    """Write the machine, the settings, the summary and every raw run as JSON."""
    summary = [
        {
            "scenario": r.scenario.name,
            "server": r.server,
            "metric": r.scenario.metric,
            "unit": r.scenario.unit,
            "higher_is_better": r.scenario.higher_is_better,
            "baseline": r.scenario.baseline,
            "generator": r.generator,
            "median": r.median,
            "ratio": r.ratio,
            "p50_us": r.p50_us,
            "p99_us": r.p99_us,
            "max_client_cpu": r.client_cpu,
            "values": r.values,
            "errors": r.errors,
        }
        for r in rows
    ]
    document = {
        "machine": machine,
        "settings": settings,
        "summary": summary,
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def chart(path: Path, rows: Sequence[Row], machine: dict[str, object]) -> str:
    """Draw grouped bars of ratios (one group per scenario); return a status note."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    scenarios = list(dict.fromkeys(r.scenario.name for r in rows if r.ratio is not None))
    servers = list(dict.fromkeys(r.server for r in rows))
    colours = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(servers)}
    fig, ax = plt.subplots(figsize=(12, 6), layout="constrained")
    width = 0.8 / max(Counter(r.scenario.name for r in rows).values())
    for x, name in enumerate(scenarios):
        group = [r for r in rows if r.scenario.name == name and r.ratio is not None]
        for i, row in enumerate(group):
            assert row.ratio is not None
            pos = x + width * (i - (len(group) - 1) / 2)
            ax.bar(pos, row.ratio, width, color=colours[row.server], label=row.server)
            ax.annotate(f"{row.ratio:.2f}", (pos, row.ratio), ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(scenarios)))
    labels = [f"{textwrap.fill(BY_NAME[n].title, 18)}\n({lower_or_higher(n)})" for n in scenarios]
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("median relative to raw Trio (plain: trio_raw, TLS: trio_raw_tls)")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    fig.legend(
        unique.values(), unique.keys(), fontsize=8, ncols=len(unique), loc="outside lower center"
    )
    load = f"load generator: {machine['load_generator']}; {machine['pinning']}"
    ax.set_title(
        f"trio_tcp benchmarks: median ratio to raw Trio\n{one_line(machine)}\n{load}", fontsize=9
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"


def lower_or_higher(name: str) -> str:
    """The direction in which a scenario's figure is better."""
    return "higher is better" if BY_NAME[name].higher_is_better else "lower is better"
