"""The scenarios: what load each applies, what it reports, and against which baseline.

Every scenario is one load-generator mode on a fresh server process. Plain
scenarios run against the plain servers and compare with ``trio_raw``; TLS
scenarios run against the TLS servers and compare with ``trio_raw_tls``.
"""

from __future__ import annotations

import dataclasses

PLAIN_SERVERS = ("trio_tcp", "trio_tcp_caller", "trio_raw", "asyncio_streams", "asyncio_protocol")
TLS_SERVERS = ("trio_tcp_tls", "trio_raw_tls")
ALL_SERVERS = PLAIN_SERVERS + TLS_SERVERS
PLAIN_BASELINE = "trio_raw"
TLS_BASELINE = "trio_raw_tls"

# hold: how long the 1000 connections stay open and idle once all are up. The
# memory figure does not depend on it; a second is enough for /proc to settle.
HOLD_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One load pattern and the figure it yields.

    Attributes:
        name: Short identifier used on the command line and in the JSON.
        title: What the scenario measures, for the table and the chart.
        mode: The load generator's mode.
        conns: Connections (or, for ``connect``, cycles in flight).
        size: Message or write size in bytes.
        tls: Whether the load generator speaks TLS (and TLS servers are used).
        metric: The result field compared (``kib_per_conn`` is the runner's own).
        unit: The metric's unit.
        higher_is_better: False for memory.
    """

    name: str
    title: str
    mode: str
    conns: int
    size: int
    tls: bool
    metric: str
    unit: str
    higher_is_better: bool = True

    @property
    def servers(self) -> tuple[str, ...]:
        """The servers this scenario runs against."""
        return TLS_SERVERS if self.tls else PLAIN_SERVERS

    @property
    def baseline(self) -> str:
        """The server every ratio is taken against."""
        return TLS_BASELINE if self.tls else PLAIN_BASELINE

    def load_args(self, port: int, duration: float, warmup: float, cafile: str | None) -> list[str]:
        """Mode and options for the load generator (C loadgen and pyload alike)."""
        seconds = HOLD_SECONDS if self.mode == "hold" else duration
        args = [self.mode, "-p", str(port), "-c", str(self.conns), "-s", str(self.size)]
        args += ["-d", f"{seconds:g}", "-w", f"{warmup:g}"]
        if self.tls:
            assert cafile is not None
            args += ["--tls", cafile]
        return args

    def time_limit(self, duration: float, warmup: float) -> float:
        """Seconds after which the load generator is killed: its own limits plus slack."""
        seconds = HOLD_SECONDS if self.mode == "hold" else duration
        return SETUP_TIMEOUT + warmup + seconds + 15.0


# Loadgen's default limit for opening connections (its -t option).
SETUP_TIMEOUT = 20.0

SCENARIOS = (
    Scenario("pingpong_1", "ping-pong 64 B, 1 conn", "pingpong", 1, 64, False, "per_s", "rt/s"),
    Scenario("pingpong_50", "ping-pong 64 B, 50 conns", "pingpong", 50, 64, False, "per_s", "rt/s"),
    Scenario(
        "stream", "stream 64 KiB writes, 1 conn", "stream", 1, 65536, False, "mb_per_s", "MB/s"
    ),
    # 16 cycles in flight keep the server busy; with 1 it would idle for every round trip.
    Scenario("connect", "connect-send-close churn", "connect", 16, 64, False, "per_s", "conn/s"),
    Scenario(
        "hold",
        "1000 idle conns: memory per conn",
        "hold",
        1000,
        1,
        False,
        "kib_per_conn",
        "KiB/conn",
        higher_is_better=False,
    ),
    # 8 handshakes in flight: the server's handshake CPU, not the round trips, is the limit.
    Scenario("tls_handshake", "TLS handshakes", "connect", 8, 64, True, "per_s", "hs/s"),
    Scenario(
        "tls_stream", "TLS stream 64 KiB writes", "stream", 1, 65536, True, "mb_per_s", "MB/s"
    ),
)

BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}
