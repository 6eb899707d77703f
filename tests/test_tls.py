"""TLS end to end: real handshakes between a ``Listener`` and a ``Client`` over loopback.

Certificates come from trustme (session-scoped, written to a temporary
directory); most tests run once per TLS version. Besides the happy paths they cover
handshake timeouts, garbage and plain clients on a TLS port, ragged EOF, large
writes, mutual TLS, bad certificates, and version and cipher mismatches.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from _loopback import eventually, port_of, read_until_eof
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

import trio_tcp
from trio_tcp import (
    CertKey,
    ClientSecureSocket,
    KeyStore,
    ListenerSecureSocket,
    TLSProtocol,
    TrustStore,
)
from trio_tcp._errors import handshake_error
from trio_tcp._handshake import send_tls_alert

PASSWORD = "Pkcs12-s3cret-for-tests"
VERSIONS = ["TLSv1.2", "TLSv1.3"]
#: A short handshake timeout for the tests that wait for it (real time).
SHORT = 0.3
#: Slack on top of a timeout before the test calls it late (loaded CI machines).
SLACK = 0.5


# -- certificates ------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """Every certificate and key file the tests use, in one temporary directory."""

    dir: Path
    ca: Path  # the CA everything good chains to
    server_crt: Path  # localhost, 127.0.0.1, ::1 (leaf only)
    server_key: Path
    client_crt: Path  # client.example.org, from the same CA
    client_key: Path
    other_ca: Path  # an unrelated CA
    other_server_crt: Path  # localhost, from the other CA
    other_server_key: Path
    other_client_crt: Path  # a client certificate from the other CA
    other_client_key: Path
    expired_crt: Path  # localhost, from the good CA, expired yesterday
    expired_key: Path
    server_p12: Path  # server key + certificate, PASSWORD
    trust_p12: Path  # the CA certificate only, PASSWORD
    client_p12: Path  # client key + certificate, PASSWORD
    garbage: Path


def _p12(leaf: trustme.LeafCert | None, cas: list[trustme.CA]) -> bytes:
    key = cert = None
    if leaf is not None:
        key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
        cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    extra = [x509.load_pem_x509_certificate(ca.cert_pem.bytes()) for ca in cas]
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    return pkcs12.serialize_key_and_certificates(
        b"trio_tcp",
        key,  # type: ignore[arg-type]
        cert,
        extra or None,
        encryption,
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("tls-e2e")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "::1")
    client = ca.issue_cert("client.example.org")
    other_server = other.issue_cert("localhost", "127.0.0.1", "::1")
    other_client = other.issue_cert("client.example.org")
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.issue_cert(
        "localhost",
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    files: dict[str, bytes] = {
        "ca": ca.cert_pem.bytes(),
        "server_crt": server.cert_chain_pems[0].bytes(),
        "server_key": server.private_key_pem.bytes(),
        "client_crt": client.cert_chain_pems[0].bytes(),
        "client_key": client.private_key_pem.bytes(),
        "other_ca": other.cert_pem.bytes(),
        "other_server_crt": other_server.cert_chain_pems[0].bytes(),
        "other_server_key": other_server.private_key_pem.bytes(),
        "other_client_crt": other_client.cert_chain_pems[0].bytes(),
        "other_client_key": other_client.private_key_pem.bytes(),
        "expired_crt": expired.cert_chain_pems[0].bytes(),
        "expired_key": expired.private_key_pem.bytes(),
        "server_p12": _p12(server, []),
        "trust_p12": _p12(None, [ca]),
        "client_p12": _p12(client, []),
        "garbage": b"this is not a certificate\n",
    }
    paths: dict[str, Path] = {}
    for name, data in files.items():
        paths[name] = directory / name
        paths[name].write_bytes(data)
    return Certs(dir=directory, **paths)


@pytest.fixture(params=VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    """The one TLS version the listener allows (the client allows both)."""
    value: str = request.param
    return value


def server_tls(certs: Certs, version: str | None = None, **options: Any) -> ListenerSecureSocket:
    """The listener's settings: the good server certificate, one TLS version if given."""
    if version is not None:
        options["protocol"] = TLSProtocol(versions=(version,))
    return ListenerSecureSocket(
        key=CertKey(cert_file=certs.server_crt, key_file=certs.server_key), **options
    )


def client_tls(certs: Certs, **options: Any) -> ClientSecureSocket:
    """The client's settings: trust the good CA."""
    options.setdefault("cert", certs.ca)
    return ClientSecureSocket(**options)


def client_cert(certs: Certs) -> CertKey:
    return CertKey(cert_file=certs.client_crt, key_file=certs.client_key)


# -- a recording service and a listener to run it -------------------------------------


class Recorder(trio_tcp.Service):
    """Records every callback of every connection; echoes unless told not to."""

    def __init__(self, *, echo: bool = True) -> None:
        self.echo = echo
        self.callers: list[trio_tcp.Caller] = []
        self.received: list[bytes] = []
        self.errors: list[trio_tcp.Error] = []
        self.closes = 0

    @property
    def callbacks(self) -> int:
        """How many callbacks of any kind ran."""
        return len(self.callers) + len(self.received) + len(self.errors) + self.closes

    async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
        self.callers.append(caller)
        return _Recording(self)


