"""``Listener.serve_listeners``: the service on listeners opened elsewhere.

UNIX-domain sockets, sockets opened before the server (inherited from
systemd or a supervisor), a ``trio.SSLListener``, several at once; and a
ready ``ssl.SSLContext`` as ``secure_socket``.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually

import trio_tcp

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")


class Echo(trio_tcp.ConnectionService):
    async def on_bytes(self, data: bytes) -> bytes:
        return data


class Hub:
    """Echoes on every connection, and keeps the callers."""

    def __init__(self) -> None:
        self.callers: list[trio_tcp.Caller] = []
        self.closes = 0

    async def on_connect(self, caller: trio_tcp.Caller) -> Echo:
        self.callers.append(caller)
        hub = self

        class Counted(Echo):
            async def on_close(self) -> None:
                hub.closes += 1

        return Counted()


@contextmanager
def short_directory() -> Iterator[Path]:
    # A UNIX socket path has to fit in about 100 bytes: pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="tt-", dir="/tmp") as name:
        yield Path(name)


def unix_listener(path: Path) -> trio.SocketListener:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def inherited_tcp_listener() -> tuple[trio.SocketListener, socket.socket]:
    """A listening socket opened "by someone else", as systemd passes one (a dup'ed fd)."""
    original = socket.create_server(("127.0.0.1", 0))
    inherited = socket.socket(fileno=os.dup(original.fileno()))
    original.close()
    return trio.SocketListener(trio.socket.from_stdlib_socket(inherited)), inherited


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def serving(
    listener: trio_tcp.Listener, listeners: Listeners, service: Any = None
) -> AsyncIterator[trio_tcp.Listener]:
    """``listener`` serving ``listeners`` (and ``service``, a Hub by default) for the block."""
    listener.attach(Hub() if service is None else service)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(listener.serve_listeners, listeners))
        yield listener
        await listener.graceful_stop()


async def echo_over(stream: trio.abc.Stream) -> bytes:
    async with stream:
        await stream.send_all(b"ping")
        received = b""
        while len(received) < 4:
            chunk = await stream.receive_some()
            assert chunk
            received += chunk
        return received


# -- UNIX-domain sockets -----------------------------------------------------------


@pytest.mark.trio
async def test_a_unix_socket_is_served_with_no_port_and_path_addresses() -> None:
    with trio.fail_after(5), short_directory() as directory:
        path = directory / "app.sock"
        hub = Hub()
        async with serving(trio_tcp.Listener(0), [unix_listener(path)], hub) as listener:
            assert listener.port is None  # no TCP port to report
            assert await echo_over(await trio.open_unix_socket(str(path))) == b"ping"
            [caller] = hub.callers
            # The client's socket is unbound: it has no name. The server's is the path.
            assert (caller.remote_host, caller.remote_port) == ("", 0)
            assert (caller.local_host, caller.local_port) == (str(path), 0)
            # A client that binds its socket to a path of its own is known by it.
            client_path = directory / "client.sock"
            client = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await client.bind(str(client_path))
            await client.connect(str(path))
            assert await echo_over(trio.SocketStream(client)) == b"ping"
            assert hub.callers[1].remote_host == str(client_path)
        assert hub.closes == 2
        assert listener.stats.total_connections == 2


@pytest.mark.trio
async def test_a_unix_socket_with_a_trio_tcp_client() -> None:
    with trio.fail_after(5), short_directory() as directory:
        path = directory / "app.sock"
        async with serving(trio_tcp.Listener(0), [unix_listener(path)]):
            stream = await trio.open_unix_socket(str(path))
            async with trio_tcp.Client(stream) as client:
                await client.write_bytes(b"hello")
                assert await client.read_exactly(5) == b"hello"


