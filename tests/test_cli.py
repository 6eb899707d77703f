"""The ``trio-tcp`` command, run as real subprocesses on loopback (port 0 only).

Every sub-command runs end to end here: demo; serve with connect piping
through it (pipe, regular file, idle close), framing, discard and chat
modes; serve with bench ``--json``; certs, then TLS and mutual TLS with the
written files; SIGINT/SIGTERM giving exit status 0, a second SIGINT stopping
at once, Ctrl-C on connect giving 130; usage errors (status 2, one line) and
runtime errors (status 1, one line, no traceback unless ``--debug``). Pure
helpers (sizes, percentiles) get plain unit tests, and an AST check keeps the
CLI on the public API. Each test bounds itself with ``trio.fail_after``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from _cli_process import CLI, LOCAL, both, finish, one_line, run_cli, serving
from _loopback import read_until_eof, receive_exactly, reset

import trio_tcp
from trio_tcp import _cli
from trio_tcp._cli import _bench
from trio_tcp._cli._bench import LatencyRecorder, _text, percentile
from trio_tcp._cli._connect import looks_like_tls
from trio_tcp._cli._options import endpoint, format_bytes, parse_size

PACKAGE = Path(_cli.__file__).parent  # trio_tcp/_cli/


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port that is bound but not listening: connecting to it is refused, no race."""
    with socket.socket() as sock:
        sock.bind((LOCAL, 0))
        yield sock.getsockname()[1]


# -- demo, help, version -----------------------------------------------------------------


@pytest.mark.trio
async def test_demo_runs_end_to_end_and_exits_0() -> None:
    result = await run_cli("demo")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr
    assert re.search(r"client TLS +TLSv1\.[23], cipher \S+", out), out
    assert out.count("received   the same bytes") == 6
    assert re.search(r"connected +127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+", out)
    assert "stopped gracefully: 2 connections" in out
    assert result.stderr == b""


@pytest.mark.trio
async def test_version_and_help_in_a_subprocess() -> None:
    result = await run_cli("--help")
    assert result.returncode == 0
    assert b"trio-tcp demo" in result.stdout
    for command in _cli.COMMANDS:
        assert command.encode() in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "trio-tcp"
    if not script.exists():
        pytest.skip("no trio-tcp script next to this interpreter (not pip-installed)")
    result = subprocess.run([str(script), "--version"], capture_output=True, timeout=10)
    assert result.returncode == 0
    assert result.stdout.startswith(b"trio-tcp ")


@pytest.mark.parametrize("command", sorted(_cli.COMMANDS))
def test_help_of_each_command_has_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trio-tcp {command}")
    assert "example" in out
    assert "trio-tcp " + command in out.split("example", 1)[1]


# -- argument errors: status 2, one line ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([], "required: COMMAND", id="no-command"),
        pytest.param(["frobnicate"], "invalid choice", id="unknown-command"),
        pytest.param(["serve", "--port", "70000"], "invalid port value", id="port-range"),
        pytest.param(["serve", "--tls-cert", "c.pem"], "--tls-key go together", id="cert-no-key"),
        pytest.param(["serve", "--tls-client-ca", "ca.pem"], "needs --tls-cert", id="ca-no-tls"),
        pytest.param(["serve", "--idle-timeout", "0"], "invalid seconds", id="idle-zero"),
        pytest.param(["serve", "--mode", "shout"], "invalid choice", id="mode"),
        pytest.param(["serve", "--write-timeout", "0"], "invalid seconds", id="write-timeout"),
        pytest.param(
            ["serve", "--trusted-proxy", "10.0.0.0/8"], "needs --proxy-protocol", id="trusted-alone"
        ),
        pytest.param(
            ["serve", "--proxy-protocol", "--trusted-proxy", "10.0.0.300"],
            "invalid network value",
            id="trusted-cidr",
        ),
        pytest.param(["serve", "--workers", "0"], "invalid count", id="workers"),
        pytest.param(["serve", "--fd", "-1"], "invalid file descriptor", id="fd"),
        pytest.param(["serve", "--fd", "3", "--reuse-port"], "--reuse-port applies", id="fd-reuse"),
        pytest.param(
            ["serve", "--mode", "chat", "--workers", "2"], "cannot use --workers", id="chat-workers"
        ),
        pytest.param(["connect", LOCAL], "required: PORT", id="connect-no-port"),
        pytest.param(["connect", LOCAL, "0"], "port 0", id="connect-port-0"),
        pytest.param(["connect", LOCAL, "1", "--key", "k"], "go together", id="key-no-cert"),
        pytest.param(["bench", LOCAL, "1", "--size", "12X"], "invalid size", id="size"),
        pytest.param(["bench", LOCAL, "1", "--duration", "-1"], "invalid seconds", id="duration"),
        pytest.param(["bench", LOCAL, "1", "-c", "0"], "invalid count", id="connections"),
        pytest.param(["certs", "d", "--hostname", "a b"], "--hostname", id="hostname"),
    ],
)
def test_argument_errors_exit_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _cli.main(argv)
    assert exit_info.value.code == 2
    line = one_line(capsys.readouterr().err.encode())
    assert line.startswith("trio-tcp")
    assert message in line


