"""The supervisor of ``trio-tcp serve --workers N``: one listening socket, N worker processes.

Theory of operation
-------------------
The supervisor binds the listening socket (or inherits it: ``--fd``, systemd)
and never accepts on it; it starts N workers (:mod:`._worker`) that inherit
it, as gunicorn does. One socket means one accept queue: a connection waits
there until some worker accepts it, so a worker that stops or dies never
takes queued connections with it -- with ``SO_REUSEPORT`` each worker would
have a queue of its own, reset when that worker closes it. As long as the
supervisor lives the socket stays open, so connections are never refused,
even while every worker restarts.

Everything is Trio, with no threads: each worker runs under
:func:`trio.run_process` in the supervisor's nursery, and signals arrive
through :func:`trio.open_signal_receiver`. Workers run in a session of their
own, so a terminal's Ctrl-C reaches only the supervisor, which then stops
them in order. Each worker holds one end of a socket pair: it reports
``ready`` over it, and sees it end when the supervisor exits, however it
exits (even SIGKILL), which stops the worker.

* **Start**: all N at once; ``listening on HOST:PORT`` is printed when every
  one is ready. If one fails (an APP that does not load), the others are
  stopped and the command exits with that worker's status and message.
* **A worker dies**: logged with its exit status and restarted after a delay
  that doubles with each death in a row (from 0.1 s up to 10 s), so a
  crashing app cannot spin the CPU; a worker that served for 10 s resets it.
* **SIGHUP**: a rolling restart, one slot at a time: a fresh worker (which
  imports the app afresh) is started and must be ready before the old one is
  told to stop (gracefully, as for SIGTERM). A new worker that fails stops
  the rolling restart, and the old workers keep serving. The ``changing``
  lock keeps restarts of a dead worker and rolling restarts from replacing
  the same slot twice.
* **SIGTERM / SIGINT**: every worker is told to stop (over its control
  socket, not by a signal: see :mod:`._worker`) and does so gracefully within
  ``--grace``, plus ``on_close``'s own deadline; a second signal tells them
  to stop at once. A worker still running after the whole bound is killed.
  The supervisor exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence

import trio

from . import _sockets
from ._log import log
from ._options import CommandError, endpoint
from ._serving import ON_CLOSE_TIMEOUT, host_of
from ._worker import NOW, READY, STOP

__all__ = ["run"]

#: How long a new worker may take to import the app and start serving.
START_TIMEOUT = 30.0
#: The first delay before restarting a worker that died; it doubles with each
#: death in a row, up to RESTART_DELAY_MAX.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 10.0
#: A worker that served this long before dying starts the delays over.
RESTART_RESET_AFTER = 10.0
#: Beyond ``--grace`` plus ``on_close``'s deadline: process exit and the
#: close of the last sockets. A worker still running after that is killed.
STOP_MARGIN = 1.0
#: The longest line a worker reports (``error STATUS MESSAGE``).
MAX_REPORT = 4096


class _StartFailed(Exception):
    """A worker exited, reported an error, or timed out before it was ready."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Worker:
    """One worker process and what the supervisor knows about it."""

    def __init__(self, slot: int, control: socket.socket) -> None:
        self.slot = slot
        self._control = control  # the supervisor's end, for the few bytes it sends
        self.control = trio.SocketStream(trio.socket.from_stdlib_socket(control))
        self.process: trio.Process | None = None
        self.ready_at: float | None = None
        self.retired = False  # asked to stop: its exit is expected
        self.exited = trio.Event()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the process has already exited."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop (gracefully, or at once); it is retired from then on.

        A ready worker is told over its control socket; one still starting
        has nothing to finish, and gets SIGTERM.
        """
        self.retired = True
        if self.ready_at is None:
            self.signal(signal.SIGTERM)
            return
        try:
            # A few bytes into an idle socket buffer: never blocks, so no await.
            self._control.send(NOW if now else STOP)
        except OSError:
            self.signal(signal.SIGTERM)  # it is exiting anyway


def exit_description(status: int | None) -> str:
    """``status 1`` or ``killed by SIGKILL``, from a :attr:`trio.Process.returncode`."""
    if status is None:
        return "still running"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"


class Supervisor:
    """Starts, watches, restarts and stops the workers over ``sockets``."""

    def __init__(self, args: argparse.Namespace, sockets: Sequence[socket.socket]) -> None:
        self.args = args
        self.sockets = list(sockets)
        self.count: int = args.workers
        self.grace: float = args.grace
        self.current: dict[int, _Worker] = {}  # the serving worker of each slot
        self.live: set[_Worker] = set()  # every worker process not yet exited
        self.deaths = dict.fromkeys(range(self.count), 0)  # in a row, per slot
        self._stop_requested = trio.Event()
        self.changing = trio.Lock()
        self._nursery: trio.Nursery | None = None

    def stopping(self) -> bool:
        """Whether a stop signal came: nothing new is started any more."""
        return self._stop_requested.is_set()

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    # -- starting a worker ----------------------------------------------------------------

    def _command(self, control_fd: int) -> list[str]:
        argv: list[str] = self.args.argv
        fds = ",".join(str(sock.fileno()) for sock in self.sockets)
        # Right after the command name, so that a "--" among the user's
        # arguments cannot turn the hidden options into positionals.
        hidden = ["--worker-control", str(control_fd), "--worker-sockets", fds]
        return [sys.executable, "-m", "trio_tcp", argv[0], *hidden, *argv[1:]]

    async def _spawn(self, slot: int) -> _Worker:
        """Start a worker for ``slot`` and wait until it is ready.

        Raises:
            _StartFailed: it reported an error, exited, or was not ready in time.
        """
        # Out of descriptors or processes is a failed start, retried like any
        # other, never the end of the workers still serving.
        try:
            mine, theirs = socket.socketpair()
        except OSError as exc:
            raise _StartFailed(f"cannot start a worker: {exc.strerror or exc}") from exc
        worker = _Worker(slot, mine)
        try:
            worker.process = await self.nursery.start(
                self._run_worker, worker, self._command(theirs.fileno()), theirs.fileno()
            )
        except OSError as exc:
            mine.close()
            raise _StartFailed(f"cannot start a worker: {exc.strerror or exc}") from exc
        finally:
            theirs.close()  # the worker's copy is the only one: its exit ends the stream
        self.live.add(worker)
        if self.stopping():
            worker.stop()
        try:
            await self._wait_ready(worker)
        except BaseException:
            worker.stop()
            raise
        worker.ready_at = trio.current_time()
        if self.stopping():
            worker.stop()  # it was told to before it could hear it
        return worker

    async def _run_worker(
        self,
        worker: _Worker,
        command: list[str],
        control_fd: int,
        *,
        task_status: trio.TaskStatus[trio.Process],
    ) -> None:
        """Run the worker process to its end, then restart it if its death was unexpected."""
        try:
            result = await trio.run_process(
                command,
                check=False,
                stdin=subprocess.DEVNULL,
                pass_fds=(control_fd, *(sock.fileno() for sock in self.sockets)),
                start_new_session=True,  # a terminal's Ctrl-C is for the supervisor alone
                deliver_cancel=self._deliver_cancel,
                task_status=task_status,
            )
        finally:
            self.live.discard(worker)
            worker.exited.set()
            with trio.CancelScope(shield=True):
                await worker.control.aclose()
        status = result.returncode
        if worker.retired or self.stopping():
            log.info("worker %d stopped (%s)", worker.pid, exit_description(status))
        elif self.current.get(worker.slot) is worker:
            await self._restart(worker, status)

    async def _deliver_cancel(self, process: trio.Process) -> None:
        """If the supervisor itself is cancelled: a graceful stop, then SIGKILL past its bound."""
        process.terminate()
        await trio.sleep(self._stop_bound())
        process.kill()

    async def _wait_ready(self, worker: _Worker) -> None:
        report = b""
        with trio.move_on_after(START_TIMEOUT):
            # Closed: the worker exited and _run_worker closed our end meanwhile.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while not report.endswith(b"\n") and len(report) < MAX_REPORT:
                    chunk = await worker.control.receive_some(MAX_REPORT)
                    if not chunk:
                        break
                    report += chunk
            if report == READY:
                return
            if report.startswith(b"error "):
                status, _, message = report[6:].decode(errors="replace").partition(" ")
                raise _StartFailed(message.strip(), status=int(status) if status.isdigit() else 1)
            await worker.exited.wait()
            assert worker.process is not None
            status = exit_description(worker.process.returncode)
            raise _StartFailed(f"worker {worker.pid} exited ({status}) before it was ready")
        raise _StartFailed(f"worker {worker.pid} was not ready within {START_TIMEOUT:g} s")

    # -- the life of the workers ----------------------------------------------------------

    async def _restart(self, dead: _Worker, status: int | None) -> None:
        """Replace a worker that died unexpectedly, after a delay that grows with each death."""
        slot = dead.slot
        if dead.ready_at is not None and trio.current_time() - dead.ready_at >= RESTART_RESET_AFTER:
            self.deaths[slot] = 0
        delay = self._next_delay(slot)
        log.warning(
            "worker %d exited unexpectedly (%s); restarting it in %.1f s",
            dead.pid, exit_description(status), delay,
        )  # fmt: skip
        while True:
            await trio.sleep(delay)
            async with self.changing:
                if self.stopping() or self.current.get(slot) is not dead:
                    return  # stopping, or a rolling restart replaced it meanwhile
                try:
                    new = await self._spawn(slot)
                except _StartFailed as exc:
                    if self.stopping():
                        return
                    delay = self._next_delay(slot)
                    log.error(
                        "a new worker failed to start: %s; trying again in %.1f s", exc, delay
                    )
                    continue
                self.current[slot] = new
                log.info("worker %d started in place of worker %d", new.pid, dead.pid)
                return

    def _next_delay(self, slot: int) -> float:
        """The delay before the next start in ``slot``: doubling with each death in a row."""
        delay = min(RESTART_DELAY * 2.0 ** min(self.deaths[slot], 32), RESTART_DELAY_MAX)
        self.deaths[slot] += 1
        return delay

    async def _start_all(self) -> bool:
        """Start every worker at once; whether they all started before a stop signal.

        Raises:
            CommandError: a worker failed to start (the others are stopped
                as the supervisor's nursery unwinds).
        """
        failures: list[_StartFailed] = []
        async with self.changing, trio.open_nursery() as starting:

            async def start(slot: int) -> None:
                try:
                    self.current[slot] = await self._spawn(slot)
                except _StartFailed as exc:
                    failures.append(exc)
                    starting.cancel_scope.cancel()

            for slot in range(self.count):
                starting.start_soon(start, slot)
        if self.stopping():
            return False
        if failures:
            raise CommandError(str(failures[0]), status=failures[0].status)
        return True

    async def _reload(self) -> None:
        """Replace each worker by a fresh one, the new one ready before the old one stops."""
        async with self.changing:
            if self.stopping():
                return
            log.info("SIGHUP: replacing %d workers one by one", self.count)
            for slot in sorted(self.current):
                if self.stopping():
                    return
                old = self.current[slot]
                try:
                    new = await self._spawn(slot)
                except _StartFailed as exc:
                    if not self.stopping():
                        log.error(
                            "reload abandoned, a new worker failed to start: %s; "
                            "the old workers keep serving",
                            exc,
                        )
                    return
                self.current[slot] = new
                self.deaths[slot] = 0
                old.stop()
                log.info("worker %d replaces worker %d", new.pid, old.pid)
            pids = ", ".join(str(self.current[slot].pid) for slot in sorted(self.current))
            log.info("reload done: workers %s", pids)

    async def _reloader(self, requests: trio.MemoryReceiveChannel[None]) -> None:
        async for _ in requests:
            await self._reload()

    def _stop_bound(self) -> float:
        """How long a worker's graceful stop can take, at most."""
        grace = self.grace if math.isfinite(self.grace) else 0.0
        return grace + ON_CLOSE_TIMEOUT + STOP_MARGIN

    async def _stop(self, hurry: trio.Event) -> None:
        """Stop every worker gracefully (at once after ``hurry``), then end the supervisor."""
        self._stop_requested.set()
        for worker in list(self.live):
            worker.stop()

        async def all_exited() -> None:
            while self.live:
                await next(iter(self.live)).exited.wait()

        async def hurry_on() -> None:
            await hurry.wait()
            for worker in list(self.live):
                worker.stop(now=True)

        async with trio.open_nursery() as waiting:
            waiting.start_soon(hurry_on)
            with trio.move_on_after(self._stop_bound()):
                await all_exited()
            for worker in list(self.live):
                log.warning(
                    "worker %d still running after the stop's bound; killing it", worker.pid
                )
                worker.signal(signal.SIGKILL)
            await all_exited()
            waiting.cancel_scope.cancel()
        self.nursery.cancel_scope.cancel()

    # -- the command ----------------------------------------------------------------------

    async def run(self, where: str) -> None:
        """Start the workers, announce ``where``, and serve until a stop signal."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                # Signals are handled from the start: Ctrl-C during a slow start stops it.
                nursery.start_soon(self._handle_signals, signals)
                if await self._start_all():
                    print(f"listening on {where}", flush=True)
                    pids = ", ".join(str(self.current[slot].pid) for slot in sorted(self.current))
                    log.info(
                        "%d workers ready (%s); SIGHUP replaces them, Ctrl-C or SIGTERM stops them",
                        self.count, pids,
                    )  # fmt: skip
        log.info("stopped")

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        # One pending rolling restart at most: SIGHUPs during one coalesce.
        requests_in, requests = trio.open_memory_channel[None](1)
        self.nursery.start_soon(self._reloader, requests)
        hurry = trio.Event()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if not self.stopping():
                    try:
                        requests_in.send_nowait(None)
                    except trio.WouldBlock:
                        log.info("SIGHUP: a rolling restart is already pending")
            elif not self.stopping():
                log.info(
                    "%s: stopping %d workers; connections get %g s to finish (again to stop now)",
                    name, len(self.live), self.grace,
                )  # fmt: skip
                self.nursery.start_soon(self._stop, hurry)
            else:
                log.info("%s: stopping now", name)
                hurry.set()


async def run(args: argparse.Namespace, sockets: list[socket.socket] | None) -> int:
    """Bind (unless ``sockets`` were inherited), supervise the workers until stopped; return 0."""
    if sockets is None:
        host = host_of(args)
        sockets = await _sockets.bind(host, args.port, backlog=None, reuse_port=args.reuse_port)
        where = endpoint(host, sockets[0].getsockname()[1])
    else:
        where = _sockets.address(sockets[0])
    try:
        await Supervisor(args, sockets).run(where)
    finally:
        _sockets.close_all(sockets)
    return 0