@pytest.mark.trio
async def test_the_listener_options_apply_on_a_unix_socket() -> None:
    with trio.fail_after(10), short_directory() as directory:
        path = directory / "app.sock"
        hub = Hub()
        options: dict[str, Any] = {"max_connections": 1, "proxy_protocol": True}
        async with serving(trio_tcp.Listener(0, **options), [unix_listener(path)], hub) as served:
            # Behind a local proxy: its PROXY header names the real client.
            first = await trio.open_unix_socket(str(path))
            await first.send_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 41000 443\r\nping")
            assert await first.receive_some() == b"ping"
            assert (hub.callers[0].remote_host, hub.callers[0].remote_port) == (
                "198.51.100.7",
                41000,
            )
            # At the limit, a second client waits in the backlog until the first leaves.
            second = await trio.open_unix_socket(str(path))
            await second.send_all(b"PROXY TCP4 198.51.100.8 192.0.2.1 41001 443\r\npong")
            await trio.testing.wait_all_tasks_blocked()
            assert len(hub.callers) == 1
            await first.aclose()
            assert await second.receive_some() == b"pong"
            assert len(hub.callers) == 2
            await second.aclose()
            await eventually(lambda: served.stats.active_connections == 0)
        assert served.stats.total_connections == 2


@pytest.mark.trio
async def test_a_unix_peer_counts_as_a_trusted_proxy() -> None:
    with trio.fail_after(5), short_directory() as directory:
        path = directory / "app.sock"
        hub = Hub()
        options: dict[str, Any] = {"proxy_protocol": True, "trusted_proxies": ["10.0.0.0/8"]}
        async with serving(trio_tcp.Listener(0, **options), [unix_listener(path)], hub) as served:
            async with await trio.open_unix_socket(str(path)) as stream:
                await stream.send_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 41000 443\r\nping")
                assert await stream.receive_some() == b"ping"
            assert hub.callers[0].remote_host == "198.51.100.7"
            assert served.stats.refused == 0


@pytest.mark.trio
async def test_an_idle_timeout_on_a_unix_socket(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600), short_directory() as directory:
        path = directory / "app.sock"
        hub = Hub()
        listener = trio_tcp.Listener(0, idle_timeout=60)
        async with serving(listener, [unix_listener(path)], hub):
            async with await trio.open_unix_socket(str(path)) as stream:
                await stream.send_all(b"x")
                assert await stream.receive_some() == b"x"
                start = trio.current_time()
                assert await stream.receive_some() == b""  # closed by the server
                assert trio.current_time() - start >= 60
            await eventually(lambda: hub.closes == 1)


# -- sockets opened elsewhere --------------------------------------------------------


@pytest.mark.trio
async def test_an_inherited_socket_is_served_and_closed_on_return() -> None:
    with trio.fail_after(5):
        trio_listener, inherited = inherited_tcp_listener()
        port = inherited.getsockname()[1]
        async with serving(trio_tcp.Listener(0), [trio_listener]) as listener:
            assert listener.port == port
            assert await echo_over(await trio.open_tcp_stream("127.0.0.1", port)) == b"ping"
        assert inherited.fileno() == -1  # the listeners belong to serve_listeners
        with pytest.raises(OSError, match="failed"):
            await trio.open_tcp_stream("127.0.0.1", port)  # nobody listens there now


@pytest.mark.trio
async def test_several_listeners_at_once(ca: trustme.CA, server_leaf: trustme.LeafCert) -> None:
    with trio.fail_after(10), short_directory() as directory:
        path = directory / "app.sock"
        tcp, inherited = inherited_tcp_listener()
        port = inherited.getsockname()[1]
        tls_tcp, tls_socket = inherited_tcp_listener()
        tls = trio.SSLListener(tls_tcp, server_context(server_leaf))
        unix = unix_listener(path)
        hub = Hub()
        async with serving(trio_tcp.Listener(0), [tcp, unix, tls], hub) as listener:
            assert listener.port == port  # the first that has one
            assert await echo_over(await trio.open_tcp_stream("127.0.0.1", port)) == b"ping"
            assert await echo_over(await trio.open_unix_socket(str(path))) == b"ping"
            secure = client_context(ca)
            tls_port = tls_socket.getsockname()[1]
            async with await trio_tcp.Client.connect(
                "127.0.0.1", tls_port, secure_socket=secure
            ) as client:
                await client.write_bytes(b"tls")
                assert await client.read_exactly(3) == b"tls"
            assert [caller.is_secure for caller in hub.callers] == [False, False, True]
        for sock in (inherited, tls_socket, unix.socket):
            assert sock.fileno() == -1
        assert not path.exists() or not _accepts(path)