@pytest.mark.trio
async def test_argument_error_in_a_subprocess_exits_2() -> None:
    result = await run_cli("serve", "--port", "nope")
    assert result.returncode == 2
    assert one_line(result.stderr).startswith("trio-tcp serve: error: argument --port")


# -- runtime errors: status 1, one line -----------------------------------------------------


@pytest.mark.trio
async def test_connect_refused_exits_1_with_a_clear_message() -> None:
    with refusing_port() as port:
        result, debug = await both(
            run_cli("connect", LOCAL, str(port)), run_cli("connect", LOCAL, str(port), "--debug")
        )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"trio-tcp: cannot connect to {LOCAL}:{port}: ")
    assert "refused" in line
    assert debug.returncode == 1
    assert b"Traceback" in debug.stderr
    assert b"ConnectError" in debug.stderr


@pytest.mark.trio
async def test_bench_refused_exits_1() -> None:
    with refusing_port() as port:
        result = await run_cli("bench", LOCAL, str(port), "--duration", "1")
    assert result.returncode == 1
    assert one_line(result.stderr).startswith(f"trio-tcp: cannot connect to {LOCAL}:{port}")
    assert result.stdout == b""


@pytest.mark.trio
async def test_serve_on_a_port_in_use_exits_1() -> None:
    with trio.fail_after(10):
        async with serving() as server:
            result = await run_cli("serve", "--port", str(server.port))
            assert await server.stop() == 0
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"trio-tcp: cannot listen on {LOCAL}:{server.port}: Address already in use"
    )


# -- serve + connect ------------------------------------------------------------------------


@pytest.mark.trio
async def test_connect_pipes_stdin_through_an_echo_server() -> None:
    with trio.fail_after(10):
        async with serving() as server:
            result = await run_cli(
                "connect", LOCAL, str(server.port), "--wait", "0.2", stdin=b"hi\n"
            )
            await server.wait_for(b"close")
            assert await server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hi\n"
    assert result.stderr == b""  # status lines only on a terminal or with -v
    log = server.err.decode()
    pid = server.process.pid
    assert re.search(rf"\d\d:\d\d:\d\d \[{pid}\] INFO connect 127\.0\.0\.1:\d+ \(#1\)", log), log
    assert re.search(r"close 127\.0\.0\.1:\d+ \(#1\) after [\d.]+ s, 3 B in, 3 B out", log), log
    assert "stopped: 1 connection(s)" in log


@pytest.mark.trio
async def test_connect_reads_stdin_from_a_regular_file(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    with trio.fail_after(10):
        async with serving() as server:
            with source.open("rb") as stdin:
                result = await run_cli("connect", LOCAL, str(server.port), "-q", "0.3", stdin=stdin)
            assert await server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload


@pytest.mark.trio
async def test_connect_waits_for_the_server_to_close_with_wait_inf() -> None:
    with trio.fail_after(10):
        async with serving("--idle-timeout", "0.3") as server:
            result = await run_cli("connect", LOCAL, str(server.port), "--wait", "inf", "-v")
            assert await server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"connected to {LOCAL}:{server.port} from".encode())
    assert result.stderr.endswith(b"connection closed\n")