class _Recording(trio_tcp.ConnectionService):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def on_bytes(self, data: bytes) -> bytes | None:
        self.recorder.received.append(data)
        return data if self.recorder.echo else None

    async def on_error(self, err: trio_tcp.Error) -> None:
        self.recorder.errors.append(err)

    async def on_close(self) -> None:
        self.recorder.closes += 1


@asynccontextmanager
async def serving(
    service: trio_tcp.Service,
    secure_socket: ListenerSecureSocket | None = None,
    **options: Any,
) -> AsyncIterator[trio_tcp.Listener]:
    """A listener on port 0 (every address family) serving ``service`` until the block ends."""
    listener = trio_tcp.Listener(0, secure_socket=secure_socket, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.serve)
        yield listener
        await listener.immediate_stop()


async def ended(listener: trio_tcp.Listener, total: int) -> None:
    """Wait until ``total`` connections were accepted and none is active any more."""
    await eventually(
        lambda: listener.stats.total_connections == total and listener.stats.active_connections == 0
    )


async def echo_once(client: trio_tcp.Client, payload: bytes = b"ping") -> None:
    await client.write_bytes(payload)
    assert await client.read_exactly(len(payload)) == payload


def handshake_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("TLS handshake from")]


def client_hello() -> bytes:
    """A real ClientHello, as the first flight of a Python client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# -- the user's code, as written -------------------------------------------------------


@pytest.mark.trio
async def test_the_code_users_write_works_as_written(
    certs: Certs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # public.crt is the server's own certificate (not a CA): the client pins it.
    for name, source in (("public.crt", certs.server_crt), ("private.key", certs.server_key)):
        (tmp_path / name).write_bytes(source.read_bytes())
    monkeypatch.chdir(tmp_path)  # the relative paths, as users write them
    with trio.fail_after(10):
        secure_socket = trio_tcp.ListenerSecureSocket(
            key=trio_tcp.CertKey(cert_file="public.crt", key_file="private.key")
        )
        # Port 0 stands in for 9002; local_host=None binds IPv4 and IPv6 on one port,
        # so "localhost" works whichever address it resolves to first.
        listener = trio_tcp.Listener(0, secure_socket=secure_socket)
        service = Recorder()
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            client = await trio_tcp.Client.connect(
                "localhost",
                port_of(listener),
                secure_socket=trio_tcp.ClientSecureSocket(cert="public.crt"),
            )
            async with client:
                assert client.is_secure
                await echo_once(client, b"Hello from a trio_tcp client")
            await listener.graceful_stop()
        assert service.errors == []
        assert service.closes == 1


# -- what both sides see after the handshake --------------------------------------------


@pytest.mark.trio
async def test_version_cipher_and_certificates_on_both_sides(certs: Certs, version: str) -> None:
    with trio.fail_after(10):
        service = Recorder()
        async with (
            serving(service, server_tls(certs, version)) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=client_tls(certs)
            ) as client,
        ):
            await echo_once(client)
            [caller] = service.callers
            assert client.tls_version == caller.tls_version == version
            assert client.cipher is not None
            assert client.cipher == caller.cipher
            if version == "TLSv1.3":
                assert client.cipher.startswith("TLS_")  # a TLS 1.3 suite
            else:
                assert "ECDHE" in client.cipher
            assert client.peer_certificate is not None
            assert ("DNS", "localhost") in client.peer_certificate["subjectAltName"]
            # No client certificate was asked for: the Caller has none.
            assert caller.peer_certificate is None
            assert caller.is_secure


@pytest.mark.trio
async def test_mutual_tls_shows_the_client_certificate_to_the_caller(
    certs: Certs, version: str
) -> None:
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, version, client_auth="require", client_cert=certs.ca)
        async with serving(service, config) as listener:
            tls = client_tls(certs, key=client_cert(certs))
            async with await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=tls
            ) as client:
                await echo_once(client)
                [caller] = service.callers
                assert caller.peer_certificate is not None
                assert ("DNS", "client.example.org") in caller.peer_certificate["subjectAltName"]
                assert client.peer_certificate is not None
                assert ("DNS", "localhost") in client.peer_certificate["subjectAltName"]
        assert service.errors == []


@pytest.mark.trio
async def test_keystore_on_the_listener_and_truststore_on_the_client(
    certs: Certs, version: str
) -> None:
    with trio.fail_after(10):
        service = Recorder()
        config = ListenerSecureSocket(
            key=KeyStore(path=certs.server_p12, password=PASSWORD),
            protocol=TLSProtocol(versions=(version,)),
            client_auth="require",
            client_cert=TrustStore(path=certs.trust_p12, password=PASSWORD),
        )
        tls = ClientSecureSocket(
            cert=TrustStore(path=certs.trust_p12, password=PASSWORD),
            key=KeyStore(path=certs.client_p12, password=PASSWORD),
        )
        async with (
            serving(service, config) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=tls
            ) as client,
        ):
            await echo_once(client)
            assert client.tls_version == version
            [caller] = service.callers
            assert caller.peer_certificate is not None


@pytest.mark.trio
async def test_a_ready_ssl_context_is_used_as_it_is(certs: Certs) -> None:
    with trio.fail_after(10):
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        async with (
            serving(Recorder(), server_tls(certs)) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=context
            ) as client,
        ):
            await echo_once(client)
            assert client.tls_version == "TLSv1.2"  # the context's own limit


@pytest.mark.trio
async def test_a_ready_ssl_context_still_verifies_the_host_name(certs: Certs) -> None:
    with trio.fail_after(10):
        context = ssl.create_default_context(cafile=str(certs.other_ca))
        async with serving(Recorder(), server_tls(certs)) as listener:
            with pytest.raises(trio_tcp.TLSError, match="verification failed"):
                await trio_tcp.Client.connect("localhost", port_of(listener), secure_socket=context)


@pytest.mark.trio
async def test_enable_false_is_plain_tcp_and_ignores_every_other_field(certs: Certs) -> None:
    with trio.fail_after(10):
        plain = ClientSecureSocket(
            enable=False,
            cert="/no/such/ca.pem",
            ciphers=("NOT-A-CIPHER",),
            server_name="wrong.example",
        )
        service = Recorder()
        async with (
            serving(service) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=plain
            ) as client,
        ):
            await echo_once(client)
            assert not client.is_secure
            assert client.tls_version is None
            assert client.cipher is None
            assert client.peer_certificate is None
            assert not service.callers[0].is_secure


# -- silent and half-finished handshakes --------------------------------------------


@pytest.mark.trio
async def test_silent_and_half_hello_clients_are_dropped_while_others_are_served(
    certs: Certs, version: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    timeout = 0.5
    silent_count = 50
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, version, handshake_timeout=timeout)
        async with serving(service, config) as listener:
            port = port_of(listener)
            start = trio.current_time()
            stuck = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(silent_count)]
            half = await trio.open_tcp_stream("127.0.0.1", port)
            hello = client_hello()
            await half.send_all(hello[: len(hello) // 2])
            stuck.append(half)
            dropped_after: list[float] = []

            async def wait_dropped(stream: trio.SocketStream) -> None:
                async with stream:
                    assert await read_until_eof(stream) == (b"", False)
                dropped_after.append(trio.current_time() - start)

            async with trio.open_nursery() as nursery:
                for stream in stuck:
                    nursery.start_soon(wait_dropped, stream)
                # All of them are stuck in their handshakes; a good client is served meanwhile.
                async with await trio_tcp.Client.connect(
                    "localhost", port, secure_socket=client_tls(certs)
                ) as good:
                    await echo_once(good)
                assert trio.current_time() - start < timeout, "the good client waited"
                assert dropped_after == []
            assert len(dropped_after) == len(stuck)
            assert timeout - 0.05 <= min(dropped_after)
            assert max(dropped_after) <= timeout + SLACK
            await ended(listener, total=len(stuck) + 1)
        assert len(service.callers) == 1
        assert service.errors == []
        assert listener.stats.errors == len(stuck)
        # Said at INFO, rate-limited: a flood of silent peers is one line, not fifty.
        timed_out = [r for r in handshake_logs(caplog) if "timed out" in r.getMessage()]
        assert 1 <= len(timed_out) <= 2
        assert {r.levelno for r in timed_out} == {logging.INFO}


@pytest.mark.trio
async def test_a_mute_server_fails_the_client_handshake_at_its_timeout(certs: Certs) -> None:
    """A server that accepts and never answers: connect fails at handshake_timeout."""

    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, mute, 0)
            port = listeners[0].socket.getsockname()[1]
            start = trio.current_time()
            with pytest.raises(trio_tcp.TLSError, match=r"timed out after 0\.3 s"):
                await trio_tcp.Client.connect(
                    "127.0.0.1", port, secure_socket=client_tls(certs, handshake_timeout=SHORT)
                )
            assert SHORT - 0.05 <= trio.current_time() - start <= SHORT + SLACK
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_ready_ssl_context_gets_the_default_handshake_timeout(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default (10 s) shortened, so the test can wait for it.
    monkeypatch.setattr("trio_tcp._tls.DEFAULT_HANDSHAKE_TIMEOUT", SHORT)

    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, mute, 0)
            port = listeners[0].socket.getsockname()[1]
            context = ssl.create_default_context(cafile=str(certs.ca))
            start = trio.current_time()
            with pytest.raises(trio_tcp.TLSError, match="timed out"):
                await trio_tcp.Client.connect("127.0.0.1", port, secure_socket=context)
            assert trio.current_time() - start <= SHORT + SLACK
            nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_stop_does_not_wait_for_a_pending_handshake(certs: Certs) -> None:
    """A silent client must not hold graceful_stop open for the whole handshake_timeout."""
    with trio.fail_after(10):
        service = Recorder()
        listener = trio_tcp.Listener(0, secure_socket=server_tls(certs))  # 10 s timeout
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            silent = await trio.open_tcp_stream("127.0.0.1", port_of(listener))
            await eventually(lambda: listener.stats.active_connections == 1)
            start = trio.current_time()
            await listener.graceful_stop()
            assert trio.current_time() - start < 1.0
        async with silent:
            assert await read_until_eof(silent) == (b"", False)
        assert service.callbacks == 0


# -- what is not TLS, on a TLS port, and the other way round ------------------


@pytest.mark.parametrize(
    ("first_bytes", "reason"),
    [
        pytest.param(b"\x00garbage", "WRONG_VERSION_NUMBER", id="garbage"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "HTTP_REQUEST", id="http"),
        pytest.param(b"\x16\x03\x01\x00\x05hello" * 100, "TLS", id="bogus-handshake"),
    ],
)
@pytest.mark.trio
async def test_not_tls_is_dropped_quickly_with_one_info_line_each(
    certs: Certs, first_bytes: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    peers = 20
    with trio.fail_after(10):
        service = Recorder()
        # A long handshake timeout: being dropped quickly is not the timeout's doing.
        async with serving(service, server_tls(certs, handshake_timeout=5)) as listener:
            port = port_of(listener)

            async def peer() -> None:
                start = trio.current_time()
                async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                    await stream.send_all(first_bytes)
                    await read_until_eof(stream)
                assert trio.current_time() - start < 1.0

            async with trio.open_nursery() as nursery:
                for _ in range(peers):
                    nursery.start_soon(peer)
            await ended(listener, total=peers)
            # The listener is healthy afterwards.
            async with await trio_tcp.Client.connect(
                "localhost", port, secure_socket=client_tls(certs)
            ) as good:
                await echo_once(good)
        assert len(service.callers) == 1
        assert service.received == [b"ping"]
        assert service.errors == []
        assert listener.stats.errors == peers
        records = handshake_logs(caplog)
        assert 1 <= len(records) <= 2  # rate-limited: no flood
        assert {r.levelno for r in records} == {logging.INFO}
        assert all(reason in r.getMessage() for r in records)
        assert max(r.levelno for r in caplog.records) <= logging.INFO


@pytest.mark.trio
async def test_plaintext_before_the_handshake_never_reaches_the_service(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """CVE-2023-40217's shape: data, then an immediate close, before any handshake."""
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    with trio.fail_after(10):
        service = Recorder()
        async with serving(service, server_tls(certs)) as listener:
            for _ in range(5):
                stream = await trio.open_tcp_stream("127.0.0.1", port_of(listener))
                await stream.send_all(b"evil")
                await stream.aclose()
            await ended(listener, total=5)
        assert service.callbacks == 0
        assert listener.stats.errors == 5
        assert handshake_logs(caplog)
        assert max(r.levelno for r in caplog.records) <= logging.INFO


