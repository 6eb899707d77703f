"""Turn the runs into medians and ratios, and show them: terminal table, Markdown, JSON, chart.

Every row is one figure (a scenario's metric) on one server: the median over
the repetitions, and two ratios taken in the same run: to the raw Trio server
of the scenario's family (``vs trio``) and, where the family has one, to anyio
on Trio (``vs anyio``).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from _machine import one_line
from _scenarios import Metric, Scenario

# A load generator using this much of its core may have been the bottleneck.
SATURATED_CPU = 0.9


@dataclasses.dataclass
class Run:
    """One measurement: one scenario against one server in one repetition."""

    scenario: str
    server: str
    repetition: int
    generator: str
    values: dict[str, float] = dataclasses.field(default_factory=dict)
    result: dict[str, object] = dataclasses.field(default_factory=dict)
    error: str | None = None


@dataclasses.dataclass
class Row:
    """One metric of a scenario on a server: the median over the repetitions, and its ratios."""

    scenario: Scenario
    metric: Metric
    server: str
    generator: str
    values: list[float]
    errors: list[str]
    median: float | None = None
    vs_trio: float | None = None
    vs_anyio: float | None = None
    p50_us: float | None = None
    p90_us: float | None = None
    p99_us: float | None = None
    server_cpu: float | None = None
    client_cpu: float | None = None

    @property
    def label(self) -> str:
        """The scenario's name, with the metric's suffix for a secondary figure."""
        return self.scenario.name + self.metric.suffix

    @property
    def saturated(self) -> bool:
        """Whether the load generator was near its own CPU limit in some run."""
        return self.client_cpu is not None and self.client_cpu >= SATURATED_CPU


def median_of(runs: Sequence[Run], key: str) -> float | None:
    """Median of a numeric result field over the runs that have it."""
    values = [float(v) for r in runs if isinstance(v := r.result.get(key), (int, float))]
    return statistics.median(values) if values else None


def summarise(runs: Sequence[Run], scenarios: Sequence[Scenario]) -> list[Row]:
    """One row per scenario, metric and server, with medians and ratios."""
    rows: list[Row] = []
    for scenario in scenarios:
        group = [r for r in runs if r.scenario == scenario.name]
        servers = [s for s in scenario.servers if any(r.server == s for r in group)]
        for metric in scenario.metrics:
            block = [
                make_row(scenario, metric, s, [r for r in group if r.server == s]) for s in servers
            ]
            medians = {row.server: row.median for row in block}
            trio = medians.get(scenario.family.baseline)
            anyio = medians.get(scenario.family.anyio or "")
            for row in block:
                if row.median is not None:
                    row.vs_trio = row.median / trio if trio else None
                    row.vs_anyio = row.median / anyio if anyio else None
            rows += block
    return rows


def make_row(scenario: Scenario, metric: Metric, server: str, runs: list[Run]) -> Row:
    """Summarise one server's runs of one scenario, for one metric."""
    ok = [r for r in runs if metric.key in r.values]
    values = [r.values[metric.key] for r in ok]
    cpus = [float(c) for r in ok if isinstance(c := r.result.get("client_cpu"), (int, float))]
    latency = metric.latency
    return Row(
        scenario=scenario,
        metric=metric,
        server=server,
        generator=runs[0].generator if runs else "?",
        values=values,
        errors=[r.error for r in runs if r.error],
        median=statistics.median(values) if values else None,
        p50_us=median_of(ok, "p50_us") if latency else None,
        p90_us=median_of(ok, "p90_us") if latency else None,
        p99_us=median_of(ok, "p99_us") if latency else None,
        server_cpu=median_of(ok, "server_cpu"),
        client_cpu=max(cpus) if cpus else None,
    )


HEADER = [
    "scenario", "server", "median", "unit", "vs trio", "vs anyio",
    "p50 µs", "p90 µs", "p99 µs", "srv CPU", "load CPU", "runs",
]  # fmt: skip
LEFT = {0, 1, 3}  # text columns; the others are numbers, aligned right