@pytest.mark.trio
async def test_ctrl_c_on_connect_exits_130() -> None:
    with trio.fail_after(10):
        async with serving() as server:
            process = await trio.lowlevel.open_process(
                [*CLI, "connect", LOCAL, str(server.port), "-v"],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stderr is not None
                assert (await process.stderr.receive_some()).startswith(b"connected to")
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
            finally:
                await finish(process)
            assert await server.stop() == 0


# -- serve: modes and framing -------------------------------------------------------------


@pytest.mark.parametrize(
    ("framing", "messages", "wire"),
    [
        pytest.param("lines", [b"one", b"", b"three"], b"one\n\nthree\n", id="lines"),
        pytest.param("length4", [b"one", b"two!"], b"\0\0\0\x03one\0\0\0\x04two!", id="length4"),
    ],
)
@pytest.mark.trio
async def test_serve_framing_echoes_whole_messages(
    framing: str, messages: list[bytes], wire: bytes
) -> None:
    with trio.fail_after(10):
        async with serving("--framing", framing) as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                for i in range(len(wire)):  # one byte at a time: framing must reassemble
                    await stream.send_all(wire[i : i + 1])
                assert await receive_exactly(stream, len(wire)) == wire
            assert await server.stop() == 0
    assert f"{len(wire)} B in, {len(wire)} B out".encode() in server.err


@pytest.mark.trio
async def test_serve_discard_reads_and_sends_nothing() -> None:
    with trio.fail_after(10):
        async with serving("--mode", "discard") as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                await stream.send_all(b"x" * 5000)
                with trio.move_on_after(0.3):
                    assert await stream.receive_some() == b"", "discard sent something"
            await server.wait_for(b"close")
            assert await server.stop() == 0
    assert b"4.9 KiB in, 0 B out" in server.err


@pytest.mark.trio
async def test_serve_chat_relays_lines_to_the_others() -> None:
    with trio.fail_after(10):
        async with serving("--mode", "chat", "--framing", "lines") as server:
            alice = await trio.open_tcp_stream(LOCAL, server.port)
            bob = await trio.open_tcp_stream(LOCAL, server.port)
            async with alice, bob:
                await server.wait_for(b"(#2)")
                await alice.send_all(b"hello bob\n")
                assert await receive_exactly(bob, 10) == b"hello bob\n"
                with trio.move_on_after(0.2):
                    assert await alice.receive_some() == b"", "chat echoed to the sender"
            await server.wait_for(re.compile(rb"close .*\(#2\)"))
            assert await server.stop() == 0
    # Wire bytes, newline included, on each line and in the summary alike.
    log = server.err.decode()
    assert re.search(r"close \S+ \(#1\) after [\d.]+ s, 10 B in, 0 B out", log), log
    assert re.search(r"close \S+ \(#2\) after [\d.]+ s, 0 B in, 10 B out", log), log
    assert "stopped: 2 connection(s), 10 B in, 10 B out, 0 error(s)" in log


@pytest.mark.trio
async def test_serve_logs_a_connection_without_data_quietly() -> None:
    with trio.fail_after(10):
        async with serving() as server:
            probe = await trio.open_tcp_stream(LOCAL, server.port)
            await probe.aclose()  # a health check: connect, close
            probe = await trio.open_tcp_stream(LOCAL, server.port)
            await reset(probe)  # or connect, reset
            client = await trio.open_tcp_stream(LOCAL, server.port)
            async with client:
                await client.send_all(b"data")
                assert await receive_exactly(client, 4) == b"data"
            await server.wait_for(b"close 127.0.0.1")
            assert await server.stop() == 0
    log = server.err.decode()
    assert log.count(" connect ") == 3, log
    assert log.count(" close ") == 1, log
    assert "(#3) after" in log
    assert " error " not in log
    assert "stopped: 3 connection(s) (2 without data), 4 B in, 4 B out, 0 error(s)" in log


@pytest.mark.trio
async def test_serve_logs_a_load_balancer_health_check_at_debug_only() -> None:
    local = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])  # v2 LOCAL, no address
    with trio.fail_after(10):
        async with serving("--proxy-protocol") as server:
            check = await trio.open_tcp_stream(LOCAL, server.port)
            async with check:
                await check.send_all(local)
            client = await trio.open_tcp_stream(LOCAL, server.port)
            async with client:
                await client.send_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 3000\r\nhi")
                assert await receive_exactly(client, 2) == b"hi"
            await server.wait_for(b"close 203.0.113.7:40000 (#2)")
            assert await server.stop() == 0
    log = server.err.decode()
    assert log.count(" connect ") == 1, log
    assert "stopped: 2 connection(s) (1 without data), 2 B in, 2 B out, 0 error(s)" in log