@pytest.mark.parametrize("echo", [False, True], ids=["silent-server", "echoing-server"])
@pytest.mark.trio
async def test_tls_client_to_a_plain_listener(certs: Certs, echo: bool) -> None:
    """Client.connect raises TLSError, at the latest when handshake_timeout expires."""
    with trio.fail_after(10):
        async with serving(Recorder(echo=echo)) as listener:
            start = trio.current_time()
            with pytest.raises(trio_tcp.TLSError) as info:
                await trio_tcp.Client.connect(
                    "localhost",
                    port_of(listener),
                    secure_socket=client_tls(certs, handshake_timeout=SHORT),
                )
            assert trio.current_time() - start <= SHORT + SLACK
            if not echo:
                assert "timed out" in str(info.value)


@pytest.mark.trio
async def test_plain_client_to_a_tls_listener(certs: Certs) -> None:
    with trio.fail_after(10):
        service = Recorder()
        async with serving(service, server_tls(certs)) as listener:
            async with await trio_tcp.Client.connect("localhost", port_of(listener)) as client:
                await client.write_bytes(b"hello, anyone?\n")
                with pytest.raises(trio_tcp.ConnectionClosedError):
                    await client.read_bytes()
            await ended(listener, total=1)
        assert service.callbacks == 0


# -- ragged EOF and clean close_notify -----------------------------------------------


