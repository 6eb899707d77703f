"""Stopping a backend behind HAProxy under load, and accounting for every failed request.

:func:`rolling_stop` runs HAProxy (``mode tcp``, round-robin, ``retries 3``,
``option redispatch``, PROXY protocol v2, health checks) in front of two
recording backends (``_backend.py``, each its own process), drives request /
response round trips through it, stops a backend gracefully with SIGTERM in
the middle (optionally starting a new one in its place, or a whole rolling
restart), and returns a :class:`Report`.

Every round trip that fails is explained from three accounts that share the
client's port: the client's (what it saw), HAProxy's session log (which
server, whether it connected) and the backends' records (what the server
received, answered, and had waiting unread when the stop reached it). A
failure is **the server's** if it received the request and did not answer
it, closed the connection with the request waiting unread, or dropped a
connection HAProxy had completed without serving it. It is **outside the
server's reach** if the stop closed the connection, after its first-byte
grace, before the request had arrived (HAProxy connects to a backend before
the client's request comes, and ``mode tcp`` cannot retry once connected).
Anything else is **unexplained**, and as much a failure of the test as a
loss of the server's.

Two kinds of client: one request per fresh connection (a failed one is lost),
and long-lived connections doing request / response that reconnect and
retry when a reply did not come before EOF; for those, no request may be
lost, and none answered twice (EOF before the reply promises it was not
processed).
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import trio
from _backend import Backend, Record, read_records, start_backend
from _haproxy import LogLine, Server, free_port, make_config, running_haproxy

from trio_tcp._config import FIRST_BYTE_GRACE

__all__ = ["Report", "rolling_stop"]

#: A round trip that takes longer than this has failed ("timeout").
ROUND_TRIP_TIMEOUT = 5.0
#: A connection HAProxy completed this close (in seconds) to the moment a backend
#: closed its listening socket may have completed after the backend's last look at
#: its accept queue: the kernel resets it, and nothing in user space can take it.
#: HAProxy's log has millisecond resolution; the backend's time is the log record's.
KERNEL_WINDOW = 0.005


@dataclass
class Report:
    """What a run saw, with every failed round trip explained."""

    round_trips: int = 0
    #: Round trips that failed, by what the client saw ("eof", "reset", ...).
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    #: Losses the server caused, one line each.
    server_losses: list[str] = field(default_factory=list)
    #: Losses outside the server's reach, one line each.
    outside_reach: list[str] = field(default_factory=list)
    #: Failures none of the accounts explains.
    unexplained: list[str] = field(default_factory=list)
    #: Long-lived clients: requests retried after EOF before their reply.
    retried: int = 0
    #: Connections whose client saw a reset (whatever the cause).
    resets: int = 0
    #: Sessions HAProxy had to connect again (a refused or reset connect),
    #: redispatched or not: what a stop costs without costing a request.
    haproxy_retried: int = 0
    #: Connections the clients opened through HAProxy.
    connections: int = 0
    #: Connections the stopped backends closed with the stop (they had on_stop).
    stopped_connections: int = 0
    #: trio_tcp log lines above DEBUG in the backends (lifecycle lines aside).
    backend_log: list[str] = field(default_factory=list)
    #: Errors the backends counted (``stats.errors``).
    backend_errors: int = 0

    def summary(self) -> str:
        failures = ", ".join(f"{n} {what}" for what, n in sorted(self.failures.items())) or "none"
        return (
            f"{self.round_trips} round trips; failed: {failures}; "
            f"lost by the server: {len(self.server_losses)}; "
            f"outside its reach: {len(self.outside_reach)}; "
            f"unexplained: {len(self.unexplained)}; resets seen: {self.resets}; "
            f"retried after EOF: {self.retried}; closed by a stop: {self.stopped_connections};"
            f" HAProxy connected again: {self.haproxy_retried}"
        )


@dataclass
class _Outcome:
    client_port: int
    request: str
    result: str  # "ok", "eof", "reset", "refused", "timeout", "wrong"
    #: Requests answered earlier on the same connection.
    earlier: tuple[str, ...] = ()


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """One line, or what came before EOF (no newline)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        line += chunk
    return bytes(line)


