"""Binding: every family on one port, ``SO_REUSEPORT`` on request, failures as ``BindError``.

Host names resolve through a test resolver, so one name can stand for both
loopbacks (as ``localhost`` does on dual-stack hosts), for two IPv4
loopback addresses (a second "family" that needs no IPv6), or for an address
family the machine lacks. Tests that need ``::1`` skip when it is not there.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Callable
from typing import Any

import pytest
import trio

import trio_tcp
import trio_tcp._bind
from trio_tcp import BindError
from trio_tcp._bind import bind_tcp

LOCAL = "127.0.0.1"
#: An address family no kernel supports: stands for IPv6 on a host without it.
MISSING_FAMILY = 255


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1)")

ADDRESSES: dict[str, list[tuple[int, tuple[Any, ...]]]] = {
    "dual.test": [(socket.AF_INET6, ("::1", 0, 0, 0)), (socket.AF_INET, (LOCAL, 0))],
    "two.test": [(socket.AF_INET, (LOCAL, 0)), (socket.AF_INET, ("127.0.0.2", 0))],
    "missing.test": [(MISSING_FAMILY, ("nowhere", 0)), (socket.AF_INET, (LOCAL, 0))],
    "only-missing.test": [(MISSING_FAMILY, ("nowhere", 0))],
}


class _Resolver(trio.abc.HostnameResolver):
    """Resolves the names of :data:`ADDRESSES` (listed twice, as some systems do)."""

    async def getaddrinfo(
        self, host: bytes | None, port: bytes | str | int | None, *args: Any
    ) -> Any:
        await trio.lowlevel.checkpoint()
        assert host is not None
        number = int(port) if port is not None else 0
        found = [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (addr[0], number, *addr[2:]))
            for family, addr in ADDRESSES[host.decode()]
        ]
        return found + found

    async def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        raise NotImplementedError


def resolve_test_names() -> None:
    """Resolve the names of :data:`ADDRESSES` for the rest of this trio run (this test)."""
    trio.socket.set_custom_hostname_resolver(_Resolver())


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def ports(sockets: list[socket.socket]) -> set[int]:
    return {sock.getsockname()[1] for sock in sockets}


# -- one port for every family ---------------------------------------------------------------


@needs_ipv6
@pytest.mark.trio
async def test_port_zero_gives_both_loopbacks_one_port_ipv4_first() -> None:
    resolve_test_names()
    with trio.fail_after(5):
        sockets = await bind_tcp(0, "dual.test", None)
        try:
            assert [sock.family for sock in sockets] == [socket.AF_INET, socket.AF_INET6]
            assert len(ports(sockets)) == 1
            assert ports(sockets) != {0}
        finally:
            close(sockets)


@pytest.mark.trio
async def test_no_host_binds_every_interface_on_one_port() -> None:
    with trio.fail_after(5):
        sockets = await bind_tcp(0, None, None)
        try:
            families = [sock.family for sock in sockets]
            assert families[0] == socket.AF_INET
            if _has_ipv6_loopback():
                assert families == [socket.AF_INET, socket.AF_INET6]
            assert sockets[0].getsockname()[0] == "0.0.0.0"
            assert len(ports(sockets)) == 1
        finally:
            close(sockets)


@pytest.mark.trio
async def test_an_address_listed_twice_is_bound_once() -> None:
    resolve_test_names()
    with trio.fail_after(5):
        sockets = await bind_tcp(0, "two.test", None)
        try:
            assert sorted(sock.getsockname()[0] for sock in sockets) == [LOCAL, "127.0.0.2"]
            assert len(ports(sockets)) == 1
        finally:
            close(sockets)


@pytest.mark.trio
async def test_a_family_the_machine_lacks_is_skipped() -> None:
    resolve_test_names()
    with trio.fail_after(5):
        sockets = await bind_tcp(0, "missing.test", None)
        try:
            assert [sock.getsockname()[0] for sock in sockets] == [LOCAL]
        finally:
            close(sockets)
        with pytest.raises(BindError, match="no supported address family"):
            await bind_tcp(0, "only-missing.test", None)


# -- port 0 taken on a later family: try again ---------------------------------------------


def _occupying_second_address(
    monkeypatch: pytest.MonkeyPatch, times: int
) -> tuple[list[socket.socket], list[socket.socket]]:
    """Make another socket take the chosen port on 127.0.0.2 just before we bind it.

    Returns the sockets bind_tcp made and the occupying ones, for the test to check.
    """
    real_open: Callable[..., socket.socket | None] = trio_tcp._bind._open
    made: list[socket.socket] = []
    occupiers: list[socket.socket] = []

    def open_and_occupy(family: int, *, reuse_port: bool) -> socket.socket | None:
        if made and len(made) % 2 == 1 and len(occupiers) < times:
            # The first address is bound: its port is the chosen one.
            taken = socket.socket()
            taken.bind(("127.0.0.2", made[-1].getsockname()[1]))
            taken.listen()
            occupiers.append(taken)
        sock = real_open(family, reuse_port=reuse_port)
        assert sock is not None
        made.append(sock)
        return sock

    monkeypatch.setattr(trio_tcp._bind, "_open", open_and_occupy)
    return made, occupiers


@pytest.mark.trio
async def test_port_zero_taken_on_a_later_address_is_tried_again_with_a_fresh_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve_test_names()
    with trio.fail_after(5):
        made, occupiers = _occupying_second_address(monkeypatch, times=1)
        sockets = await bind_tcp(0, "two.test", None)
        try:
            assert len(made) == 4  # two attempts
            assert all(sock.fileno() == -1 for sock in made[:2])  # the first closed
            assert sockets == made[2:]
            assert len(ports(sockets)) == 1
            assert ports(sockets) != {occupiers[0].getsockname()[1]}
        finally:
            close(sockets)
            close(occupiers)


@pytest.mark.trio
async def test_port_zero_gives_up_after_repeated_collisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve_test_names()
    with trio.fail_after(5):
        made, occupiers = _occupying_second_address(monkeypatch, times=1000)
        try:
            with pytest.raises(BindError, match="no port free on every address family"):
                await bind_tcp(0, "two.test", None)
            assert len(occupiers) == 8
            assert all(sock.fileno() == -1 for sock in made)
        finally:
            close(occupiers)


@pytest.mark.trio
async def test_a_fixed_port_taken_on_a_later_address_is_a_bind_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolve_test_names()
    with trio.fail_after(5), socket.socket() as free:
        free.bind((LOCAL, 0))
        port = free.getsockname()[1]
        free.close()  # a port that was free a moment ago
        made, occupiers = _occupying_second_address(monkeypatch, times=1)
        try:
            with pytest.raises(BindError, match=r"cannot listen on two\.test") as info:
                await bind_tcp(port, "two.test", None)
            assert isinstance(info.value.__cause__, OSError)
            assert info.value.__cause__.errno == errno.EADDRINUSE
            assert len(made) == 2  # no second attempt: the caller asked for that port
            assert all(sock.fileno() == -1 for sock in made)
        finally:
            close(occupiers)


# -- reuse_port, and ports in use -------------------------------------------------------------


@pytest.mark.trio
async def test_reuse_port_lets_two_binds_share_a_port() -> None:
    with trio.fail_after(5):
        first = await bind_tcp(0, LOCAL, None, reuse_port=True)
        try:
            (port,) = ports(first)
            second = await bind_tcp(port, LOCAL, None, reuse_port=True)
            assert ports(second) == {port}
            close(second)
        finally:
            close(first)


@pytest.mark.trio
@pytest.mark.parametrize("first_reuses", [False, True], ids=["neither", "only-the-first"])
async def test_without_reuse_port_a_second_bind_is_a_bind_error(first_reuses: bool) -> None:
    with trio.fail_after(5):
        first = await bind_tcp(0, LOCAL, None, reuse_port=first_reuses)
        try:
            (port,) = ports(first)
            with pytest.raises(
                BindError, match=re.escape(f"cannot listen on {LOCAL}:{port}")
            ) as info:
                await bind_tcp(port, LOCAL, None)
            assert isinstance(info.value.__cause__, OSError)
            assert info.value.__cause__.errno == errno.EADDRINUSE
        finally:
            close(first)


@pytest.mark.trio
async def test_a_port_in_use_is_a_bind_error_that_says_why() -> None:
    with trio.fail_after(5), socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError) as info:
            await bind_tcp(port, LOCAL, None, reuse_port=True)
        assert str(info.value) == f"cannot listen on {LOCAL}:{port}: Address already in use"
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.EADDRINUSE


@pytest.mark.trio
async def test_an_address_that_is_not_local_is_a_bind_error() -> None:
    with trio.fail_after(5), pytest.raises(BindError, match="address") as info:
        await bind_tcp(0, "192.0.2.1", None)  # TEST-NET-1: never this host's
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EADDRNOTAVAIL


@pytest.mark.trio
async def test_an_unknown_host_is_a_bind_error() -> None:
    # The system's resolver: the name is in a reserved domain that never resolves.
    with trio.fail_after(5), pytest.raises(BindError, match=r"no-such-host\.invalid") as info:
        await bind_tcp(0, "no-such-host.invalid", None)
    assert isinstance(info.value.__cause__, socket.gaierror)


# -- the sockets themselves ------------------------------------------------------------------


class _ListenSpy(socket.socket):
    """A socket that records the backlog it was asked to listen with."""

    backlog: int | None = None

    def listen(self, backlog: int = 0, /) -> None:
        self.backlog = backlog
        super().listen(backlog)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("backlog", "expected"),
    [(None, 0xFFFF), (1, 1), (50, 50), (10**6, 0xFFFF)],
    ids=["default-system-maximum", "one", "fifty", "clamped"],
)
async def test_the_backlog_is_passed_to_listen(
    monkeypatch: pytest.MonkeyPatch, backlog: int | None, expected: int
) -> None:
    resolve_test_names()
    real_open: Callable[..., socket.socket | None] = trio_tcp._bind._open
    spies: list[_ListenSpy] = []

    def spying_open(family: int, *, reuse_port: bool) -> socket.socket | None:
        sock = real_open(family, reuse_port=reuse_port)
        assert sock is not None
        spy = _ListenSpy(sock.family, sock.type, sock.proto, fileno=sock.detach())
        spy.setblocking(False)
        spies.append(spy)
        return spy

    monkeypatch.setattr(trio_tcp._bind, "_open", spying_open)
    with trio.fail_after(5):
        sockets = await bind_tcp(0, "two.test", backlog)
        close(sockets)
    assert [spy.backlog for spy in spies] == [expected, expected]


@pytest.mark.trio
@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuse-port"])
async def test_sockets_are_non_blocking_listening_with_their_options(reuse_port: bool) -> None:
    resolve_test_names()
    host = "dual.test" if _has_ipv6_loopback() else LOCAL
    with trio.fail_after(5):
        sockets = await bind_tcp(0, host, None, reuse_port=reuse_port)
        try:
            for sock in sockets:
                assert sock.gettimeout() == 0.0
                assert sock.type == socket.SOCK_STREAM
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
                assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)) == reuse_port
                if sock.family == socket.AF_INET6:
                    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        finally:
            close(sockets)


# -- the public open_tcp_listeners ------------------------------------------------------------


@pytest.mark.trio
async def test_open_tcp_listeners_serves_one_port_for_every_address() -> None:
    resolve_test_names()
    with trio.fail_after(5):
        listeners = await trio_tcp.open_tcp_listeners(0, host="two.test", reuse_port=True)
        try:
            assert all(isinstance(each, trio.SocketListener) for each in listeners)
            names = [each.socket.getsockname() for each in listeners]
            assert sorted(name[0] for name in names) == [LOCAL, "127.0.0.2"]
            assert len({name[1] for name in names}) == 1
            assert all(
                each.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for each in listeners
            )

            async def echo_once(stream: trio.SocketStream) -> None:
                await stream.send_all(await stream.receive_some())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, echo_once, listeners)
                for address, port in names:
                    stream = await trio.open_tcp_stream(address, port)
                    await stream.send_all(b"ping")
                    assert await stream.receive_some() == b"ping"
                    await stream.aclose()
                nursery.cancel_scope.cancel()
        finally:
            for each in listeners:
                await each.aclose()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"port": 70000}, trio_tcp.ConfigurationError, "port must be between 0 and 65535"),
        ({"port": 0, "backlog": 0}, trio_tcp.ConfigurationError, "backlog must be at least 1"),
        ({"port": 0, "host": ""}, trio_tcp.ConfigurationError, "host must not be empty"),
        ({"port": "80"}, TypeError, "port must be an int"),
        ({"port": 0, "reuse_port": 1}, TypeError, "reuse_port"),
    ],
    ids=["port-out-of-range", "backlog-zero", "empty-host", "port-as-text", "flag-as-int"],
)
async def test_open_tcp_listeners_refuses_bad_arguments_before_binding(
    monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def must_not_bind(*args: object, **kwargs: object) -> list[socket.socket]:
        raise AssertionError("bound despite a bad argument")

    monkeypatch.setattr(trio_tcp._bind, "bind_tcp", must_not_bind)
    with trio.fail_after(5), pytest.raises(error, match=message):
        await trio_tcp.open_tcp_listeners(**arguments)


@pytest.mark.trio
async def test_open_tcp_listeners_reports_a_port_in_use_as_a_bind_error() -> None:
    with trio.fail_after(5), socket.socket() as taken:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match=re.escape(f"cannot listen on {LOCAL}:{port}")):
            await trio_tcp.open_tcp_listeners(port, host=LOCAL)