def _ragged_stdlib_client(port: int, cafile: str, payload: bytes) -> None:
    """A blocking stdlib client that sends, then closes the socket without close_notify."""
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(payload)
        tls.close()  # no unwrap(): the TCP connection just ends


@pytest.mark.trio
async def test_ragged_eof_from_a_client_is_a_tls_error(certs: Certs, version: str) -> None:
    with trio.fail_after(10):
        service = Recorder(echo=False)
        async with serving(service, server_tls(certs, version)) as listener:
            await trio.to_thread.run_sync(
                _ragged_stdlib_client, port_of(listener), str(certs.ca), b"is this all?"
            )
            await ended(listener, total=1)
        assert b"".join(service.received) == b"is this all?"
        [error] = service.errors
        assert type(error) is trio_tcp.TLSError
        assert "without close_notify" in str(error)
        assert service.closes == 1


@asynccontextmanager
async def raw_tls_server(
    certs: Certs,
    handler: Callable[[trio.SSLStream[trio.SocketStream]], Any],
    *,
    context: ssl.SSLContext | None = None,
) -> AsyncIterator[int]:
    """A bare trio TLS server on 127.0.0.1 whose connections ``handler`` drives; yields its port."""
    if context is None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs.server_crt, certs.server_key)

    async def serve_one(stream: trio.SocketStream) -> None:
        await handler(trio.SSLStream(stream, context, server_side=True))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, serve_one, 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_ragged_eof_from_a_server_is_a_tls_error_on_the_client(certs: Certs) -> None:
    async def ragged(stream: trio.SSLStream[trio.SocketStream]) -> None:
        await stream.do_handshake()
        await stream.send_all(b"partial")
        await stream.transport_stream.aclose()  # no close_notify

    with trio.fail_after(10):
        async with raw_tls_server(certs, ragged) as port:
            client = await trio_tcp.Client.connect(
                "localhost", port, secure_socket=client_tls(certs)
            )
            async with client:
                assert await client.read_exactly(7) == b"partial"
                with pytest.raises(trio_tcp.TLSError, match="without close_notify"):
                    await client.read_bytes()


