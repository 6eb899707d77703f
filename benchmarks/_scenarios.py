"""The scenarios: what load each applies, which servers it runs on, what it reports.

Every scenario is one load-generator run on a fresh server process. A scenario
belongs to a family of servers that speak the same protocol (echo, TLS echo,
lines, Redis PING, chat); each family has the raw Trio server every ratio is
taken against, and the echo family also has anyio, the second reference.
"""

from __future__ import annotations

import dataclasses

# How long ``hold`` keeps its 1000 connections open and idle once all are up. The
# memory figure does not depend on it; a second is enough for /proc to settle.
HOLD_SECONDS = 1.0
# The load generators' limit for opening connections (their -t option).
SETUP_TIMEOUT = 20.0
# Seconds one counted run under callgrind may take; also its load generator's -d.
CALLGRIND_LIMIT = 240.0
# About how long a callgrind measurement takes (the server starts and stops slowly).
CALLGRIND_TYPICAL = 45.0


@dataclasses.dataclass(frozen=True)
class Family:
    """Servers that speak one protocol, and the references their ratios use."""

    servers: tuple[str, ...]
    baseline: str  # the raw Trio server
    anyio: str | None = None


ECHO = Family(
    servers=(
        "trio_tcp",
        "trio_tcp_caller",
        "trio_tcp_idle60",
        "trio_tcp_wto60",
        "trio_tcp_x_lean",
        "trio_tcp_x_sockstream",
        "trio_tcp_x_trio",
        "trio_raw",
        "anyio",
        "asyncio_streams",
        "asyncio_protocol",
    ),
    baseline="trio_raw",
    anyio="anyio",
)
TLS = Family(("trio_tcp_tls", "trio_raw_tls"), "trio_raw_tls")
LINES = Family(("trio_tcp_lines", "trio_raw_lines"), "trio_raw_lines")
REDIS = Family(("trio_tcp_redis", "trio_raw_redis"), "trio_raw_redis")
CHAT = Family(
    ("trio_tcp_chat", "trio_tcp_chat_group", "trio_tcp_chat_naive", "trio_raw_chat"),
    "trio_raw_chat",
)
FAMILIES = (ECHO, TLS, LINES, REDIS, CHAT)
ALL_SERVERS = tuple(name for family in FAMILIES for name in family.servers)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One figure a scenario yields, compared across servers.

    Attributes:
        key: The result field (``kib_per_conn`` and ``cpu_s_per_10k`` are the runner's own).
        unit: Its unit, for the table.
        higher_is_better: False for memory and CPU cost.
        suffix: Added to the scenario's name in the table; empty for the main figure.
        latency: Whether the load generator's latency percentiles belong with it.
    """

    key: str
    unit: str
    higher_is_better: bool = True
    suffix: str = ""
    latency: bool = False


def rate(unit: str) -> Metric:
    """A rate with latency percentiles (``per_s``)."""
    return Metric("per_s", unit, latency=True)


# Server CPU seconds per 10,000 connections (or handshakes): what each one costs
# the server, steadier than the rate when the machine's speed wanders.
CPU_PER_10K = Metric("cpu_s_per_10k", "CPU s/10k", higher_is_better=False, suffix=" cpu")
THROUGHPUT = Metric("mb_per_s", "MB/s")
MEMORY = Metric("kib_per_conn", "KiB/conn", higher_is_better=False)


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One load pattern, the servers it runs on and the figures it yields.

    Attributes:
        name: Short identifier used on the command line and in the JSON.
        title: What the scenario measures, for the chart.
        family: The servers it runs on.
        mode: The load generator's mode (for ``redis-benchmark``: its test name).
        options: The mode's options, as on the load generator's command line.
        metrics: The figures compared; the first is the main one.
        client: ``loadgen`` (the C load generator, or pyload in its place),
            ``redis-benchmark``, or ``callgrind`` (the C load generator, the
            server under callgrind, run once whatever ``--repeat`` says).
        tls: Whether the load generator speaks TLS.
    """

    name: str
    title: str
    family: Family
    mode: str
    options: tuple[str, ...]
    metrics: tuple[Metric, ...]
    client: str = "loadgen"
    tls: bool = False

    @property
    def servers(self) -> tuple[str, ...]:
        """The servers this scenario runs against."""
        return self.family.servers

    def seconds(self, duration: float) -> float:
        """How long the load is applied once set up."""
        return HOLD_SECONDS if self.mode == "hold" else duration

    def load_args(self, port: int, duration: float, warmup: float) -> list[str]:
        """Mode and options for the load generator (C loadgen and pyload alike)."""
        seconds = self.seconds(duration)
        return [
            self.mode,
            "-p",
            str(port),
            *self.options,
            "-d",
            f"{seconds:g}",
            "-w",
            f"{warmup:g}",
        ]

    def time_limit(self, duration: float, warmup: float) -> float:
        """Seconds after which the load generator is killed: its own limits plus slack."""
        if self.client == "callgrind":
            return 2 * CALLGRIND_LIMIT
        if self.client == "redis-benchmark":  # a warm-up run, then the measured one
            return SETUP_TIMEOUT + 4 * (warmup + duration) + 15.0
        return SETUP_TIMEOUT + warmup + self.seconds(duration) + 15.0

    def typical_s(self, duration: float, warmup: float) -> float:
        """About how long one measurement takes, server start and stop included."""
        if self.client == "callgrind":
            return CALLGRIND_TYPICAL
        if self.client == "redis-benchmark":
            return 2 * (warmup + duration) + 1.5
        return warmup + self.seconds(duration) + 1.2


def echo(name: str, title: str, mode: str, *options: str, metrics: tuple[Metric, ...]) -> Scenario:
    """A scenario of the echo family."""
    return Scenario(name, title, ECHO, mode, options, metrics)


def churn(conns: int) -> Scenario:
    """Connect, send 64 bytes, read the echo, close; ``conns`` cycles in flight."""
    title = f"connect-echo-close, {conns} in flight"
    metrics = (rate("conn/s"), CPU_PER_10K)
    return echo(f"connect_{conns}", title, "connect", "-c", str(conns), "-s", "64", metrics=metrics)


def pipeline(depth: int) -> Scenario:
    """PING/PONG lines on 50 connections, ``depth`` requests in flight on each."""
    title = f"PING lines, 50 conns, depth {depth}"
    options = ("-c", "50", "--depth", str(depth))
    return Scenario(f"pipeline_{depth}", title, LINES, "pipeline", options, (rate("msg/s"),))


def redis(test: str, depth: int) -> Scenario:
    """``redis-benchmark -t TEST -P DEPTH -c 50``."""
    kind = test.removeprefix("ping_")
    title = f"redis-benchmark -t {test}, 50 conns, -P {depth}"
    name = f"redis_{kind}_{depth}"
    options = ("-c", "50", "-P", str(depth))
    return Scenario(name, title, REDIS, test, options, (rate("req/s"),), client="redis-benchmark")


SCENARIOS = (
    echo("pingpong_1", "ping-pong 64 B, 1 conn", "pingpong", "-c", "1", "-s", "64",
         metrics=(rate("rt/s"),)),
    echo("pingpong_50", "ping-pong 64 B, 50 conns", "pingpong", "-c", "50", "-s", "64",
         metrics=(rate("rt/s"),)),
    echo("stream", "stream 64 KiB writes, 1 conn", "stream", "-c", "1", "-s", "65536",
         metrics=(THROUGHPUT,)),
    churn(1),
    churn(20),
    churn(64),
    echo("hold", "1000 idle conns: memory per conn", "hold", "-c", "1000", "-s", "1",
         metrics=(MEMORY,)),
    # 8 handshakes in flight: the server's handshake CPU, not the round trips, is the limit.
    Scenario("tls_handshake", "TLS handshakes, 8 in flight", TLS, "connect",
             ("-c", "8", "-s", "64"), (rate("hs/s"), CPU_PER_10K), tls=True),
    Scenario("tls_stream", "TLS stream 64 KiB writes", TLS, "stream",
             ("-c", "1", "-s", "65536"), (THROUGHPUT,), tls=True),
    pipeline(1),
    pipeline(16),
    pipeline(64),
    redis("ping_inline", 1),
    redis("ping_inline", 16),
    redis("ping_mbulk", 1),
    redis("ping_mbulk", 16),
    # Instructions per operation under callgrind: steadier than any rate, user space only.
    Scenario("connect_20_ir", "connect-echo-close, 20 in flight: instructions (callgrind)",
             ECHO, "connect", ("-c", "20", "-s", "64"),
             (Metric("ir_per_op", "Ir/conn", higher_is_better=False),), client="callgrind"),
    Scenario("pingpong_50_ir", "ping-pong 64 B, 50 conns: instructions (callgrind)",
             ECHO, "pingpong", ("-c", "50", "-s", "64"),
             (Metric("ir_per_op", "Ir/rt", higher_is_better=False),), client="callgrind"),
    # 10 members that read, 1 that never does; 8 lines of 32 bytes in flight per sender.
    Scenario("fanout", "chat fan-out, 10 members + 1 stuck", CHAT, "fanout",
             ("-c", "10", "--stuck", "1", "-s", "32", "--depth", "8", "--rcvbuf", "4096"),
             (rate("msg/s"),)),
)  # fmt: skip

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
