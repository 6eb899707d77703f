"""``trio-tcp serve APP --workers N``: the supervisor, its workers, and their signals.

Each test runs the real command on a port 0 socket with a small app whose
replies carry the process id that served them (``pidecho``), so a test can
tell which worker answered. Worker process ids come from the supervisor's
log; whether a process still runs comes from ``/proc``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
import trio
from _cli_process import LOCAL, Served, alive, ask_pid, one_line, run_cli, serving, write_app
from _loopback import read_until_eof

from trio_tcp import _cli
from trio_tcp._cli import _serving, _supervisor
from trio_tcp._cli._options import CommandError, exception_leaves
from trio_tcp._config import ON_CLOSE_TIMEOUT

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc (Linux)")

READY = re.compile(rb"(\d+) workers ready \(([\d, ]+)\)")
RELOADED = re.compile(rb"reload done: workers ([\d, ]+)")


def pids(text: bytes) -> set[int]:
    return {int(pid) for pid in text.split(b", ")}


async def worker_pids(server: Served) -> set[int]:
    await server.wait_for(READY)
    match = READY.search(server.err)
    assert match is not None
    return pids(match.group(2))


async def wait_gone(pid_set: set[int]) -> None:
    """Wait until none of ``pid_set`` runs (the caller's fail_after bounds it)."""
    while any(alive(pid) for pid in pid_set):  # noqa: ASYNC110 - nothing to wait on but /proc
        await trio.sleep(0.02)


async def ask_until(port: int, wanted: set[int]) -> Counter[int]:
    """Connect until every pid in ``wanted`` has answered; how often each pid did."""
    seen: Counter[int] = Counter()
    while not wanted <= set(seen):
        seen[await ask_pid(port)] += 1
    return seen


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    return tmp_path


def test_the_bound_in_the_help_is_the_library_s() -> None:
    assert _serving.ON_CLOSE_TIMEOUT == ON_CLOSE_TIMEOUT


@pytest.mark.trio
async def test_two_workers_share_one_port_and_both_serve(app_dir: Path) -> None:
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            workers = await worker_pids(server)
            assert len(workers) == 2
            assert server.process.pid not in workers
            seen = await ask_until(server.port, workers)
            assert set(seen) == workers
            for pid in workers:  # own process group, own session: Ctrl-C is the supervisor's
                assert os.getpgid(pid) == pid
                assert os.getsid(pid) != os.getsid(server.process.pid)
            assert await server.stop(signal.SIGTERM) == 0
            await wait_gone(workers)
    assert server.out.count(b"\n") == 1  # the announcement, once, for all workers


@pytest.mark.trio
async def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(app_dir: Path) -> None:
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            victim, survivor = sorted(await worker_pids(server))
            os.kill(victim, signal.SIGKILL)
            # Meanwhile every connection is answered: queued in the shared
            # socket, accepted by the survivor (or, soon, the replacement).
            answered: Counter[int] = Counter()
            while not (set(answered) - {victim, survivor}):
                answered[await ask_pid(server.port)] += 1
            replacement = (set(answered) - {victim, survivor}).pop()
            assert victim not in answered
            await ask_until(server.port, {survivor, replacement})
            await server.wait_for(
                f"worker {replacement} started in place of worker {victim}".encode()
            )
            assert await server.stop(signal.SIGTERM) == 0
    log = server.err.decode()
    assert f"worker {victim} exited unexpectedly (killed by SIGKILL); restarting it in 0.1 s" in log
    assert f"worker {survivor} stopped (status 0)" in log  # it served throughout


@pytest.mark.trio
async def test_sighup_replaces_every_worker_without_a_failed_connection(app_dir: Path) -> None:
    with trio.fail_after(20):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            old = await worker_pids(server)
            answers: list[int] = []
            failures: list[BaseException] = []
            reloaded = trio.Event()

            async def client_loop() -> None:
                while not reloaded.is_set():
                    try:
                        answers.append(await ask_pid(server.port))
                    except (OSError, AssertionError) as exc:
                        failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(client_loop)
                await trio.sleep(0.2)
                server.process.send_signal(signal.SIGHUP)
                await server.wait_for(RELOADED)
                await wait_gone(old)
                reloaded.set()
            match = RELOADED.search(server.err)
            assert match is not None
            new = pids(match.group(1))
            assert not failures, failures
            assert len(new) == 2
            assert not new & old
            assert old <= set(answers)  # the loop ran before, during and after the reload
            after = [await ask_pid(server.port) for _ in range(20)]
            assert set(after) <= new
            assert await server.stop(signal.SIGTERM) == 0


@pytest.mark.trio
async def test_sighup_with_broken_new_code_keeps_the_old_workers(app_dir: Path) -> None:
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            old = await worker_pids(server)
            write_app(app_dir, source="raise RuntimeError('half-deployed')\n")
            server.process.send_signal(signal.SIGHUP)
            await server.wait_for(b"reload abandoned")
            assert set(await ask_until(server.port, old)) == old
            assert await server.stop(signal.SIGTERM) == 0
    log = server.err.decode()
    assert (
        "reload abandoned, a new worker failed to start: cannot load APP: importing 'pidecho' "
        "raised RuntimeError: half-deployed; the old workers keep serving"
    ) in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.trio
async def test_a_stop_signal_stops_every_worker_and_exits_0(app_dir: Path, signum: int) -> None:
    grace = 2.0
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2", "--grace", str(grace)
        ) as server:
            workers = await worker_pids(server)
            idle = await trio.open_tcp_stream(LOCAL, server.port)  # a client that never leaves
            async with idle:
                started = trio.current_time()
                assert await server.stop(signum) == 0
                elapsed = trio.current_time() - started
            assert not any(alive(pid) for pid in workers)
    assert elapsed < grace  # idle connections close at once; the bound is grace + on_close
    name = signal.Signals(signum).name
    assert f"{name}: stopping 2 workers" in server.err.decode()
    assert server.err.count(b"stopped: ") == 2  # each worker's summary