def _accepts(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest.mark.parametrize("stop", ["graceful", "immediate", "cancelled"])
@pytest.mark.trio
async def test_the_listeners_are_closed_however_serving_ends(stop: str) -> None:
    with trio.fail_after(5), short_directory() as directory:
        tcp, inherited = inherited_tcp_listener()
        unix = unix_listener(directory / "app.sock")
        listener = trio_tcp.Listener(0)
        listener.attach(Hub())
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(listener.serve_listeners, [tcp, unix]))
            if stop == "graceful":
                await listener.graceful_stop()
            elif stop == "immediate":
                await listener.immediate_stop()
            else:
                nursery.cancel_scope.cancel()
        assert inherited.fileno() == -1
        assert unix.socket.fileno() == -1
        assert listener.port is None


@pytest.mark.trio
async def test_an_unusable_secure_socket_closes_the_listeners_it_was_given(
    tmp_path: Path,
) -> None:
    with trio.fail_after(5):
        tcp, inherited = inherited_tcp_listener()
        missing = trio_tcp.CertKey(
            cert_file=str(tmp_path / "no.crt"), key_file=str(tmp_path / "no.key")
        )
        listener = trio_tcp.Listener(0, secure_socket=trio_tcp.ListenerSecureSocket(key=missing))
        listener.attach(Hub())
        with pytest.raises(trio_tcp.ConfigurationError):
            await listener.serve_listeners([tcp])
        assert inherited.fileno() == -1
        assert listener.port is None


@pytest.mark.trio
async def test_serve_listeners_needs_a_listener_and_an_idle_listener() -> None:
    with trio.fail_after(5):
        listener = trio_tcp.Listener(0)
        listener.attach(Hub())
        with pytest.raises(ValueError, match="at least one"):
            await listener.serve_listeners([])
        tcp, _ = inherited_tcp_listener()
        async with serving(trio_tcp.Listener(0), [tcp]) as busy:
            other, other_socket = inherited_tcp_listener()
            try:
                with pytest.raises(trio_tcp.UsageError):
                    await busy.serve_listeners([other])
            finally:
                other_socket.close()


@pytest.mark.trio
async def test_listeners_refused_by_a_busy_listener_are_closed_too() -> None:
    with trio.fail_after(5):
        tcp, _ = inherited_tcp_listener()
        async with serving(trio_tcp.Listener(0), [tcp]) as busy:
            other, other_socket = inherited_tcp_listener()
            try:
                with pytest.raises(trio_tcp.UsageError):
                    await busy.serve_listeners([other])
                assert other_socket.fileno() == -1  # "closed when it returns"
            finally:
                other_socket.close()


# -- TLS ----------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_trio_ssl_listener_is_served_with_its_own_tls(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    with trio.fail_after(10):
        tcp, inherited = inherited_tcp_listener()
        port = inherited.getsockname()[1]
        tls = trio.SSLListener(tcp, server_context(server_leaf))
        hub = Hub()
        async with serving(trio_tcp.Listener(0), [tls], hub) as listener:
            assert listener.port == port  # found through the TLS layer
            async with await trio_tcp.Client.connect(
                "127.0.0.1", port, secure_socket=client_context(ca)
            ) as client:
                await client.write_bytes(b"secret")
                assert await client.read_exactly(6) == b"secret"
            [caller] = hub.callers
            assert caller.is_secure
            assert caller.tls_version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.trio