@pytest.mark.trio
async def test_close_notify_is_a_clean_end_on_both_sides(certs: Certs, version: str) -> None:
    class Goodbye(Recorder):
        async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
            service = await super().on_connect(caller)
            await caller.write_bytes(b"bye")
            await caller.close()  # close_notify
            return service

    with trio.fail_after(10):
        service = Goodbye()
        async with serving(service, server_tls(certs, version)) as listener:
            async with await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=client_tls(certs)
            ) as client:
                assert await client.read_exactly(3) == b"bye"
                with pytest.raises(trio_tcp.ConnectionClosedError) as info:
                    await client.read_bytes()
                assert type(info.value) is trio_tcp.ConnectionClosedError
                assert "closed by the peer" in str(info.value)
            await ended(listener, total=1)
        assert service.errors == []
        assert service.closes == 1


@pytest.mark.trio
async def test_graceful_stop_ends_tls_clients_with_close_notify(certs: Certs, version: str) -> None:
    with trio.fail_after(10):
        service = Recorder()
        listener = trio_tcp.Listener(0, secure_socket=server_tls(certs, version))
        listener.attach(service)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            clients = []
            for _ in range(3):
                client = await trio_tcp.Client.connect(
                    "localhost", port_of(listener), secure_socket=client_tls(certs)
                )
                await echo_once(client)
                clients.append(client)
            await listener.graceful_stop(timeout=2)
        for client in clients:
            async with client:
                with pytest.raises(trio_tcp.ConnectionClosedError) as info:
                    await client.read_bytes()
                assert type(info.value) is trio_tcp.ConnectionClosedError  # not a TLSError
        assert service.closes == 3
        assert service.errors == []


@pytest.mark.trio
async def test_client_close_sends_close_notify(certs: Certs, version: str) -> None:
    """The server sees a clean end (no TLSError): the client's close said goodbye."""
    with trio.fail_after(10):
        service = Recorder()
        async with serving(service, server_tls(certs, version)) as listener:
            client = await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=client_tls(certs)
            )
            await echo_once(client)
            await client.close()
            await ended(listener, total=1)
        assert service.errors == []
        assert service.closes == 1


# -- large writes go out in bounded slices -------------------------------------------


@pytest.mark.trio
async def test_large_writes_are_byte_exact_and_sliced(
    certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 32 * 1024 * 1024
    payload = os.urandom(size)
    largest = 0
    real_send_all = trio.SSLStream.send_all

    async def spy(self: trio.SSLStream[Any], data: bytes | bytearray | memoryview) -> None:
        nonlocal largest
        largest = max(largest, len(data))
        await real_send_all(self, data)

    monkeypatch.setattr(trio.SSLStream, "send_all", spy)

    class Sink(trio_tcp.Service):
        """Hashes what arrives; once everything is in, sends the payload back in one write."""

        def __init__(self) -> None:
            self.digest = hashlib.sha256()
            self.count = 0

        async def on_connect(self, caller: trio_tcp.Caller) -> trio_tcp.ConnectionService:
            sink = self

            class Handler(trio_tcp.ConnectionService):
                async def on_bytes(self, data: bytes) -> None:
                    sink.digest.update(data)
                    sink.count += len(data)
                    if sink.count == size:
                        await caller.write_bytes(payload)

            return Handler()

    with trio.fail_after(10):
        sink = Sink()
        async with (
            serving(sink, server_tls(certs)) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=client_tls(certs)
            ) as client,
        ):
            await client.write_bytes(payload)
            echoed = await client.read_exactly(size)
    expected = hashlib.sha256(payload).hexdigest()
    assert sink.digest.hexdigest() == expected  # client -> server
    assert hashlib.sha256(echoed).hexdigest() == expected  # server -> client
    assert 0 < largest <= 64 * 1024


