"""trio_tcp behind a real HAProxy: PROXY protocol addresses, health checks, graceful stops.

HAProxy (``mode tcp``) runs as a child process on loopback, its ports picked
free at run time and its configuration in a temporary directory (see
``_haproxy.py``). Without HAProxy these tests are skipped, except when the
``CI`` environment variable is set: there a missing HAProxy fails them, so a
forgotten install step cannot pass as green.

* PROXY v1 and v2, from IPv4 and IPv6 clients: ``caller.remote_host`` /
  ``remote_port`` are the real client's address and port.
* HAProxy's own health checks (``check check-send-proxy``: a header, then a
  reset) for a couple of seconds: counted as aborted, never as errors,
  nothing logged above DEBUG, and the server stays UP.
* A backend stopped gracefully (SIGTERM to its own process) while clients do
  2,000 round trips through two backends: no request is lost by the server,
  every failure is accounted for (see ``_rolling.py``), on fresh connections
  and on long-lived ones that reconnect on EOF.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from _haproxy import (
    Server,
    find_haproxy,
    free_port,
    make_config,
    running_haproxy,
)
from _loopback import ipv6_loopback_works, port_of, receive_exactly
from _rolling import Report, rolling_stop

import trio_tcp

LOCAL = "127.0.0.1"
#: Each test ends well within this (real time).
BOUND = 30


@pytest.fixture(scope="module")
def haproxy_executable() -> str:
    found = find_haproxy()
    if found is not None:
        return found
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail("HAProxy is not installed, and CI is set: .ci/run installs it (apt-get)")
    pytest.skip("HAProxy is not installed (apt-get install haproxy); with CI set this fails")


class Recorder(trio_tcp.Service):
    """Echoes; keeps every caller."""

    def __init__(self) -> None:
        self.callers: list[trio_tcp.Caller] = []

    async def on_connect(self, caller: trio_tcp.Caller) -> _Echo:
        self.callers.append(caller)
        return _Echo()

    def relayed(self) -> list[trio_tcp.Caller]:
        """The callers HAProxy relayed for a client (not its own health checks)."""
        return [c for c in self.callers if c.proxy is not None and c.proxy.command == "PROXY"]


class _Echo(trio_tcp.ConnectionService):
    async def on_bytes(self, data: bytes) -> bytes:
        return data


@asynccontextmanager
async def serving(service: trio_tcp.Service, **options: Any) -> AsyncIterator[trio_tcp.Listener]:
    listener = trio_tcp.Listener(0, local_host=LOCAL, proxy_protocol=True, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.graceful_stop()


async def round_trip(host: str, port: int) -> tuple[str, int]:
    """Send a line through HAProxy and get it back; return the client's own address."""
    async with await trio.open_tcp_stream(host, port) as stream:
        address = stream.socket.getsockname()
        await stream.send_all(b"hello\n")
        assert await receive_exactly(stream, 6) == b"hello\n"
    return address[0], address[1]


def trio_tcp_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """trio_tcp's log lines above DEBUG, but for the listener starting and stopping."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trio_tcp"
        and r.levelno > logging.DEBUG
        and "listening on port" not in r.getMessage()
    ]


# -- the real client's address ------------------------------------------------------------------

FAMILIES = [
    pytest.param(LOCAL, id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1)"),
    ),
]


@pytest.mark.trio
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("client_host", FAMILIES)
async def test_the_caller_address_is_the_real_client_address(
    haproxy_executable: str, tmp_path: Path, version: str, client_host: str
) -> None:
    with trio.fail_after(BOUND):
        recorder = Recorder()
        async with serving(recorder) as listener:
            frontend = free_port(client_host)
            bind = f"[{client_host}]:{frontend}" if ":" in client_host else f"{LOCAL}:{frontend}"
            server = Server("app", port_of(listener), proxy=version, check=False)
            config = make_config(directory=tmp_path, frontends={"fe": ([bind], [server])})
            async with running_haproxy(haproxy_executable, config, tmp_path):
                client = await round_trip(client_host, frontend)
            (caller,) = recorder.relayed()
            assert (caller.remote_host, caller.remote_port) == client
            assert caller.proxy is not None
            assert caller.proxy.version == int(version[1])
            assert (caller.local_host, caller.local_port) == (client_host, frontend)
            assert listener.stats.errors == 0


# -- health checks ------------------------------------------------------------------------------


@pytest.mark.trio
async def test_health_checks_count_as_aborted_log_nothing_and_keep_the_server_up(
    haproxy_executable: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    with trio.fail_after(BOUND):
        recorder = Recorder()
        async with serving(recorder) as listener:
            port = port_of(listener)
            frontends = {
                f"fe_{version}": ([f"{LOCAL}:{free_port()}"], [Server("app", port, proxy=version)])
                for version in ("v1", "v2")
            }
            config = make_config(directory=tmp_path, frontends=frontends, inter="200ms")
            async with running_haproxy(haproxy_executable, config, tmp_path) as haproxy:
                await haproxy.wait_up(2)
                for _ in range(10):  # two seconds of checks, the servers UP all along
                    await trio.sleep(0.2)
                    assert set((await haproxy.server_status()).values()) == {"UP"}
                for binds, _ in frontends.values():
                    await round_trip(LOCAL, int(binds[0].rsplit(":", 1)[1]))
            stats = listener.stats
            commands = [c.proxy.command for c in recorder.callers if c.proxy is not None]
            # v2 checks say LOCAL; v1 has no such command, so its checks say PROXY.
            assert commands.count("LOCAL") >= 5
            assert len(recorder.relayed()) >= 5 + 2
            assert stats.errors == 0
            assert stats.aborted >= 10  # every check: no payload either way
            assert trio_tcp_lines(caplog) == []


# -- graceful stops under load ------------------------------------------------------------------


def check(report: Report, record_property: Callable[[str, object], None]) -> None:
    """No loss the server caused, everything explained, nothing logged; the rest reported."""
    print(report.summary())
    for line in report.outside_reach:
        print("outside the server's reach:", line)
    record_property("summary", report.summary())
    record_property("outside_reach", len(report.outside_reach))
    assert report.server_losses == []
    assert report.unexplained == []
    assert report.backend_log == []
    assert report.backend_errors == 0


@pytest.mark.trio
async def test_a_backend_stopped_under_load_loses_no_request_on_fresh_connections(
    haproxy_executable: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    with trio.fail_after(BOUND):
        report = await rolling_stop(haproxy_executable, tmp_path, round_trips=2000, concurrency=32)
    assert report.round_trips == 2000
    check(report, record_property)


@pytest.mark.trio
async def test_a_backend_stopped_under_load_loses_no_request_on_long_lived_connections(
    haproxy_executable: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    with trio.fail_after(BOUND):
        report = await rolling_stop(
            haproxy_executable, tmp_path, round_trips=2000, concurrency=16, long_lived=True
        )
    assert report.round_trips == 2000
    assert report.retried > 0  # the stop did close connections between requests
    check(report, record_property)