# -- signals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.trio
async def test_signal_stops_serve_gracefully_with_status_0(signum: int) -> None:
    with trio.fail_after(10):
        async with serving() as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                await server.wait_for(b"connect")
                assert await server.stop(signum) == 0
                assert await stream.receive_some() == b""  # closed by the stop, cleanly
    log = server.err.decode()
    assert f"{signal.Signals(signum).name}: stopping" in log
    assert "stopped: 1 connection(s)" in log
    assert " INFO " in log
    assert not re.search(r"ERROR|WARNING|Traceback", log), log


@pytest.mark.trio
async def test_second_sigint_stops_at_once() -> None:
    with trio.fail_after(10):
        async with serving("--grace", "60") as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                # Never read the echo: the server's write-back blocks inside the
                # connection, so a graceful stop has to wait for it.
                with trio.move_on_after(0.5):
                    while True:
                        await stream.send_all(b"x" * 65536)
                server.process.send_signal(signal.SIGINT)
                await server.wait_for(b"SIGINT: stopping;")
                with trio.move_on_after(0.3):
                    await server.process.wait()
                assert server.process.returncode is None, "graceful stop did not wait"
                assert await server.stop() == 0
    assert b"SIGINT: stopping now" in server.err


# -- bench ------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_bench_json_against_serve() -> None:
    with trio.fail_after(15):
        async with serving() as server:
            pingpong, stream = await both(*(
                run_cli(
                    "bench", LOCAL, str(server.port), "--mode", mode,
                    # 1.5 s: at least one progress line (they come each second).
                    "--duration", "1.5", "--connections", "3", "--size", "1K", "--json",
                )
                for mode in ("pingpong", "stream")
            ))  # fmt: skip
            assert await server.stop() == 0
    for mode, result in (("pingpong", pingpong), ("stream", stream)):
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["mode"] == mode
        assert summary["connections"] == 3
        assert summary["size"] == 1024
        assert summary["errors"] == 0
        assert summary["error_messages"] == {}
        assert summary["interrupted"] is False
        assert 1.4 <= summary["duration"] <= 4.0  # loose: CI machines are busy
        assert summary["bytes_sent"] > 0
        assert summary["mb_per_second_sent"] > 0
        headline, *progress = result.stderr.decode().splitlines()  # not a terminal: plain lines
        assert headline == (
            f"bench {mode} {LOCAL}:{server.port}: 3 connections, 1.0 KiB "
            f"{'messages' if mode == 'pingpong' else 'writes'}, 1.5 s (Ctrl-C ends it early)"
        )
        assert progress, "no progress lines"
        assert all(re.match(r" *\d+\.\d s ", line) for line in progress), progress
        assert "errors 0" in progress[-1]
    summary = json.loads(pingpong.stdout)
    assert summary["round_trips"] > 0
    assert summary["bytes_received"] == summary["bytes_sent"] == summary["round_trips"] * 1024
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    summary = json.loads(stream.stdout)
    assert summary["round_trips"] is None
    assert summary["latency_ms"] is None
    assert summary["bytes_received"] == summary["bytes_sent"]  # everything echoed back