# -- mutual TLS rejections --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "server_reason", "client_reason"),
    [
        pytest.param(None, "PEER_DID_NOT_RETURN_A_CERTIFICATE", "client certificate", id="no-cert"),
        pytest.param("other", "certificate verification failed", "UNKNOWN_CA", id="other-ca"),
    ],
)
@pytest.mark.trio
async def test_required_client_certificate_rejections(
    certs: Certs,
    version: str,
    key: str | None,
    server_reason: str,
    client_reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """TLS 1.2: Client.connect raises. TLS 1.3: connect succeeds, the first read raises.

    That is TLS 1.3 itself: the client's handshake ends before the server has
    looked at the client's certificate. Either way the error is a TLSError
    that says why (the server's alert is sent, and named).
    """
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    identity = (
        CertKey(cert_file=certs.other_client_crt, key_file=certs.other_client_key)
        if key == "other"
        else None
    )
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, version, client_auth="require", client_cert=certs.ca)
        async with serving(service, config) as listener:
            tls = client_tls(certs, key=identity)
            if version == "TLSv1.2":
                with pytest.raises(trio_tcp.TLSError) as info:
                    await trio_tcp.Client.connect("localhost", port_of(listener), secure_socket=tls)
            else:
                # The client's own handshake completes; the server's verdict follows.
                client = await trio_tcp.Client.connect(
                    "localhost", port_of(listener), secure_socket=tls
                )
                async with client:
                    with pytest.raises(trio_tcp.TLSError) as info:
                        await client.read_bytes()
            assert client_reason in str(info.value)
            await ended(listener, total=1)
        assert service.callbacks == 0
        [record] = handshake_logs(caplog)
        assert record.levelno == logging.INFO
        assert server_reason in record.getMessage()


@pytest.mark.trio
async def test_tls13_rejection_after_a_write_still_surfaces_at_the_read(
    certs: Certs,
) -> None:
    """The documented TLS 1.3 shape: a write right after connect may succeed; the read fails."""
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, "TLSv1.3", client_auth="require", client_cert=certs.ca)
        async with serving(service, config) as listener:
            client = await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=client_tls(certs)
            )
            async with client:
                # The write may succeed (the server drops the data) or, if the
                # alert won the race, fail; either way the read must say why.
                with contextlib.suppress(trio_tcp.Error):
                    await client.write_bytes(b"anyone?")
                with pytest.raises(trio_tcp.Error) as info:
                    await client.read_bytes()
            # The alert arrives before the connection ends, so it is what the read reports.
            assert isinstance(info.value, trio_tcp.TLSError)
            assert "CERTIFICATE_REQUIRED" in str(info.value)
        assert service.callbacks == 0


@pytest.mark.parametrize("send_cert", [False, True], ids=["no-cert", "good-cert"])
@pytest.mark.trio
async def test_optional_client_certificate(certs: Certs, version: str, send_cert: bool) -> None:
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, version, client_auth="optional", client_cert=certs.ca)
        async with serving(service, config) as listener:
            tls = client_tls(certs, key=client_cert(certs) if send_cert else None)
            async with await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=tls
            ) as client:
                await echo_once(client)
                [caller] = service.callers
                if send_cert:
                    assert caller.peer_certificate is not None
                else:
                    assert caller.peer_certificate is None


@pytest.mark.trio
async def test_optional_still_rejects_a_certificate_from_another_ca(
    certs: Certs,
) -> None:
    with trio.fail_after(10):
        service = Recorder()
        config = server_tls(certs, "TLSv1.2", client_auth="optional", client_cert=certs.ca)
        async with serving(service, config) as listener:
            other = CertKey(cert_file=certs.other_client_crt, key_file=certs.other_client_key)
            with pytest.raises(trio_tcp.TLSError, match="UNKNOWN_CA"):
                await trio_tcp.Client.connect(
                    "localhost", port_of(listener), secure_socket=client_tls(certs, key=other)
                )
        assert service.callbacks == 0


# -- the client refuses bad server certificates ----------------------------------------