async def _fresh(port: int, request: str) -> _Outcome:
    """One request on a fresh connection."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return _Outcome(0, request, "refused")
    async with stream:
        client_port = stream.socket.getsockname()[1]
        with trio.move_on_after(ROUND_TRIP_TIMEOUT):
            try:
                await stream.send_all(request.encode() + b"\n")
                reply = await _read_line(stream)
            except trio.BrokenResourceError:
                return _Outcome(client_port, request, "reset")
            if reply == request.encode() + b"\n":
                return _Outcome(client_port, request, "ok")
            return _Outcome(client_port, request, "eof" if not reply else "wrong")
        return _Outcome(client_port, request, "timeout")


class _LongLived:
    """One client on a long-lived connection: reconnects, and retries on EOF before a reply."""

    def __init__(self, port: int, report: Report, outcomes: list[_Outcome]) -> None:
        self.port = port
        self.report = report
        self.outcomes = outcomes
        self.stream: trio.SocketStream | None = None
        self.connections = 0
        self.answered_here: list[str] = []

    async def round_trip(self, request: str) -> None:
        while True:
            if self.stream is None:
                try:
                    self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    self.outcomes.append(_Outcome(0, request, "refused"))
                    return
                self.connections += 1
                self.answered_here = []
            stream = self.stream
            client_port = stream.socket.getsockname()[1]
            result = "timeout"
            with trio.move_on_after(ROUND_TRIP_TIMEOUT):
                try:
                    await stream.send_all(request.encode() + b"\n")
                except trio.BrokenResourceError:
                    result = "unsent"  # closed before this request: it never left
                else:
                    try:
                        reply = await _read_line(stream)
                    except trio.BrokenResourceError:
                        result = "reset"
                    else:
                        good = reply == request.encode() + b"\n"
                        result = "ok" if good else "eof" if not reply else "wrong"
            earlier = tuple(self.answered_here)
            if result == "ok":
                self.outcomes.append(_Outcome(client_port, request, result, earlier))
                self.answered_here.append(request)
                return
            await self.close()
            if result in ("eof", "unsent"):
                # No reply before EOF: the request was not processed. Again, elsewhere.
                self.report.retried += 1
                continue
            self.outcomes.append(_Outcome(client_port, request, result, earlier))
            return

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


async def _run_fresh(
    port: int, outcomes: list[_Outcome], requests: _Counter, report: Report
) -> None:
    while (request := requests.take()) is not None:
        outcome = await _fresh(port, request)
        if outcome.client_port:
            report.connections += 1
        outcomes.append(outcome)


async def _run_long_lived(client: _LongLived, requests: _Counter) -> None:
    try:
        while (request := requests.take()) is not None:
            await client.round_trip(request)
    finally:
        await client.close()


class _Counter:
    """Hands out request names until ``total``; counts the ones done."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.taken = 0

    def take(self) -> str | None:
        if self.taken >= self.total:
            return None
        self.taken += 1
        return f"r{self.taken}"


class _Backends:
    """The running backends, by slot; the stopped ones, for their records."""

    def __init__(self, directory: Path, reuse_port: bool) -> None:
        self.directory = directory
        self.reuse_port = reuse_port
        self.running: list[Backend] = []
        self.stopped: list[Backend] = []
        self._serial = itertools.count(1)

    async def start(self, port: int = 0) -> Backend:
        path = self.directory / f"backend-{next(self._serial)}.jsonl"
        return await start_backend(path, port=port, reuse_port=self.reuse_port)

    async def stop(self, slot: int) -> None:
        """SIGTERM the backend in ``slot`` and wait until it has exited."""
        backend = self.running.pop(slot)
        await backend.stop()
        self.stopped.append(backend)

    async def replace(self, slot: int) -> None:
        """A new process in the slot's place, on its port (with ``reuse_port``: first)."""
        old = self.running[slot]
        if self.reuse_port:
            self.running[slot] = await self.start(old.port)
            await old.stop()
        else:
            await old.stop()
            self.running[slot] = await self.start(old.port)
        self.stopped.append(old)

    async def stop_all(self) -> None:
        while self.running:
            backend = self.running.pop()
            await backend.stop()
            self.stopped.append(backend)

    async def kill_all(self) -> None:
        """Kill what still runs, and reap it: no process outlives the test."""
        for backend in self.running:
            await backend.kill()


async def rolling_stop(
    haproxy_executable: str,
    directory: Path,
    *,
    round_trips: int = 2000,
    concurrency: int = 16,
    long_lived: bool = False,
    restart: bool = False,
    reuse_port: bool = False,
) -> Report:
    """Drive ``round_trips`` through HAProxy while a backend stops; see the module docstring.

    Args:
        long_lived: clients keep their connection (else one request per connection).
        restart: a rolling restart (each backend in turn replaced by a new
            process on its port) instead of stopping the first backend.
        reuse_port: the backends bind with ``SO_REUSEPORT``, and a
            restart starts the new process on the old one's port before the
            old one stops.
    """
    report = Report()
    outcomes: list[_Outcome] = []
    backends = _Backends(directory, reuse_port)
    try:
        for _ in range(2):
            backends.running.append(await backends.start())
        frontend = free_port()
        servers = [Server(f"b{i}", b.port) for i, b in enumerate(backends.running, 1)]
        config = make_config(
            directory=directory, frontends={"fe": ([f"127.0.0.1:{frontend}"], servers)}
        )
        async with running_haproxy(haproxy_executable, config, directory) as haproxy:
            with trio.fail_after(10):
                await haproxy.wait_up(len(servers))
            requests = _Counter(round_trips)
            clients = [_LongLived(frontend, report, outcomes) for _ in range(concurrency)]
            async with trio.open_nursery() as nursery:
                for client in clients:
                    if long_lived:
                        nursery.start_soon(_run_long_lived, client, requests)
                    else:
                        nursery.start_soon(_run_fresh, frontend, outcomes, requests, report)
                # A quarter of the way in, the first stop (or restart); a
                # rolling restart then replaces the second backend half-way.
                for slot, at in enumerate([0.25, 0.5] if restart else [0.25]):
                    while requests.taken < at * round_trips:  # noqa: ASYNC110
                        await trio.sleep(0.002)
                    if restart:
                        await backends.replace(slot)
                        with trio.fail_after(10):
                            await haproxy.wait_up(len(servers))
                    else:
                        await backends.stop(slot)
            report.connections += sum(client.connections for client in clients)
            await backends.stop_all()
            with trio.move_on_after(5):
                await haproxy.wait_logged(report.connections)
            _account(report, outcomes, backends.stopped, haproxy.sessions, long_lived)
    finally:
        await backends.kill_all()
    return report