async def test_a_proxy_header_comes_before_the_tls_of_a_trio_ssl_listener(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    with trio.fail_after(10):
        tcp, inherited = inherited_tcp_listener()
        tls = trio.SSLListener(tcp, server_context(server_leaf))
        hub = Hub()
        async with serving(trio_tcp.Listener(0, proxy_protocol=True), [tls], hub):
            raw = await trio.open_tcp_stream("127.0.0.1", inherited.getsockname()[1])
            await raw.send_all(b"PROXY TCP4 198.51.100.7 192.0.2.1 41000 443\r\n")
            stream = trio.SSLStream(raw, client_context(ca), server_hostname="localhost")
            assert await echo_over(stream) == b"ping"
            [caller] = hub.callers
            assert (caller.remote_host, caller.remote_port, caller.is_secure) == (
                "198.51.100.7",
                41000,
                True,
            )


@pytest.mark.trio
async def test_secure_socket_is_not_layered_on_a_trio_ssl_listener(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    # The SSLListener's own context does the TLS; secure_socket adds no second layer.
    with trio.fail_after(10):
        other_ca = trustme.CA()
        unused = server_context(other_ca.issue_cert("127.0.0.1"))
        tcp, inherited = inherited_tcp_listener()
        tls = trio.SSLListener(tcp, server_context(server_leaf))
        async with serving(trio_tcp.Listener(0, secure_socket=unused), [tls]):
            port = inherited.getsockname()[1]
            async with await trio_tcp.Client.connect(
                "127.0.0.1", port, secure_socket=client_context(ca)
            ) as client:
                await client.write_bytes(b"once")
                assert await client.read_exactly(4) == b"once"


@pytest.mark.trio
async def test_secure_socket_wraps_a_plain_listener(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    with trio.fail_after(10), short_directory() as directory:
        path = directory / "tls.sock"
        listener = trio_tcp.Listener(0, secure_socket=server_context(server_leaf))
        hub = Hub()
        async with serving(listener, [unix_listener(path)], hub):
            stream = await trio.open_unix_socket(str(path))
            tls = trio.SSLStream(stream, client_context(ca), server_hostname="localhost")
            assert await echo_over(tls) == b"ping"
            assert hub.callers[0].is_secure


@pytest.mark.trio
async def test_a_ready_server_context_made_with_trustme(
    ca: trustme.CA, server_leaf: trustme.LeafCert
) -> None:
    with trio.fail_after(10):
        hub = Hub()
        secure = server_context(server_leaf)
        async with trio.open_nursery() as nursery:
            serve = functools.partial(
                trio_tcp.serve, 0, hub, local_host="127.0.0.1", secure_socket=secure
            )
            listener = await nursery.start(serve)
            async with await trio_tcp.Client.connect(
                "127.0.0.1", listener.port, secure_socket=client_context(ca)
            ) as client:
                assert client.is_secure
                await client.write_bytes(b"hi")
                assert await client.read_exactly(2) == b"hi"
            with pytest.raises(trio_tcp.TLSError):
                await trio_tcp.Client.connect(
                    "127.0.0.1", listener.port, secure_socket=ssl.create_default_context()
                )
            await listener.graceful_stop()
        assert hub.callers[0].is_secure


def test_a_client_side_context_is_refused_as_a_listeners_secure_socket() -> None:
    with pytest.raises(trio_tcp.ConfigurationError, match="client-side"):
        trio_tcp.Listener(0, secure_socket=ssl.create_default_context())


@pytest.mark.parametrize("value", ["server.pem", b"x", 1, object()], ids=repr)
def test_a_secure_socket_of_the_wrong_type_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="secure_socket"):
        trio_tcp.Listener(0, secure_socket=value)  # type: ignore[arg-type]
