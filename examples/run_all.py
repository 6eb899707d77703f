"""Run every example briefly against the others; exits non-zero if one misbehaves.

    python examples/run_all.py

Each server starts on a free loopback port (``--port 0``), is exercised by its
client (or by a few raw connections), then is stopped with Ctrl-C (SIGINT) and
must exit cleanly.
"""

from __future__ import annotations

import functools
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

HERE = Path(__file__).parent
PYTHON = sys.executable
LISTENING = re.compile(rb"listening on \S+:(\d+)")


async def start_server(nursery: trio.Nursery, script: str, *args: str) -> tuple[trio.Process, int]:
    """Start an example server on port 0 and return it with the port it printed.

    ``args`` come before ``--port``, so they may name a sub-command (``serve``).
    """
    command = [PYTHON, "-u", str(HERE / script), *args, "--port", "0"]
    run = functools.partial(trio.run_process, command, stdout=subprocess.PIPE, check=False)
    process: trio.Process = await nursery.start(run)
    assert process.stdout is not None
    seen = b""
    while (match := LISTENING.search(seen)) is None:
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise RuntimeError(f"{script} exited before listening: {seen.decode()!r}")
        seen += chunk
    nursery.start_soon(drain, process)
    return process, int(match.group(1))


async def drain(process: trio.Process) -> None:
    assert process.stdout is not None
    async for chunk in process.stdout:
        sys.stdout.write(chunk.decode(errors="replace"))


async def stop(process: trio.Process, script: str) -> None:
    process.send_signal(signal.SIGINT)
    code = await process.wait()
    if code != 0:
        raise RuntimeError(f"{script} exited with status {code} after SIGINT")
    print(f"ok: {script} stopped cleanly")


async def echo() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, "echo_server.py")
        result = await trio.run_process(
            [PYTHON, str(HERE / "echo_client.py"), "--port", str(port), "--message", "ping"],
            capture_stdout=True,
        )
        if b"Response: ping" not in result.stdout:
            raise RuntimeError(f"echo_client printed {result.stdout!r}")
        print("ok: echo_client got its echo")
        await stop(server, "echo_server.py")


async def tls_echo() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        ca = str(Path(scratch) / "ca.pem")  # the server's throwaway CA, for the client
        async with trio.open_nursery() as nursery:
            server, port = await start_server(nursery, "tls_echo_server.py", "--write-ca", ca)
            client = [PYTHON, str(HERE / "tls_echo_client.py"), "--port", str(port)]
            result = await trio.run_process(
                [*client, "--cafile", ca, "--message", "ping"], capture_stdout=True
            )
            if b"Response: ping" not in result.stdout:
                raise RuntimeError(f"tls_echo_client printed {result.stdout!r}")
            print("ok: tls_echo_client got its echo over TLS")
            # Without the CA the client must refuse the server, and say so.
            refused = await trio.run_process(client, capture_stderr=True, check=False)
            if refused.returncode != 1 or b"verification failed" not in refused.stderr:
                raise RuntimeError(f"untrusted tls_echo_client said {refused.stderr!r}")
            print("ok: tls_echo_client refused an untrusted server")
            await stop(server, "tls_echo_server.py")


async def chat() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, "chat_server.py")
        alice = await trio.open_tcp_stream("127.0.0.1", port)
        bob = await trio.open_tcp_stream("127.0.0.1", port)
        await read_line_containing(alice, b"joined")  # bob's arrival
        await alice.send_all(b"hello bob\n")
        await read_line_containing(bob, b"hello bob")
        print("ok: chat_server relayed a line")
        await alice.aclose()
        await read_line_containing(bob, b"left")
        await bob.aclose()
        await stop(server, "chat_server.py")


async def framed_rpc() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, "framed_rpc.py", "serve")
        calls = {
            ("UPPER", "hello"): b"HELLO",
            ("REVERSE", "hello"): b"olleh",
            ("NOPE", "x"): b"ERR unknown command",
        }
        for request, expected in calls.items():
            result = await trio.run_process(
                [PYTHON, str(HERE / "framed_rpc.py"), "call", "--port", str(port), *request],
                capture_stdout=True,
            )
            if result.stdout.strip() != expected:
                raise RuntimeError(f"framed_rpc call {request} printed {result.stdout!r}")
        print("ok: framed_rpc answered its calls")
        await stop(server, "framed_rpc.py")


async def redis() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await start_server(nursery, "redis_server.py")
        cli = shutil.which("redis-cli")
        if cli is not None:  # a real client, where Debian's redis-tools is installed
            base = [cli, "-p", str(port)]
            await trio.run_process([*base, "set", "greeting", "hello world"], capture_stdout=True)
            result = await trio.run_process([*base, "get", "greeting"], capture_stdout=True)
            reply = result.stdout.strip()
            if reply != b"hello world":
                raise RuntimeError(f"redis-cli get printed {reply!r}")
            print("ok: redis_server answered redis-cli")
        else:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                await stream.send_all(b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\nPING\r\n")
                await read_line_containing(stream, b"+PONG")
            print("ok: redis_server answered a pipelined ECHO and PING")
        await stop(server, "redis_server.py")


async def read_line_containing(stream: trio.SocketStream, needle: bytes) -> None:
    seen = b""
    while needle not in seen:
        chunk = await stream.receive_some()
        if not chunk:
            raise RuntimeError(f"connection closed before {needle!r}; got {seen!r}")
        seen += chunk


EXAMPLES: list[Callable[[], object]] = [echo, tls_echo, chat, framed_rpc, redis]


async def main() -> None:
    for example in EXAMPLES:
        with trio.fail_after(20):
            await example()  # type: ignore[misc]


if __name__ == "__main__":
    trio.run(main)