@pytest.mark.trio
async def test_a_second_signal_stops_the_workers_at_once(app_dir: Path) -> None:
    argv = ["pidecho:service", "--app-dir", str(app_dir), "--workers", "2", "--grace", "60"]
    with trio.fail_after(15):
        async with serving(*argv) as server:
            workers = await worker_pids(server)
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                # Never read the replies: a worker's write-back blocks inside
                # the connection, so its graceful stop has to wait for it.
                with trio.move_on_after(0.5):
                    while True:
                        await stream.send_all(b"x" * 65536)
                server.process.send_signal(signal.SIGTERM)
                await server.wait_for(b"SIGTERM: stopping 2 workers")
                with trio.move_on_after(0.5):
                    await server.process.wait()
                assert server.process.returncode is None, "the graceful stop did not wait"
                assert await server.stop(signal.SIGTERM) == 0
            assert not any(alive(pid) for pid in workers)
    assert b"SIGTERM: stopping now" in server.err
    assert b"supervisor: stopping now" in server.err  # what the busy worker heard


@pytest.mark.trio
async def test_a_worker_that_cannot_restart_is_retried_while_the_other_serves(
    app_dir: Path,
) -> None:
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            victim, survivor = sorted(await worker_pids(server))
            write_app(app_dir, source="raise RuntimeError('half-deployed')\n")
            os.kill(victim, signal.SIGKILL)
            await server.wait_for(b"a new worker failed to start: cannot load APP")
            await server.wait_for(b"trying again in 0.2 s")
            assert {await ask_pid(server.port) for _ in range(5)} == {survivor}
            assert await server.stop(signal.SIGTERM) == 0


@pytest.mark.trio
async def test_workers_take_every_listener_option(app_dir: Path) -> None:
    argv = ["pidecho:service", "--app-dir", str(app_dir), "--workers", "2", "--proxy-protocol"]
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 3000\r\n"
    with trio.fail_after(15):
        async with serving(*argv, "--trusted-proxy", "10.0.0.0/8") as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                await stream.send_all(header + b"hi\n")
                received, _ = await read_until_eof(stream)
            assert received == b"", "a worker served a connection from outside --trusted-proxy"
            await server.wait_for(b"refused a connection from 127.0.0.1")
            assert await server.stop() == 0


@pytest.mark.trio
async def test_workers_stop_when_the_supervisor_is_killed(app_dir: Path) -> None:
    with trio.fail_after(15):
        async with serving(
            "pidecho:service", "--app-dir", str(app_dir), "--workers", "2"
        ) as server:
            workers = await worker_pids(server)
            await ask_until(server.port, workers)
            server.process.kill()
            await server.process.wait()
            await wait_gone(workers)  # they saw their control socket end


@pytest.mark.trio
async def test_a_bad_app_with_workers_exits_2_with_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, "broken", "raise ImportError('no such table')\n")
    argv = ["serve", "broken:service", "--app-dir", str(tmp_path), "--workers", "2", "--port", "0"]
    result = await run_cli(*argv)
    assert result.returncode == 2
    assert result.stdout == b""
    assert one_line(result.stderr) == (
        "trio-tcp: cannot load APP: importing 'broken' raised ImportError: no such table"
    )


@pytest.mark.trio
async def test_a_worker_that_cannot_be_spawned_is_a_failed_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    argv = ["serve", "--workers", "2", "--port", "0"]
    args = _cli.build_parser().parse_args(argv)
    args.argv = argv
    with trio.fail_after(10):
        try:
            await _supervisor.run(args, None)
        except Exception as exc:  # a group of the nursery's errors
            leaves = list(exception_leaves(exc))
        else:
            pytest.fail("the supervisor started without workers")
    assert len(leaves) == 1
    assert isinstance(leaves[0], CommandError)
    assert str(leaves[0]) == "cannot start a worker: No such file or directory"


def test_restart_delays_double_up_to_a_ceiling() -> None:
    supervisor = _supervisor.Supervisor.__new__(_supervisor.Supervisor)
    supervisor.deaths = {0: 0}
    delays = [supervisor._next_delay(0) for _ in range(10)]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == _supervisor.RESTART_DELAY_MAX
    assert delays == sorted(delays)


@pytest.mark.parametrize(
    ("status", "text"),
    [(0, "status 0"), (3, "status 3"), (-9, "killed by SIGKILL"), (None, "still running")],
)
def test_exit_description(status: int | None, text: str) -> None:
    assert _supervisor.exit_description(status) == text