@pytest.mark.trio
async def test_bench_ctrl_c_prints_the_summary_and_exits_130() -> None:
    with trio.fail_after(15):
        async with serving() as server:
            process = await trio.lowlevel.open_process(
                [*CLI, "bench", LOCAL, str(server.port), "--duration", "30", "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert process.stderr is not None
                assert process.stdout is not None
                progress = b""
                while b"round trips" not in progress:  # the headline, then progress
                    progress += await process.stderr.receive_some()
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
                output = b"".join([chunk async for chunk in process.stdout])
            finally:
                await finish(process)
            assert await server.stop() == 0
    summary = json.loads(output)
    assert summary["interrupted"] is True
    assert summary["round_trips"] > 0
    assert summary["duration"] < 10


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.trio
async def test_bench_progress_on_a_terminal_is_cleared_before_the_summary(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run = _bench._Run(stop_at=trio.current_time() + 10)
    with trio.move_on_after(2.5):
        await _bench._progress(run, "pingpong", trio.current_time())
    written = terminal.getvalue()
    assert written.count("\r") == 3  # two updates in place, then the clearing
    assert written.endswith("\r\x1b[K")
    assert "\n" not in written


class _Discard(trio_tcp.ConnectionService):
    async def on_bytes(self, data: bytes) -> None:
        pass


class _DiscardServer(trio_tcp.Service):
    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        return _Discard()


@pytest.mark.trio
async def test_bench_pingpong_without_an_echo_reports_errors_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_bench, "FINISH_TIMEOUT", 0.2)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener = await nursery.start(
                functools.partial(trio_tcp.serve, 0, _DiscardServer(), local_host=LOCAL)
            )
            argv = ["bench", LOCAL, str(listener.port), "-c", "2", "-d", "0.3", "--json"]
            status = await _bench.run(_cli.build_parser().parse_args(argv))
            await listener.graceful_stop()
    assert status == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["round_trips"] == 0
    assert summary["latency_ms"] is None
    assert summary["errors"] == 2
    assert summary["error_messages"] == {"no reply 0.2 s after the end": 2}


# -- certs and TLS --------------------------------------------------------------------------


@pytest.mark.trio
async def test_certs_then_tls_serve_and_connect(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    written = await run_cli("certs", str(certs))
    assert written.returncode == 0, written.stderr
    assert {p.name for p in certs.iterdir()} == {"ca.pem", "server.pem", "server.key"}
    assert (certs / "server.key").stat().st_mode & 0o777 == 0o600
    ca, cert, key = (str(certs / name) for name in ("ca.pem", "server.pem", "server.key"))
    assert f"--tls-cert {cert} --tls-key {key}".encode() in written.stdout
    assert f"--cafile {ca}".encode() in written.stdout

    with trio.fail_after(10):
        async with serving("--tls-cert", cert, "--tls-key", key) as server:
            port = str(server.port)
            trusted, untrusted = await both(
                run_cli("connect", "localhost", port, "--cafile", ca, "-q", "0.2", stdin=b"tls\n"),
                run_cli("connect", LOCAL, port, "--tls", stdin=b"tls\n"),
            )
            silent, dropped = await both(  # plain clients: too short for a TLS record, or not one
                run_cli("connect", LOCAL, port, "-q", "0.2", stdin=b"x\n"),
                run_cli("connect", LOCAL, port, "-q", "5", stdin=b"hello, is this TLS?\n"),
            )
            await server.wait_for(b"close")
            assert await server.stop() == 0
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout == b"tls\n"
    assert untrusted.returncode == 1
    assert "certificate" in one_line(untrusted.stderr)
    assert re.search(rb"connect 127\.0\.0\.1:\d+ \(#1\), TLSv1\.[23] ", server.err)
    for result, what in ((silent, "sent no reply"), (dropped, "without a reply")):
        assert result.returncode == 1, result.stderr
        assert result.stdout == b""
        line = one_line(result.stderr)
        assert line.startswith(f"trio-tcp: {LOCAL}:{port} ")
        assert line.endswith(f"{what}: it expects TLS (try --tls)")


@pytest.mark.trio
async def test_connect_to_a_plain_server_that_does_not_answer_is_not_called_tls() -> None:
    with trio.fail_after(10):
        async with serving("--mode", "discard") as server:
            result = await run_cli("connect", LOCAL, str(server.port), "-q", "0.1", stdin=b"x\n")
            assert await server.stop() == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == b""


@pytest.mark.parametrize(
    ("data", "tls"),
    [
        pytest.param(b"\x15\x03\x03\x00\x02\x02\x46", True, id="alert"),
        pytest.param(b"\x16\x03\x01\x02\x00", True, id="handshake"),
        pytest.param(b"\x16\x03", False, id="too-short"),
        pytest.param(b"HTTP/1.1 400", False, id="http"),
        pytest.param(b"\x16\x02\x00", False, id="sslv2-ish"),
    ],
)
def test_looks_like_tls(data: bytes, tls: bool) -> None:
    assert looks_like_tls(data) is tls


@pytest.mark.trio
async def test_certs_client_pair_for_mutual_tls(tmp_path: Path) -> None:
    written = await run_cli("certs", str(tmp_path), "--client", "--hostname", LOCAL)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "client.key").stat().st_mode & 0o777 == 0o600
    files = {name: str(tmp_path / name) for name in os.listdir(tmp_path)}
    with trio.fail_after(10):
        async with serving(
            "--tls-cert", files["server.pem"], "--tls-key", files["server.key"],
            "--tls-client-ca", files["ca.pem"],
        ) as server:  # fmt: skip
            port = str(server.port)
            tls = ["--cafile", files["ca.pem"]]
            pair = ["--cert", files["client.pem"], "--key", files["client.key"]]
            with_pair, without = await both(
                run_cli("connect", LOCAL, port, *tls, *pair, "-q", "0.2", stdin=b"m\n"),
                run_cli("connect", LOCAL, port, *tls, stdin=b"m\n"),
            )
            assert await server.stop() == 0
    assert with_pair.returncode == 0, with_pair.stderr
    assert with_pair.stdout == b"m\n"
    assert without.returncode == 1
    assert "client certificate" in one_line(without.stderr)


def test_certs_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["certs", str(tmp_path)]) == 0
    before = (tmp_path / "ca.pem").read_bytes()
    capsys.readouterr()
    assert _cli.main(["certs", str(tmp_path)]) == 1
    ca = tmp_path / "ca.pem"
    assert one_line(capsys.readouterr().err.encode()) == (
        f"trio-tcp: {ca} already exists (--force overwrites it)"
    )
    assert ca.read_bytes() == before
    assert _cli.main(["certs", str(tmp_path), "--force"]) == 0
    assert ca.read_bytes() != before
    assert (tmp_path / "server.key").stat().st_mode & 0o777 == 0o600


# -- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64", 64),
        ("1K", 1024),
        ("16kib", 16384),
        ("2 KB", 2048),
        ("4M", 4 << 20),
        ("1MiB", 1 << 20),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5K", "1G", "65M", "12X", "K"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0.001) == 1
    assert percentile([7.0], 50) == 7
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="percentile must be"):
        percentile(values, 0)