def cells(row: Row) -> list[str]:
    """A row's table cells, in the order of :data:`HEADER`."""

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    runs = f"{len(row.values)}" + (f" ({len(row.errors)} failed)" if row.errors else "")
    cpu = num(row.client_cpu, ".2f") + (" *" if row.saturated else "")
    median = (
        "error"
        if row.median is None
        else format(row.median, ",.1f" if row.median >= 10 else ",.3f")
    )
    ratios = [num(row.vs_trio, ".2f"), num(row.vs_anyio, ".2f")]
    latency = [num(row.p50_us, ",.0f"), num(row.p90_us, ",.0f"), num(row.p99_us, ",.0f")]
    server = num(row.server_cpu, ".2f")
    return [row.label, row.server, median, row.metric.unit, *ratios, *latency, server, cpu, runs]


def table(rows: Sequence[Row]) -> str:
    """The results as an aligned plain-text table, a blank line between scenarios."""
    body = [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in [HEADER, *body]) for i in range(len(HEADER))]

    def fmt(line: list[str]) -> str:
        parts = [
            c.ljust(w) if i in LEFT else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt(HEADER), "  ".join("-" * w for w in widths)]
    for i, line in enumerate(body):
        if i and line[0] != body[i - 1][0]:
            lines.append("")
        lines.append(fmt(line))
    return "\n".join(lines)


def markdown(
    rows: Sequence[Row], skipped: Sequence[str], machine: dict[str, object], command: str
) -> str:
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
    if skipped:
        lines += ["", "Not measured:", "", *(f"- {line}" for line in skipped)]
    return "\n".join(lines) + "\n"


def write_json(
    path: Path,
    rows: Sequence[Row],
    runs: Sequence[Run],
    skipped: Sequence[str],
    machine: dict[str, object],
    **settings: object,
) -> None:
    """Write the machine, the settings, the summary, what was skipped and every raw run."""
    summary = [
        {
            "scenario": r.scenario.name,
            "label": r.label,
            "server": r.server,
            "metric": r.metric.key,
            "unit": r.metric.unit,
            "higher_is_better": r.metric.higher_is_better,
            "baseline": r.scenario.family.baseline,
            "anyio": r.scenario.family.anyio,
            "generator": r.generator,
            "median": r.median,
            "vs_trio": r.vs_trio,
            "vs_anyio": r.vs_anyio,
            "p50_us": r.p50_us,
            "p90_us": r.p90_us,
            "p99_us": r.p99_us,
            "server_cpu": r.server_cpu,
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
        "skipped": list(skipped),
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def chart(path: Path, rows: Sequence[Row], machine: dict[str, object]) -> str:
    """Draw grouped bars of the ratios to raw Trio (one group per figure); return a note."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    shown = [r for r in rows if r.vs_trio is not None]
    labels = list(dict.fromkeys(r.label for r in shown))
    servers = list(dict.fromkeys(r.server for r in rows))
    colours = {s: plt.get_cmap("tab20")(i % 20) for i, s in enumerate(servers)}
    fig, ax = plt.subplots(figsize=(max(12, len(labels) * 1.1), 7), layout="constrained")
    width = 0.85 / max(Counter(r.label for r in shown).values(), default=1)
    for x, label in enumerate(labels):
        group = [r for r in shown if r.label == label]
        for i, row in enumerate(group):
            assert row.vs_trio is not None
            pos = x + width * (i - (len(group) - 1) / 2)
            ax.bar(pos, row.vs_trio, width, color=colours[row.server], label=row.server)
            ax.annotate(f"{row.vs_trio:.2f}", (pos, row.vs_trio), ha="center", va="bottom",
                        fontsize=6, rotation=90)  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(labels)))
    firsts = {r.label: r for r in shown}
    ax.set_xticklabels(
        [f"{textwrap.fill(tick_label(firsts[n]), 16)}\n({direction(firsts[n])})" for n in labels],
        fontsize=7,
    )
    ax.set_ylabel("median relative to the raw Trio server of the same protocol")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize=7, ncols=min(len(unique), 7),
               loc="outside lower center")  # fmt: skip
    load = f"load generator: {machine['load_generator']}; {machine['pinning']}"
    ax.set_title(
        f"trio_tcp benchmarks: median ratio to raw Trio\n{one_line(machine)}\n{load}", fontsize=9
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written to {path}"


def tick_label(row: Row) -> str:
    """What a group of bars shows."""
    if row.metric.suffix:
        return f"{row.scenario.title}: {row.metric.unit}"
    return row.scenario.title


def direction(row: Row) -> str:
    """The direction in which a figure is better."""
    return "higher is better" if row.metric.higher_is_better else "lower is better"
