"""Who may send a PROXY header: ``trusted_proxies`` and ``untrusted_proxy``.

A PROXY header sets ``caller.remote_host``, which services use for allow-lists,
rate limits and audit logs, so only the load balancer may send one. Loopback
has a whole /8 of addresses, which makes a trusted and an untrusted peer
testable on one machine: trust ``127.0.0.2``, connect from ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

import trio_tcp
import trio_tcp.testing
from trio_tcp._trust import parse_trusted_proxies

SPOOFED = b"PROXY TCP4 10.0.0.1 10.0.0.2 1111 2222\r\n"


class Recorder(trio_tcp.Service):
    """Records each caller and what it sent; echoes."""

    def __init__(self) -> None:
        self.callers: list[trio_tcp.Caller] = []
        self.received = bytearray()

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.callers.append(caller)
        recorder = self

        class Echo(trio_tcp.ConnectionService):
            async def on_bytes(self, data: bytes) -> bytes:
                recorder.received += data
                return data

        return Echo()


@asynccontextmanager
async def serving(service: trio_tcp.Service, **options: Any) -> AsyncIterator[trio_tcp.Listener]:
    listener = trio_tcp.Listener(0, local_host="127.0.0.1", proxy_protocol=True, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.immediate_stop()


async def connect_from(source: str, port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    received = bytearray()
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some():
            received += chunk
    return bytes(received)


# -- the list ---------------------------------------------------------------------------


def test_entries_may_be_text_addresses_networks_or_ipaddress_objects() -> None:
    trusted = parse_trusted_proxies(
        ["10.0.0.0/8", "192.0.2.7", "::1", ipaddress.ip_network("198.51.100.0/24"),
         ipaddress.ip_address("203.0.113.9")]
    )  # fmt: skip
    assert "10.1.2.3" in trusted
    assert "192.0.2.7" in trusted
    assert "192.0.2.8" not in trusted
    assert "::1" in trusted
    assert "198.51.100.200" in trusted
    assert "203.0.113.9" in trusted
    assert "172.16.0.1" not in trusted


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param("10.0.0.1/8", id="host-bits-set"),
        pytest.param("example.com", id="a-name"),
        pytest.param("10.0.0.256", id="bad-octet"),
        pytest.param("", id="empty"),
    ],
)
def test_a_bad_entry_is_a_configuration_error_naming_it(entry: str) -> None:
    with pytest.raises(trio_tcp.ConfigurationError, match="trusted_proxies entry") as info:
        trio_tcp.Listener(0, proxy_protocol=True, trusted_proxies=["10.0.0.0/8", entry])
    assert repr(entry) in str(info.value)


@pytest.mark.parametrize(
    "value",
    [pytest.param("10.0.0.0/8", id="a-str"), pytest.param([10], id="an-int-entry")],
)
def test_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        trio_tcp.Listener(0, proxy_protocol=True, trusted_proxies=value)  # type: ignore[arg-type]


def test_an_empty_list_and_a_list_without_proxy_protocol_are_refused() -> None:
    with pytest.raises(trio_tcp.ConfigurationError, match="empty"):
        trio_tcp.Listener(0, proxy_protocol=True, trusted_proxies=[])
    with pytest.raises(trio_tcp.ConfigurationError, match="proxy_protocol"):
        trio_tcp.Listener(0, trusted_proxies=["10.0.0.0/8"])
    with pytest.raises(trio_tcp.ConfigurationError, match="untrusted_proxy"):
        trio_tcp.Listener(0, proxy_protocol=True, untrusted_proxy="ignore")  # type: ignore[arg-type]


def test_ipv4_mapped_peers_and_networks_are_matched_as_ipv4() -> None:
    trusted = parse_trusted_proxies(["10.0.0.0/8"])
    assert "::ffff:10.1.2.3" in trusted  # a v4 peer on a dual-stack v6 socket
    assert "::ffff:11.1.2.3" not in trusted
    mapped = parse_trusted_proxies(["::ffff:10.0.0.0/104"])
    assert "10.200.0.1" in mapped
    assert "::ffff:10.200.0.1" in mapped


def test_peers_without_an_ip_address_are_unix_socket_peers_and_trusted() -> None:
    trusted = parse_trusted_proxies(["10.0.0.0/8"])
    assert "" in trusted  # an unnamed UNIX-domain peer
    assert "/run/haproxy.sock" in trusted
    assert "fe80::1%eth0" not in trusted  # a zone is stripped, not trusted


# -- over real sockets ------------------------------------------------------------------


@pytest.mark.trio
async def test_a_header_from_an_untrusted_peer_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    with trio.fail_after(5):
        service = Recorder()
        async with serving(service, trusted_proxies=["127.0.0.2"]) as listener:
            assert listener.port is not None
            for _ in range(3):
                stream = await connect_from("127.0.0.1", listener.port)
                await stream.send_all(SPOOFED + b"hello")
                assert await read_all(stream) == b""  # closed at once, nothing served
                await stream.aclose()
            while listener.stats.active_connections:  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert listener.stats.refused == 3
            assert listener.stats.errors == 0
        assert service.callers == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # rate-limited: a flood is one line a second
        assert "127.0.0.1" in warnings[0].getMessage()
        assert "trusted_proxies" in warnings[0].getMessage()


@pytest.mark.trio
async def test_a_header_from_a_trusted_peer_is_honoured() -> None:
    with trio.fail_after(5):
        service = Recorder()
        async with serving(service, trusted_proxies=["127.0.0.2/32"]) as listener:
            assert listener.port is not None
            stream = await connect_from("127.0.0.2", listener.port)
            await stream.send_all(SPOOFED + b"hello")
            assert await stream.receive_some() == b"hello"
            await stream.aclose()
        [caller] = service.callers
        assert (caller.remote_host, caller.remote_port) == ("10.0.0.1", 1111)
        assert caller.proxy is not None
        assert caller.proxy.proxy_host == "127.0.0.2"


@pytest.mark.trio
async def test_direct_policy_serves_an_untrusted_peer_with_its_real_address() -> None:
    with trio.fail_after(5):
        service = Recorder()
        options = {"trusted_proxies": ["127.0.0.2"], "untrusted_proxy": "direct"}
        async with serving(service, **options) as listener:
            assert listener.port is not None
            # A direct client (a health probe, say) sends no header and is served.
            stream = await connect_from("127.0.0.1", listener.port)
            await stream.send_all(b"ping")
            assert await stream.receive_some() == b"ping"
            await stream.aclose()
            # A spoofed header is only bytes of the stream: never an address.
            stream = await connect_from("127.0.0.1", listener.port)
            await stream.send_all(SPOOFED)
            assert await stream.receive_some() == SPOOFED
            await stream.aclose()
        assert [c.remote_host for c in service.callers] == ["127.0.0.1", "127.0.0.1"]
        assert all(c.proxy is None for c in service.callers)


@pytest.mark.trio
async def test_ipv4_peers_of_a_dual_stack_socket_are_matched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if not socket.has_ipv6:  # pragma: no cover - depends on the machine
        pytest.skip("no IPv6 on this machine")
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", 0))
    except OSError:  # pragma: no cover - depends on the machine
        pytest.skip("no dual-stack IPv6 socket here")
    sock.listen()
    port = sock.getsockname()[1]
    with trio.fail_after(5):
        service = Recorder()
        listener = trio_tcp.Listener(0, proxy_protocol=True, trusted_proxies=["127.0.0.2"])
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            trio_listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            await nursery.start(listener.serve_listeners, [trio_listener])
            trusted = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2")
            await trusted.send_all(SPOOFED + b"ok")
            assert await trusted.receive_some() == b"ok"
            await trusted.aclose()
            untrusted = await trio.open_tcp_stream("127.0.0.1", port)
            await untrusted.send_all(SPOOFED + b"no")
            assert await read_all(untrusted) == b""
            await untrusted.aclose()
            await listener.immediate_stop()
        [caller] = service.callers
        assert caller.remote_host == "10.0.0.1"
        assert caller.proxy is not None
        assert caller.proxy.proxy_host == "::ffff:127.0.0.2"
        assert listener.stats.refused == 1


@pytest.mark.trio
async def test_serving_beyond_loopback_without_a_list_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            start = partial(trio_tcp.serve, 0, Recorder(), proxy_protocol=True)
            exposed = await nursery.start(start)  # every interface
            await exposed.immediate_stop()
            local = await nursery.start(partial(start, local_host="127.0.0.1"))
            await local.immediate_stop()
            listed = await nursery.start(partial(start, trusted_proxies=["10.0.0.0/8"]))
            await listed.immediate_stop()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "without trusted_proxies" in warnings[0]


# -- in memory ---------------------------------------------------------------------------


@pytest.mark.trio
async def test_the_check_works_in_memory_too() -> None:
    with trio.fail_after(5):
        service = Recorder()
        async with trio_tcp.testing.open_memory_server(
            service, proxy_protocol=True, trusted_proxies=["192.0.2.0/24"]
        ) as server:
            balancer = await server.open_stream(remote_host="192.0.2.10")
            await balancer.send_all(SPOOFED + b"via the balancer")
            assert await balancer.receive_some() == b"via the balancer"
            stranger = await server.open_stream(remote_host="198.51.100.1")
            await stranger.send_all(SPOOFED + b"spoof")
            assert await read_all(stranger) == b""
            assert server.stats.refused == 1
        assert [c.remote_host for c in service.callers] == ["10.0.0.1"]