def _account(
    report: Report,
    outcomes: list[_Outcome],
    stopped: list[Backend],
    sessions: list[LogLine],
    long_lived: bool,
) -> None:
    """Fill ``report`` from the three accounts; see the module docstring."""
    records: list[Record] = []
    closings: list[float] = []
    for backend in stopped:
        connections, stats, log, closed_at = read_records(backend.records)
        if closed_at:
            closings.append(closed_at)
        records += (r for r in connections if r.command == "PROXY")
        report.backend_errors += stats["errors"]
        report.backend_log += (line for line in log if "listening on port" not in line)
    report.round_trips = len(outcomes)
    report.haproxy_retried = sum(session.retries not in ("0", "+0") for session in sessions)
    report.stopped_connections = sum(r.stopped for r in records)
    by_port: dict[int, list[Record]] = collections.defaultdict(list)
    for record in records:
        by_port[record.client_port].append(record)
    logged = {session.client_port: session for session in sessions}
    answered = collections.Counter(name for r in records for name in r.answered)
    for outcome in outcomes:
        if outcome.result == "ok":
            if outcome.request not in answered:
                report.unexplained.append(f"{outcome.request}: answered, but no server has it")
            continue
        report.failures[outcome.result] += 1
        report.resets += outcome.result == "reset"
        # The records of this connection: a port may have served another one too.
        mine = {outcome.request, *outcome.earlier}
        candidates = [r for r in by_port.get(outcome.client_port, []) if set(r.answered) <= mine]
        kind, why = _explain(outcome, candidates, logged, closings)
        line = f"{outcome.request} (client port {outcome.client_port}, {outcome.result}): {why}"
        {"server": report.server_losses, "outside": report.outside_reach}.get(
            kind, report.unexplained
        ).append(line)
    if long_lived:
        # EOF before a reply promised "not processed", so the retry was safe.
        report.server_losses += (
            f"{name}: answered {count} times (a reply was lost before EOF)"
            for name, count in answered.items()
            if count > 1
        )


def _explain(
    outcome: _Outcome, records: list[Record], logged: dict[int, LogLine], closings: list[float]
) -> tuple[str, str]:
    """``("server" | "outside" | "unexplained", why)`` for one failed round trip."""
    if outcome.client_port == 0:
        return "unexplained", "could not connect to HAProxy"
    if any(outcome.request in r.answered for r in records):
        return "server", "the server answered, but the reply did not arrive"
    if any(r.bytes_out < r.bytes_in for r in records):
        return "server", "the server received a request and did not answer it"
    if any(r.unread_at_stop for r in records):
        return "server", "the server closed the connection with the request waiting unread"
    if records and all(r.stopped for r in records):
        waited = min(r.waited for r in records)
        if waited < FIRST_BYTE_GRACE * 0.95:
            return (
                "server",
                f"the stop closed the connection after {waited:.3f} s, within its grace",
            )
        return "outside", (
            f"the stop closed the connection after its first-byte grace ({waited:.3f} s),"
            " before the request arrived"
        )
    session = logged.get(outcome.client_port)
    if not records and session is not None and session.connect_ms >= 0:
        if any(abs(session.connected_at - closed) <= KERNEL_WINDOW for closed in closings):
            return "outside", (
                f"{session.server} completed HAProxy's connection as it closed its listening"
                " socket: the kernel resets a connection it completes after the last"
                f" accept (HAProxy: {session.state})"
            )
        return "server", (
            f"{session.server} completed HAProxy's connection but never served it (reset"
            f" in its accept queue, or dropped before on_connect); HAProxy: {session.state}"
        )
    return "unexplained", f"records {records}; HAProxy {session}"
