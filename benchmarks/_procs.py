"""Child processes: a pinned server, a pinned load generator, their memory and CPU time.

*Resource handling*: :func:`server` is a context manager whose exit always
stops the server (SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds);
:func:`run_process` kills its load generator when it outlives its time limit.
No process outlives the call that started it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from _generators import BENCH_DIR

SERVER_SCRIPT = BENCH_DIR / "servers.py"
READY_TIMEOUT = 20.0  # seconds for a server to import, bind and announce its port
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
# Under valgrind a server runs tens of times slower: its start and its exit
# (when callgrind writes its profile) get these limits instead.
SLOW_READY_TIMEOUT = 180.0
SLOW_STOP_GRACE = 60.0
READY_LINE = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class BenchError(Exception):
    """A server or load generator failed; the measurement is recorded as an error."""


@dataclasses.dataclass(frozen=True)
class Pinning:
    """Which CPUs the server and the load generator may use (None: not pinned)."""

    server: frozenset[int] | None
    load: frozenset[int] | None
    description: str

    @classmethod
    def detect(cls) -> Pinning:
        """Server on the first allowed CPU, load (and this runner) on the second."""
        if not hasattr(os, "sched_setaffinity"):
            return cls(None, None, "not pinned (no sched_setaffinity on this platform)")
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return cls(None, None, f"not pinned (only CPU {cpus} available)")
        server, load = frozenset(cpus[:1]), frozenset(cpus[1:2])
        return cls(server, load, f"server on CPU {cpus[0]}, load generator on CPU {cpus[1]}")

    def pin_self(self) -> None:
        """Move the runner to the load CPU, so that children start away from the server's."""
        if self.load is not None:
            os.sched_setaffinity(0, self.load)


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Pin ``pid`` to ``cpus``, if pinning is in use and the process still exists."""
    if cpus is not None:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(pid, cpus)


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of ``pid`` in KiB, from /proc/PID/status."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def stop(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL; always reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = READY_TIMEOUT) -> int:
    """Read the server's ``listening on`` line; return its port."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise BenchError(f"server did not start within {timeout:.0f}s: {tail(log)}")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise BenchError(f"server exited with {proc.wait()}: {tail(log)}")
        line += chunk
    match = READY_LINE.search(line)
    if match is None:
        raise BenchError(f"unexpected first line from server: {line!r}")
    return int(match.group(1))


def tail(log: Path, lines: int = 3) -> str:
    """The last lines of a server's stderr log, for error messages."""
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


@contextlib.contextmanager
def server(
    kind: str,
    tls_args: list[str],
    pinning: Pinning,
    log: Path,
    *,
    wrapper: Sequence[str] = (),
    slow: bool = False,
) -> Iterator[tuple[int, int]]:
    """Run ``servers.py kind`` pinned to the server CPU; yield (pid, port); stop it on exit.

    ``wrapper`` goes before the command (``valgrind ...``: it must keep the
    process's id); ``slow`` gives it :data:`SLOW_READY_TIMEOUT` and
    :data:`SLOW_STOP_GRACE`.
    """
    command = [*wrapper, sys.executable, str(SERVER_SCRIPT), kind, "--port", "0", *tls_args]
    # Equal hashes from run to run, so that instruction counts repeat.
    env = {**os.environ, "PYTHONHASHSEED": "0"} if wrapper else None
    with log.open("wb") as errors:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
    try:
        pin(proc.pid, pinning.server)
        yield proc.pid, wait_ready(proc, log, SLOW_READY_TIMEOUT if slow else READY_TIMEOUT)
        if proc.poll() is not None:
            raise BenchError(f"server died during the run (status {proc.returncode}): {tail(log)}")
    finally:
        stop(proc, SLOW_STOP_GRACE if slow else STOP_GRACE)


@dataclasses.dataclass(frozen=True)
class Finished:
    """What a load generator left behind: its output, status and CPU use."""

    out: bytes
    err: bytes
    status: int
    cpu_s: float  # user + system CPU seconds
    elapsed_s: float


def run_process(
    argv: list[str],
    pinning: Pinning,
    time_limit: float,
    sample: Callable[[], None] | None = None,
) -> Finished:
    """Run a load generator pinned to the load CPU, to completion.

    ``sample`` is called about every 50 ms while it runs (to watch the server's
    memory). Raises :class:`BenchError` when it outlives ``time_limit``.
    """
    # Its CPU time is known once it is reaped: the children's total grows by it
    # (the only child reaped meanwhile; servers are reaped after their load).
    before = children_cpu_s()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pin(proc.pid, pinning.load)
        deadline = started + time_limit
        while sample is not None and proc.poll() is None and time.monotonic() < deadline:
            sample()
            time.sleep(0.05)
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise BenchError(f"load generator exceeded {time_limit:.0f}s and was killed") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    return Finished(out, err, proc.returncode, children_cpu_s() - before, elapsed)


def run_load(
    argv: list[str],
    pinning: Pinning,
    time_limit: float,
    sample: Callable[[], None] | None = None,
) -> dict[str, object]:
    """Run loadgen or pyload; return its JSON result (see :func:`run_process`).

    Raises :class:`BenchError` on a timeout, a crash or an error result.
    """
    done = run_process(argv, pinning, time_limit, sample)
    return parse_result(done.out, done.err, done.status)


def parse_result(out: bytes, err: bytes, status: int) -> dict[str, object]:
    """The load generator's last JSON line, or a :class:`BenchError` saying what went wrong."""
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        detail = err.decode(errors="replace").strip()[-300:] or "no output"
        raise BenchError(f"load generator failed (status {status}): {detail}")
    if "error" in result or status != 0:
        raise BenchError(f"load generator: {result.get('error', f'status {status}')}")
    return result


def children_cpu_s() -> float:
    """CPU seconds used by this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds used so far by the running process ``pid`` (all threads), or None.

    Read from the process's CPU-time clock, which counts in nanoseconds
    (``/proc/PID/stat`` counts 10 ms ticks). Python has no
    ``clock_getcpuclockid``; the clock's id is what Linux's C library makes of
    the pid: ``(~pid << 3) | 2`` (a process's scheduler clock).
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # utime and stime, fields 14 and 15 of the whole line (11 and 12 after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
