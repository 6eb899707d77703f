"""Graceful stops behind HAProxy, run again and again: how many requests does a stop lose?

Not part of CI (a full run takes a few minutes); run it by hand, from the
project root, with HAProxy installed::

    python benchmarks/haproxy_restarts.py                   # 10 runs of every scenario
    python benchmarks/haproxy_restarts.py --runs 20 --round-trips 5000 --scenario restart
    sudo python benchmarks/haproxy_restarts.py --netns      # in a fresh network namespace,
                                                            # with net.ipv4.tcp_migrate_req=1

Every run starts HAProxy (``mode tcp``, ``balance roundrobin``, ``retries 3``,
``option redispatch``, PROXY protocol v2, ``check check-send-proxy inter
200ms``) in front of two trio_tcp backends, each its own process
(``tests/_backend.py``: line echo, ``proxy_protocol=True``, a graceful stop on
SIGTERM), and clients doing request / response round trips through it, while:

``stop``
    the first backend gets SIGTERM a quarter of the way in; one request per
    connection;
``stop-long-lived``
    the same with clients on long-lived connections, which reconnect and
    retry when a reply did not come before EOF;
``restart``
    a rolling restart: each backend in turn stopped, then started again on
    its port;
``reuse-port``
    a rolling restart in which the new process joins the old one's port
    (``SO_REUSEPORT``) before the old one stops.

Every failed round trip is explained (``tests/_rolling.py``): lost by the
server (it received the request and did not answer, closed with the request
unread, or dropped a connection it had completed), outside its reach (the
stop closed a connection after its first-byte grace, before the request
arrived), or unexplained. One line per run, then the totals per scenario:

* requests: round trips attempted;
* server: losses the server caused (expected: 0);
* outside: losses outside the server's reach;
* unexplained: failures nothing explains (expected: 0);
* resets: connections on which a client saw a reset;
* retried: long-lived clients' requests sent again after EOF without a reply;
* again: sessions HAProxy had to connect again (refused or reset connects).

``--netns`` runs the whole thing inside ``unshare -n`` (root only): a new
network namespace with nothing but loopback, where
``net.ipv4.tcp_migrate_req=1`` is set without touching the host's. With it,
the connections waiting in a closing socket's queues move to another socket
of its ``SO_REUSEPORT`` group instead of being reset: the ``reuse-port``
scenario then costs HAProxy no reconnection at all.

The exit status is 1 if the server lost a request or a failure was unexplained.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the harness the interop tests use

from _haproxy import find_haproxy  # noqa: E402
from _rolling import Report, rolling_stop  # noqa: E402

#: name: (long-lived clients, rolling restart, reuse_port)
SCENARIOS = {
    "stop": (False, False, False),
    "stop-long-lived": (True, False, False),
    "restart": (False, True, False),
    "reuse-port": (False, True, True),
}
COLUMNS = ("requests", "server", "outside", "unexplained", "resets", "retried", "again")


def figures(report: Report) -> tuple[int, ...]:
    return (
        report.round_trips,
        len(report.server_losses),
        len(report.outside_reach),
        len(report.unexplained),
        report.resets,
        report.retried,
        report.haproxy_retried,
    )


async def run(args: argparse.Namespace, haproxy: str) -> int:
    totals: dict[str, collections.Counter[str]] = {}
    bad = False
    for scenario in args.scenario:
        long_lived, restart, reuse_port = SCENARIOS[scenario]
        total = totals[scenario] = collections.Counter()
        for number in range(1, args.runs + 1):
            with tempfile.TemporaryDirectory(prefix="haproxy-restarts-") as directory:
                started = time.monotonic()
                report = await rolling_stop(
                    haproxy,
                    Path(directory),
                    round_trips=args.round_trips,
                    concurrency=args.concurrency,
                    long_lived=long_lived,
                    restart=restart,
                    reuse_port=reuse_port,
                )
            total.update(dict(zip(COLUMNS, figures(report), strict=True)))
            print(f"{scenario} #{number} ({time.monotonic() - started:.1f} s): {report.summary()}")
            for line in report.server_losses + report.unexplained:
                print("   ", line)
                bad = True
            for line in report.outside_reach:
                print("    outside the server's reach:", line)
    print()
    print(
        f"{args.runs} runs per scenario, {args.concurrency} clients"
        + (", net.ipv4.tcp_migrate_req=1" if args.in_netns else "")
    )
    print(f"| {'scenario':<16} | " + " | ".join(f"{c:>11}" for c in COLUMNS) + " |")
    print(f"|{'-' * 18}|" + "|".join("-" * 13 for _ in COLUMNS) + "|")
    for scenario, total in totals.items():
        cells = " | ".join(f"{total[c]:>11}" for c in COLUMNS)
        print(f"| {scenario:<16} | {cells} |")
    return 1 if bad else 0


def enter_netns(argv: list[str]) -> int:
    """Run this script again in a new network namespace; return its exit status."""
    if os.geteuid() != 0:
        print("--netns needs root (unshare -n)", file=sys.stderr)
        return 2
    rest = [a for a in argv if a != "--netns"]
    command = ["unshare", "-n", sys.executable, __file__, "--in-netns", *rest]
    return subprocess.run(command, check=False).returncode


def prepare_netns() -> None:
    """Loopback up, and queued connections migrated within reuse_port groups."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text("1\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    parser.add_argument("--round-trips", type=int, default=2000, help="per run (default 2000)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients (default 32)")
    parser.add_argument(
        "--scenario", choices=SCENARIOS, action="append", help="repeatable; default: all"
    )
    parser.add_argument(
        "--netns", action="store_true", help="run in a new network namespace (root)"
    )
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.netns:
        return enter_netns(sys.argv[1:])
    if args.in_netns:
        prepare_netns()
    args.scenario = args.scenario or list(SCENARIOS)
    haproxy = find_haproxy()
    if haproxy is None:
        print("HAProxy is not installed (apt-get install haproxy)", file=sys.stderr)
        return 2
    return trio.run(run, args, haproxy)


if __name__ == "__main__":
    sys.exit(main())