def test_latency_recorder_stays_bounded_and_keeps_exact_totals() -> None:
    recorder = LatencyRecorder(limit=100, seed=1)
    assert recorder.percentiles() is None
    for i in range(10_000):
        recorder.add(i / 1000)
    assert recorder.count == 10_000
    assert recorder.max == 9.999
    assert recorder.total == pytest.approx(sum(i / 1000 for i in range(10_000)))
    values = recorder.percentiles((50, 100))
    assert values is not None
    assert 3 < values[0] < 7  # a uniform sample's median, roughly the true 5.0
    exact = LatencyRecorder()
    for i in (3, 1, 2):
        exact.add(i)
    assert exact.percentiles((50, 100)) == [2, 3]


def test_text_summary_of_each_mode() -> None:
    common = {
        "host": LOCAL, "port": 3000, "tls": False, "connections": 2, "size": 64,
        "duration": 1.0, "bytes_sent": 6400, "bytes_received": 6400,
        "mb_per_second_sent": 0.0064, "mb_per_second_received": 0.0064,
        "errors": 1, "error_messages": {"connection closed by the peer": 1}, "interrupted": True,
    }  # fmt: skip
    pingpong = _text(
        common | {
            "mode": "pingpong", "round_trips": 100, "round_trips_per_second": 100.0,
            "latency_ms": {"p50": 0.1, "p90": 0.2, "p99": 0.3, "max": 0.4, "mean": 0.15},
        }
    )  # fmt: skip
    assert "round trips  100 (100/s)" in pingpong
    assert "p50 0.100 ms   p90 0.200 ms   p99 0.300 ms   max 0.400 ms" in pingpong
    assert "(interrupted)" in pingpong
    assert "1 x connection closed by the peer" in pingpong
    stream = _text(common | {"mode": "stream", "round_trips": None, "latency_ms": None})
    assert "sent         6.2 KiB (0.0 MB/s)" in stream