@pytest.mark.parametrize(
    ("server_cert", "options", "client_reason", "server_reason"),
    [
        pytest.param(
            "other",
            {},
            "unable to get local issuer certificate",
            "UNKNOWN_CA",
            id="untrusted",
        ),
        pytest.param(
            "good",
            {"server_name": "wrong.example"},
            "Hostname mismatch, certificate is not valid for 'wrong.example'",
            "BAD_CERTIFICATE",
            id="hostname-mismatch",
        ),
        pytest.param("expired", {}, "certificate has expired", "CERTIFICATE_EXPIRED", id="expired"),
        pytest.param(
            "other",
            {"verify_hostname": False},
            "unable to get local issuer certificate",
            "UNKNOWN_CA",
            id="no-hostname-check-still-checks-the-chain",
        ),
    ],
)
@pytest.mark.trio
async def test_bad_server_certificates_fail_the_connect(
    certs: Certs,
    version: str,
    server_cert: str,
    options: dict[str, Any],
    client_reason: str,
    server_reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    cert_file, key_file = {
        "good": (certs.server_crt, certs.server_key),
        "other": (certs.other_server_crt, certs.other_server_key),
        "expired": (certs.expired_crt, certs.expired_key),
    }[server_cert]
    config = ListenerSecureSocket(
        key=CertKey(cert_file=cert_file, key_file=key_file),
        protocol=TLSProtocol(versions=(version,)),
    )
    with trio.fail_after(10):
        service = Recorder()
        async with serving(service, config) as listener:
            with pytest.raises(trio_tcp.TLSError) as info:
                await trio_tcp.Client.connect(
                    "localhost", port_of(listener), secure_socket=client_tls(certs, **options)
                )
            await ended(listener, total=1)
        message = str(info.value)
        assert message.startswith("TLS certificate verification failed")
        assert client_reason in message
        assert isinstance(info.value.__cause__, trio.BrokenResourceError)
        assert service.callbacks == 0  # not one application byte reached the service
        # The client's alert tells the server why.
        [record] = handshake_logs(caplog)
        assert server_reason in record.getMessage()


@pytest.mark.trio
async def test_verify_hostname_false_accepts_another_name(certs: Certs) -> None:
    with trio.fail_after(10):
        tls = client_tls(certs, server_name="wrong.example", verify_hostname=False)
        async with (
            serving(Recorder(), server_tls(certs)) as listener,
            await trio_tcp.Client.connect(
                "localhost", port_of(listener), secure_socket=tls
            ) as client,
        ):
            await echo_once(client)


@pytest.mark.parametrize(
    ("host", "server_name", "sni"),
    [
        pytest.param("127.0.0.1", "localhost", "localhost", id="server_name"),
        pytest.param("localhost", None, "localhost", id="default-host-name"),
        pytest.param("127.0.0.1", None, None, id="ip-address-no-sni"),
    ],
)
@pytest.mark.trio
async def test_server_name_is_sent_as_sni_and_verified(
    certs: Certs, host: str, server_name: str | None, sni: str | None
) -> None:
    seen: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_crt, certs.server_key)
    context.sni_callback = lambda _obj, name, _ctx: seen.append(name)

    async def echo(stream: trio.SSLStream[trio.SocketStream]) -> None:
        async with stream:
            await stream.send_all(await stream.receive_some())

    with trio.fail_after(10):
        async with raw_tls_server(certs, echo, context=context) as port:
            tls = client_tls(certs, server_name=server_name)
            async with await trio_tcp.Client.connect(host, port, secure_socket=tls) as client:
                await echo_once(client)
    assert seen == [sni]