def test_format_helpers() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 5 << 20, 3 << 30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB",
    ]  # fmt: skip
    assert endpoint(LOCAL, 1) == "127.0.0.1:1"
    assert endpoint("::1", 2) == "[::1]:2"
    assert endpoint(None, 3) == "*:3"


def test_cli_uses_only_the_public_api() -> None:
    """The CLI imports trio_tcp's public names, never its private modules."""
    paths = sorted(PACKAGE.glob("*.py"))
    assert PACKAGE / "_serve.py" in paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # relative: only the CLI's own modules, never the library's
                    assert node.level == 1, f"{path.name} imports from {'.' * node.level}{module}"
                else:
                    assert not re.match(r"trio_tcp\._", module), f"{path.name} imports {module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("trio_tcp._"), f"{path.name}: {alias.name}"


@pytest.mark.trio
async def test_serve_behind_a_proxy_takes_the_address_from_the_header() -> None:
    with trio.fail_after(15):
        async with serving("--host", LOCAL, "--proxy-protocol", "-v") as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            header = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 3000\r\n"
            await stream.send_all(header + b"hello")
            assert await receive_exactly(stream, 5) == b"hello"
            await stream.aclose()
            await server.wait_for(b"203.0.113.7:40000")  # the log names the real client
            assert await server.stop() == 0


@pytest.mark.trio
async def test_two_serve_processes_share_a_port_with_reuse_port() -> None:
    with trio.fail_after(15):
        async with serving("--host", LOCAL, "--reuse-port") as first:
            port = str(first.port)
            async with serving("--host", LOCAL, "--reuse-port", "--port", port) as second:
                assert second.port == first.port
                for _ in range(4):
                    stream = await trio.open_tcp_stream(LOCAL, first.port)
                    await stream.send_all(b"ping")
                    assert await receive_exactly(stream, 4) == b"ping"
                    await stream.aclose()
                assert await second.stop() == 0
            assert await first.stop() == 0


@pytest.mark.trio
async def test_serve_trusted_proxy_serves_only_the_load_balancer() -> None:
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 3000\r\n"
    with trio.fail_after(10):
        async with (
            serving("--proxy-protocol", "--trusted-proxy", "10.0.0.0/8") as elsewhere,
            serving("--proxy-protocol", "--trusted-proxy", "::1", "--trusted-proxy", LOCAL) as here,
        ):
            trusted = await trio.open_tcp_stream(LOCAL, here.port)
            async with trusted:
                await trusted.send_all(header + b"hello")
                assert await receive_exactly(trusted, 5) == b"hello"
            untrusted = await trio.open_tcp_stream(LOCAL, elsewhere.port)
            async with untrusted:
                await untrusted.send_all(header + b"hello")
                received, _ = await read_until_eof(untrusted)
            assert received == b"", "a connection from outside --trusted-proxy was served"
            await elsewhere.wait_for(b"refused a connection from 127.0.0.1")
            assert await here.stop() == 0
            assert await elsewhere.stop() == 0
    assert b"connect 203.0.113.7:40000 (#1)" in here.err


@pytest.mark.trio
async def test_serve_write_timeout_fails_a_peer_that_stops_reading() -> None:
    with trio.fail_after(10):
        async with serving("--write-timeout", "0.3") as server:
            stream = await trio.open_tcp_stream(LOCAL, server.port)
            async with stream:
                # Never read the echo: its write stalls, until the server gives up.
                with contextlib.suppress(trio.BrokenResourceError):
                    while True:
                        await stream.send_all(b"x" * 65536)
                await server.wait_for(b"a write made no progress for 0.3 s")
            assert await server.stop() == 0
    assert re.search(rb"INFO error \S+ \(#1\): a write made no progress", server.err)