# -- nothing in common -------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "client", "server_reason", "client_reason"),
    [
        pytest.param(
            {"protocol": TLSProtocol(versions=("TLSv1.3",))},
            {"protocol": TLSProtocol(versions=("TLSv1.2",))},
            "UNSUPPORTED_PROTOCOL",
            "PROTOCOL_VERSION",
            id="server-1.3-only-client-1.2-only",
        ),
        pytest.param(
            {"protocol": TLSProtocol(versions=("TLSv1.2",))},
            {"protocol": TLSProtocol(versions=("TLSv1.3",))},
            "UNSUPPORTED_PROTOCOL",
            "PROTOCOL_VERSION",
            id="server-1.2-only-client-1.3-only",
        ),
        pytest.param(
            {
                "protocol": TLSProtocol(versions=("TLSv1.2",)),
                "ciphers": ("ECDHE-ECDSA-AES128-GCM-SHA256",),
            },
            {
                "protocol": TLSProtocol(versions=("TLSv1.2",)),
                "ciphers": ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",),
            },
            "NO_SHARED_CIPHER",
            "HANDSHAKE_FAILURE",
            id="disjoint-tls1.2-ciphers",
        ),
    ],
)
@pytest.mark.trio
async def test_version_and_cipher_mismatch_fail_on_both_sides(
    certs: Certs,
    server: dict[str, Any],
    client: dict[str, Any],
    server_reason: str,
    client_reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    with trio.fail_after(10):
        service = Recorder()
        async with serving(service, server_tls(certs, **server)) as listener:
            with pytest.raises(trio_tcp.TLSError) as info:
                await trio_tcp.Client.connect(
                    "localhost", port_of(listener), secure_socket=client_tls(certs, **client)
                )
            await ended(listener, total=1)
        assert client_reason in str(info.value)
        assert service.callbacks == 0
        [record] = handshake_logs(caplog)
        assert record.levelno == logging.INFO
        assert server_reason in record.getMessage()


# -- bad configuration: reported before any socket exists -------------------------------------


def _bad_client_configs(certs: Certs) -> dict[str, tuple[ClientSecureSocket, str]]:
    return {
        "missing-ca": (ClientSecureSocket(cert=certs.dir / "nope.pem"), "nope.pem"),
        "garbage-ca": (ClientSecureSocket(cert=certs.garbage), "garbage"),
        "key-mismatch": (
            client_tls(certs, key=CertKey(cert_file=certs.client_crt, key_file=certs.server_key)),
            "does not match",
        ),
        "keystore-wrong-password": (
            client_tls(certs, key=KeyStore(path=certs.client_p12, password="Wr0ng-pass")),
            "wrong password",
        ),
        "truststore-garbage": (
            ClientSecureSocket(cert=TrustStore(path=certs.garbage, password=PASSWORD)),
            "truststore",
        ),
    }


def forbid_network_sockets(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, creating an IPv4/IPv6 socket fails the test; returns what was attempted.

    Patched inside the running test, after trio has made its own wake-up
    socketpair, and below trio, so it holds however the library opens sockets.
    """
    attempted: list[int] = []
    real_init = socket.socket.__init__

    def init(self: socket.socket, family: int = -1, *args: Any, **kwargs: Any) -> None:
        if family in (-1, socket.AF_INET, socket.AF_INET6) and not kwargs.get("fileno"):
            attempted.append(family)
            raise AssertionError("a network socket was created")
        real_init(self, family, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "__init__", init)
    return attempted


@pytest.mark.parametrize(
    "case",
    ["missing-ca", "garbage-ca", "key-mismatch", "keystore-wrong-password", "truststore-garbage"],
)
@pytest.mark.trio
async def test_client_configuration_errors_come_before_any_socket(
    certs: Certs, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = forbid_network_sockets(monkeypatch)
    config, words = _bad_client_configs(certs)[case]
    with trio.fail_after(5):
        with pytest.raises(trio_tcp.ConfigurationError) as info:
            await trio_tcp.Client.connect("localhost", 1, secure_socket=config)
    assert opened == []
    assert words in str(info.value)
    assert "Wr0ng-pass" not in str(info.value)
    assert PASSWORD not in str(info.value)


def _bad_listener_configs(certs: Certs) -> dict[str, tuple[ListenerSecureSocket, str]]:
    return {
        "missing-cert": (
            ListenerSecureSocket(key=CertKey(cert_file="nope.crt", key_file=certs.server_key)),
            "nope.crt",
        ),
        "key-mismatch": (
            ListenerSecureSocket(
                key=CertKey(cert_file=certs.server_crt, key_file=certs.client_key)
            ),
            "does not match",
        ),
        "keystore-wrong-password": (
            ListenerSecureSocket(key=KeyStore(path=certs.server_p12, password="Wr0ng-pass")),
            "wrong password",
        ),
        "garbage-client-ca": (
            server_tls(certs, client_auth="require", client_cert=certs.garbage),
            "garbage",
        ),
    }


@pytest.mark.parametrize(
    "case", ["missing-cert", "key-mismatch", "keystore-wrong-password", "garbage-client-ca"]
)
@pytest.mark.trio
async def test_listener_configuration_errors_come_before_binding(
    certs: Certs, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = forbid_network_sockets(monkeypatch)
    config, words = _bad_listener_configs(certs)[case]
    listener = trio_tcp.Listener(0, secure_socket=config)
    listener.attach(Recorder())
    with trio.fail_after(5):
        with pytest.raises(trio_tcp.ConfigurationError) as info:
            await listener.serve()
    assert bound == []
    assert words in str(info.value)
    assert "Wr0ng-pass" not in str(info.value)
    assert listener.port is None


# -- the pieces behind the messages ------------------------------------------------------


def _broken_by(cause: BaseException) -> trio.BrokenResourceError:
    broken = trio.BrokenResourceError()
    broken.__cause__ = cause
    return broken


@pytest.mark.parametrize(
    ("raised", "words"),
    [
        pytest.param(
            _broken_by(ssl.SSLEOFError(8, "EOF")),
            "the peer closed the connection during the TLS handshake",
            id="eof",
        ),
        pytest.param(
            _broken_by(ConnectionResetError(104, "Connection reset by peer")),
            "connection reset by peer (Connection reset by peer) during the TLS handshake",
            id="reset",
        ),
        pytest.param(
            _broken_by(ssl.SSLCertVerificationError(1, "certificate verify failed")),
            "TLS certificate verification failed",
            id="verification-without-details",
        ),
        pytest.param(_broken_by(ssl.SSLError(1, "odd")), "TLS failure: SSLError", id="unknown"),
    ],
)
def test_every_handshake_failure_is_a_tls_error(raised: BaseException, words: str) -> None:
    error = handshake_error(raised)
    assert type(error) is trio_tcp.TLSError
    assert words in str(error)


@pytest.mark.trio
async def test_trio_keeps_the_alert_of_a_failed_handshake_where_trio_tcp_looks() -> None:
    """Pins the trio internal behind "alerts are sent": a failed handshake's alert is
    left in ``SSLStream._outgoing``. If trio moves it, this fails (and the alert
    tests with it) instead of trio_tcp silently sending nothing."""
    with trio.fail_after(5):
        client, server = trio.testing.memory_stream_pair()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        tls = trio.SSLStream(server, context, server_side=True)
        old = ssl.create_default_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        with pytest.raises(ssl.SSLWantReadError):
            old.wrap_bio(incoming, outgoing, server_hostname="localhost").do_handshake()
        await client.send_all(outgoing.read())
        with pytest.raises(trio.BrokenResourceError):
            await tls.do_handshake()
        alert = tls._outgoing
        assert isinstance(alert, ssl.MemoryBIO)
        assert alert.pending > 0
        await send_tls_alert(tls)
        assert (await client.receive_some())[:1] == b"\x15"  # a TLS alert record
