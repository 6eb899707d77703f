"""TLS configuration: validation, context building, and what every bad input says.

Certificates come from trustme; PKCS#12 files are written with cryptography.
Nothing here opens a socket: the few handshakes run over
``trio.testing.memory_stream_pair()`` or OpenSSL memory BIOs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import ssl
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_tcp._tls_files as tls_files
from trio_tcp._ciphers import _IANA_CODE_POINTS, TLS13_SUITES
from trio_tcp._errors import ConfigurationError
from trio_tcp._info import peer_tls_details
from trio_tcp._tls import (
    CertKey,
    ClientSecureSocket,
    KeyStore,
    ListenerSecureSocket,
    TLSProtocol,
    TrustStore,
    build_client_context,
    build_server_context,
)

PASSWORD = "S3cr3t-pässwörd-xyz"
WRONG = "not-the-Pa55word"


# ---------------------------------------------------------------------------
# Fixtures: one CA, certificates and key files for the whole session
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Material:
    dir: Path
    ca_pem: Path
    server_crt: Path  # leaf + chain
    server_leaf: Path  # leaf only
    server_key: Path  # traditional, unencrypted
    server_key_pkcs8: Path
    server_key_enc_pkcs8: Path  # encrypted with PASSWORD
    server_key_enc_trad: Path  # encrypted with PASSWORD
    combined: Path  # key + chain in one file
    other_key: Path
    garbage: Path
    server_p12: Path  # key + leaf + intermediate, PASSWORD
    server_p12_nopw: Path
    trust_p12: Path  # root CA only, PASSWORD
    key_only_p12: Path
    certs_only_p12: Path
    client_crt: Path
    client_key: Path
    client_p12: Path


def _pem_key(key: Any, fmt: serialization.PrivateFormat, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode())
    )
    data: bytes = key.private_bytes(serialization.Encoding.PEM, fmt, encryption)
    return data


def _p12(key: Any, cert: Any, cas: list[Any] | None, password: str | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(b"trio_tcp", key, cert, cas, encryption)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def material(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Material:
    d = tmp_path_factory.mktemp("tls")
    intermediate = ca.create_child_ca()
    server = intermediate.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("client.example.org")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), None)
    certs = [x509.load_pem_x509_certificate(p.bytes()) for p in server.cert_chain_pems]
    client_key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
    client_cert = x509.load_pem_x509_certificate(client.cert_chain_pems[0].bytes())
    root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    chain = b"".join(p.bytes() for p in server.cert_chain_pems)
    trad, pkcs8 = serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8
    files: dict[str, bytes] = {
        "ca_pem": ca.cert_pem.bytes(),
        "server_crt": chain,
        "server_leaf": server.cert_chain_pems[0].bytes(),
        "server_key": server.private_key_pem.bytes(),
        "server_key_pkcs8": _pem_key(key, pkcs8, None),
        "server_key_enc_pkcs8": _pem_key(key, pkcs8, PASSWORD),
        "server_key_enc_trad": _pem_key(key, trad, PASSWORD),
        "combined": server.private_key_pem.bytes() + chain,
        "other_key": _pem_key(ec.generate_private_key(ec.SECP256R1()), pkcs8, None),
        "garbage": b"this is not a certificate\n",
        "server_p12": _p12(key, certs[0], certs[1:], PASSWORD),
        "server_p12_nopw": _p12(key, certs[0], certs[1:], None),
        "trust_p12": _p12(None, None, [root], PASSWORD),
        "key_only_p12": _p12(key, None, None, PASSWORD),
        "certs_only_p12": _p12(None, None, certs, PASSWORD),
        "client_crt": client.cert_chain_pems[0].bytes(),
        "client_key": client.private_key_pem.bytes(),
        "client_p12": _p12(client_key, client_cert, None, PASSWORD),
    }
    paths = {}
    for name, data in files.items():
        path = d / name
        path.write_bytes(data)
        paths[name] = path
    return Material(dir=d, **paths)


@pytest.fixture
def server_config(material: Material) -> ListenerSecureSocket:
    return ListenerSecureSocket(
        key=CertKey(cert_file=material.server_crt, key_file=material.server_key)
    )


def _err(fn: Callable[[], object]) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        fn()
    return info.value


# ---------------------------------------------------------------------------
# Construction: cheap checks, defaults, hashability
# ---------------------------------------------------------------------------


def test_defaults_and_lists_become_tuples(material: Material) -> None:
    cfg = ListenerSecureSocket(
        key=CertKey(cert_file=str(material.server_crt), key_file=str(material.server_key)),
        protocol=TLSProtocol(versions=["TLSv1.2"]),  # type: ignore[arg-type]
        ciphers=["ECDHE-ECDSA-AES128-GCM-SHA256"],  # type: ignore[arg-type]
    )
    assert cfg.handshake_timeout == 10.0
    assert cfg.session_timeout is None
    assert cfg.client_auth == "none"
    assert cfg.ciphers == ("ECDHE-ECDSA-AES128-GCM-SHA256",)
    assert cfg.protocol is not None
    assert cfg.protocol.versions == ("TLSv1.2",)
    assert hash(cfg) == hash(dataclasses.replace(cfg))
    client = ClientSecureSocket()
    assert (client.enable, client.verify_hostname, client.cert) == (True, True, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        client.enable = False  # type: ignore[misc]


def test_passwords_are_not_in_repr() -> None:
    objects = [
        CertKey(cert_file="a.crt", key_file="a.key", key_password=PASSWORD),
        KeyStore(path="a.p12", password=PASSWORD),
        TrustStore(path="t.p12", password=PASSWORD),
    ]
    for obj in objects:
        assert PASSWORD not in repr(obj)
    listener = ListenerSecureSocket(key=objects[0])  # type: ignore[arg-type]
    assert PASSWORD not in repr(listener)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: CertKey(cert_file="", key_file="k"), "CertKey.cert_file"),
        (lambda: CertKey(cert_file="c", key_file=""), "CertKey.key_file"),
        (lambda: KeyStore(path=""), "KeyStore.path"),
        (lambda: TrustStore(path="", password="x"), "TrustStore.path"),
        (lambda: ClientSecureSocket(cert=""), "ClientSecureSocket.cert"),
        (
            lambda: ListenerSecureSocket(
                key=KeyStore(path="k.p12"), client_auth="require", client_cert=""
            ),
            "ListenerSecureSocket.client_cert",
        ),
    ],
    ids=["cert_file", "key_file", "keystore", "truststore", "client-cert", "listener-client-cert"],
)
def test_empty_path(make: Callable[[], object], field: str) -> None:
    err = _err(make)
    assert "certificate file location must be provided" in str(err)
    assert field in str(err)


@pytest.mark.parametrize(
    "make",
    [
        lambda: CertKey(cert_file=123, key_file="k"),  # type: ignore[arg-type]
        lambda: CertKey(cert_file="c", key_file=b"k"),  # type: ignore[arg-type]
        lambda: CertKey(cert_file="c", key_file="k", key_password=b"pw"),  # type: ignore[arg-type]
        lambda: ListenerSecureSocket(key="server.pem"),  # type: ignore[arg-type]
        lambda: ListenerSecureSocket(key=KeyStore(path="k"), protocol="TLS"),  # type: ignore[arg-type]
        lambda: ListenerSecureSocket(key=KeyStore(path="k"), ciphers="A:B"),  # type: ignore[arg-type]
        lambda: ListenerSecureSocket(key=KeyStore(path="k"), ciphers=(1,)),  # type: ignore[arg-type]
        lambda: ListenerSecureSocket(key=KeyStore(path="k"), handshake_timeout="3"),  # type: ignore[arg-type]
        lambda: TLSProtocol(versions="TLSv1.2"),  # type: ignore[arg-type]
        lambda: TLSProtocol(name=None),  # type: ignore[arg-type]
        lambda: ClientSecureSocket(enable="yes"),  # type: ignore[arg-type]
        lambda: ClientSecureSocket(key="client.pem"),  # type: ignore[arg-type]
        lambda: ClientSecureSocket(server_name=b"host"),  # type: ignore[arg-type]
        lambda: ClientSecureSocket(verify_hostname=None),  # type: ignore[arg-type]
    ],
)
def test_wrong_types_are_type_errors(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError) as info:
        make()
    assert not isinstance(info.value, ConfigurationError)


def test_server_name_must_not_be_empty() -> None:
    err = _err(lambda: ClientSecureSocket(server_name=""))
    assert "ClientSecureSocket.server_name" in str(err)


def test_builders_check_their_argument(server_config: ListenerSecureSocket) -> None:
    with pytest.raises(TypeError):
        build_server_context(ClientSecureSocket())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        build_client_context(server_config)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, 0.0, -1, float("nan"), float("inf")])
def test_bad_handshake_timeout(value: float) -> None:
    err = _err(lambda: ClientSecureSocket(handshake_timeout=value))
    assert "ClientSecureSocket.handshake_timeout" in str(err)


def test_timeouts_accepted() -> None:
    assert ClientSecureSocket(handshake_timeout=None).handshake_timeout is None
    assert ClientSecureSocket(handshake_timeout=2).handshake_timeout == 2.0
    assert ClientSecureSocket(session_timeout=0).session_timeout == 0.0
    err = _err(lambda: ClientSecureSocket(session_timeout=-1))
    assert "session_timeout" in str(err)


def test_client_auth_rules() -> None:
    key = KeyStore(path="k.p12")
    err = _err(lambda: ListenerSecureSocket(key=key, client_auth="require"))
    assert "needs client_cert" in str(err)
    err = _err(lambda: ListenerSecureSocket(key=key, client_auth="optional"))
    assert "needs client_cert" in str(err)
    err = _err(lambda: ListenerSecureSocket(key=key, client_auth="always"))  # type: ignore[arg-type]
    assert "'always'" in str(err)
    err = _err(lambda: ListenerSecureSocket(key=key, client_cert="ca.pem"))
    assert "client_auth is 'none'" in str(err)


def test_client_enable_false_ignores_garbage() -> None:
    cfg = ClientSecureSocket(
        enable=False,
        cert="",
        key="not a key",  # type: ignore[arg-type]
        protocol=TLSProtocol,  # type: ignore[arg-type]
        ciphers=["BOGUS"],  # type: ignore[arg-type]
        handshake_timeout=-5,
        session_timeout=float("nan"),
        server_name="",
    )
    assert cfg.ciphers == ("BOGUS",)
    hash(cfg)
    with pytest.raises(ValueError, match="enable is False"):
        build_client_context(cfg)


# ---------------------------------------------------------------------------
# Protocol versions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SSL", "DTLS", "", "TLSv1.2"])
def test_protocol_name_must_be_tls(name: str) -> None:
    err = _err(lambda: TLSProtocol(name=name))
    assert "TLSProtocol.name must be 'TLS'" in str(err)


def test_protocol_name_is_case_insensitive() -> None:
    assert TLSProtocol(name="tls").name == "tls"


@pytest.mark.parametrize("version", ["SSLv3", "SSLv2", "sslv3"])
def test_sslv3_rejected(version: str) -> None:
    err = _err(lambda: TLSProtocol(versions=(version,)))
    assert "not supported" in str(err)
    assert "TLSv1, TLSv1.1, TLSv1.2, TLSv1.3" in str(err)


@pytest.mark.parametrize("version", ["TLSv1.4", "TLS1.2", "tlsv1.2", "1.3", ""])
def test_unknown_version_lists_valid_names(version: str) -> None:
    err = _err(lambda: TLSProtocol(versions=("TLSv1.2", version)))
    assert f"unknown TLS version {version!r}" in str(err)
    assert "TLSv1, TLSv1.1, TLSv1.2, TLSv1.3" in str(err)


def test_empty_versions_rejected() -> None:
    assert "empty" in str(_err(lambda: TLSProtocol(versions=())))


def test_version_gap_rejected() -> None:
    err = _err(lambda: TLSProtocol(versions=("TLSv1", "TLSv1.3")))
    assert "TLSv1.1, TLSv1.2" in str(err)


@pytest.mark.parametrize(
    ("versions", "low", "high"),
    [
        (("TLSv1.2", "TLSv1.3"), ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
        (("TLSv1.3",), ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
        (("TLSv1.2",), ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
        (("TLSv1.3", "TLSv1.2", "TLSv1.3"), ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3),
        (("TLSv1.0", "TLSv1.1"), ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1),
        (("TLSv1", "TLSv1.1", "TLSv1.2"), ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_2),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, tuple) else None,
)
def test_version_span_sets_context_bounds(
    material: Material, versions: tuple[str, ...], low: ssl.TLSVersion, high: ssl.TLSVersion
) -> None:
    protocol = TLSProtocol(versions=versions)
    key = CertKey(cert_file=material.server_crt, key_file=material.server_key)
    server = build_server_context(ListenerSecureSocket(key=key, protocol=protocol))
    client = build_client_context(ClientSecureSocket(cert=material.ca_pem, protocol=protocol))
    for ctx in (server, client):
        assert (ctx.minimum_version, ctx.maximum_version) == (low, high)


def test_default_protocol_is_tls12_and_13(server_config: ListenerSecureSocket) -> None:
    ctx = build_server_context(server_config)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_3


def test_legacy_versions_lower_security_level_and_warn(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    # No DeprecationWarning may escape (filterwarnings = error), one log line says why.
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    cfg = ClientSecureSocket(cert=material.ca_pem, protocol=TLSProtocol(versions=("TLSv1",)))
    ctx = build_client_context(cfg)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1
    assert any(c["protocol"] == "TLSv1.0" for c in ctx.get_ciphers())
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "security level lowered to 0" in caplog.records[0].getMessage()


# ---------------------------------------------------------------------------
# Ciphers
# ---------------------------------------------------------------------------


def _tls12_names(ctx: ssl.SSLContext) -> list[str]:
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], ["ECDHE-RSA-AES128-GCM-SHA256"]),
        (["ECDHE-RSA-AES128-GCM-SHA256"], ["ECDHE-RSA-AES128-GCM-SHA256"]),
        (["ecdhe-rsa-aes128-gcm-sha256 "], ["ECDHE-RSA-AES128-GCM-SHA256"]),
        (["SSL_RSA_WITH_AES_128_CBC_SHA"], ["AES128-SHA"]),
        (
            ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-AES256-GCM-SHA384"],
            ["ECDHE-ECDSA-CHACHA20-POLY1305", "DHE-RSA-AES256-GCM-SHA384"],
        ),
        (
            ["TLS_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
            ["ECDHE-ECDSA-AES256-GCM-SHA384"],
        ),
        (
            ["ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
            ["ECDHE-RSA-AES128-GCM-SHA256"],
        ),
    ],
    ids=[
        "iana",
        "openssl",
        "case-and-space",
        "java-ssl-prefix",
        "both-forms",
        "tls13-mixed",
        "dup",
    ],
)
def test_cipher_forms(
    server_config: ListenerSecureSocket, entries: list[str], expected: list[str]
) -> None:
    cfg = dataclasses.replace(server_config, ciphers=tuple(entries))
    ctx = build_server_context(cfg)
    assert _tls12_names(ctx) == expected
    # TLS 1.3 suites cannot be restricted and stay on.
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"} >= {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
    }


def test_every_iana_name_in_the_table_translates_or_is_refused() -> None:
    for name in _IANA_CODE_POINTS:
        if "3DES" in name or "RC4" in name or "NULL" in name:
            with pytest.raises(ConfigurationError, match=name):
                ClientSecureSocket(ciphers=(name,))
            continue
        ctx = build_client_context(ClientSecureSocket(ciphers=(name,)))
        assert len(_tls12_names(ctx)) == 1


@pytest.mark.parametrize(
    ("entries", "bad", "says"),
    [
        (["ECDHE-RSA-AES128-GCM-SHA256", "BOGUS"], "BOGUS", "unknown cipher suite"),
        (["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_FOO"], "TLS_FOO", "unknown cipher suite"),
        (["ECDHE-RSA-AES128-GCM-SHA256:BOGUS"], ":BOGUS", "one cipher suite name per entry"),
        (["HIGH:!aNULL"], "HIGH", "one cipher suite name per entry"),
        (["RC4-MD5"], "RC4-MD5", "unknown cipher suite"),
        (["TLS_RSA_WITH_RC4_128_MD5"], "RC4", "not supported"),
        (["TLS_RSA_WITH_3DES_EDE_CBC_SHA"], "3DES", "not supported"),
        (["NULL-SHA256"], "NULL-SHA256", "not allowed"),
        (["ADH-AES128-SHA"], "ADH-AES128-SHA", "not allowed"),
        (["PSK-AES128-GCM-SHA256"], "PSK-AES128-GCM-SHA256", "not allowed"),
        ([""], "", "empty cipher name"),
        (["AES128\x00-SHA"], "AES128", "control characters"),
        (["AE\u017f128-\u017fHA"], "AE\u017f128", "non-ASCII"),
    ],
    ids=[
        "mixed-bogus",
        "mixed-iana-bogus",
        "cipher-string",
        "keyword",
        "weak",
        "iana-rc4",
        "iana-3des",
        "null",
        "anonymous",
        "psk",
        "empty",
        "nul",
        "non-ascii",
    ],
)
def test_bad_cipher_entry_is_named(entries: list[str], bad: str, says: str) -> None:
    err = _err(lambda: ListenerSecureSocket(key=KeyStore(path="k.p12"), ciphers=tuple(entries)))
    assert says in str(err)
    assert bad in str(err)
    assert "ListenerSecureSocket.ciphers" in str(err)


def test_only_tls13_suites_rejected() -> None:
    err = _err(lambda: ClientSecureSocket(ciphers=sorted(TLS13_SUITES)))  # type: ignore[arg-type]
    assert "only TLS 1.3 suites" in str(err)
    assert "cannot restrict" in str(err)


def test_ciphers_with_tls13_only_protocol_rejected() -> None:
    err = _err(
        lambda: ClientSecureSocket(
            protocol=TLSProtocol(versions=("TLSv1.3",)),
            ciphers=("ECDHE-RSA-AES128-GCM-SHA256",),
        )
    )
    assert "would have no effect" in str(err)


VALID_CIPHER_NAMES = [
    *sorted(_IANA_CODE_POINTS),
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-SHA",
    "TLS_AES_128_GCM_SHA256",
]


@settings(max_examples=150)
@given(entries=st.lists(st.text(max_size=40) | st.sampled_from(VALID_CIPHER_NAMES), max_size=4))
def test_fuzz_cipher_names(material: Material, entries: list[str]) -> None:
    key = CertKey(cert_file=material.server_crt, key_file=material.server_key)
    try:
        cfg = ListenerSecureSocket(key=key, ciphers=tuple(entries))
    except ConfigurationError:
        return
    assert isinstance(build_server_context(cfg), ssl.SSLContext)


VERSION_NAMES = ["TLSv1", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3", "SSLv3", "TLS", "SSL"]


@settings(max_examples=150)
@given(
    name=st.text(max_size=6) | st.sampled_from(["TLS", "tls", "SSL"]),
    versions=st.lists(st.text(max_size=10) | st.sampled_from(VERSION_NAMES), max_size=4),
)
def test_fuzz_protocol(material: Material, name: str, versions: list[str]) -> None:
    try:
        protocol = TLSProtocol(name=name, versions=tuple(versions))
    except ConfigurationError:
        return
    ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem, protocol=protocol))
    assert ctx.minimum_version <= ctx.maximum_version


# ---------------------------------------------------------------------------
# Bad configuration inputs: one test per kind of mistake
# ---------------------------------------------------------------------------


def _server(material: Material, **key_fields: Any) -> Callable[[], object]:
    fields = {"cert_file": material.server_crt, "key_file": material.server_key, **key_fields}
    return lambda: build_server_context(ListenerSecureSocket(key=CertKey(**fields)))


def test_missing_cert_file(material: Material) -> None:
    missing = material.dir / "nope.crt"
    err = _err(_server(material, cert_file=missing))
    assert f"certificate file not found: {missing}" in str(err)
    assert "ListenerSecureSocket.key.cert_file" in str(err)
    assert isinstance(err.__cause__, FileNotFoundError)


def test_missing_key_file(material: Material) -> None:
    missing = material.dir / "nope.key"
    err = _err(_server(material, key_file=str(missing)))
    assert f"private key file not found: {missing}" in str(err)
    assert "ListenerSecureSocket.key.key_file" in str(err)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(material: Material, tmp_path: Path) -> None:
    locked = tmp_path / "locked.crt"
    locked.write_bytes(material.server_crt.read_bytes())
    locked.chmod(0)
    err = _err(_server(material, cert_file=locked))
    assert f"cannot read certificate file {locked}" in str(err)
    assert isinstance(err.__cause__, PermissionError)


def test_unreadable_file_simulated(material: Material, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def deny(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path) == str(material.server_key):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    err = _err(_server(material))
    assert f"cannot read private key file {material.server_key}" in str(err)
    assert "Permission denied" in str(err)
    assert isinstance(err.__cause__, PermissionError)


def test_directory_and_fifo_are_not_files(material: Material, tmp_path: Path) -> None:
    err = _err(_server(material, cert_file=tmp_path))
    assert "is not a regular file" in str(err)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo.pem"
        os.mkfifo(fifo)
        err = _err(_server(material, key_file=fifo))  # must not block waiting for a writer
        assert "is not a regular file" in str(err)


def test_oversized_file(material: Material, tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    with big.open("wb") as f:
        f.truncate(tls_files.MAX_TLS_FILE_SIZE + 1)
    err = _err(_server(material, cert_file=big))
    assert "is larger than" in str(err)


def test_garbage_cert(material: Material) -> None:
    err = _err(_server(material, cert_file=material.garbage))
    assert f"invalid certificate file {material.garbage} (not PEM)" in str(err)
    assert isinstance(err.__cause__, ValueError)


def test_garbage_key(material: Material) -> None:
    err = _err(_server(material, key_file=material.garbage))
    assert f"invalid private key file {material.garbage}" in str(err)


def test_key_does_not_match_certificate(material: Material) -> None:
    err = _err(_server(material, key_file=material.other_key))
    assert (
        f"private key {material.other_key} does not match certificate {material.server_crt}"
        in str(err)
    )


@pytest.mark.parametrize("which", ["server_key_enc_pkcs8", "server_key_enc_trad"])
def test_encrypted_key_wrong_password(material: Material, which: str) -> None:
    path = getattr(material, which)
    err = _err(_server(material, key_file=path, key_password=WRONG))
    assert f"wrong key password for {path}" in str(err)
    assert "ListenerSecureSocket.key.key_file" in str(err)


@pytest.mark.parametrize("which", ["server_key_enc_pkcs8", "server_key_enc_trad"])
def test_encrypted_key_without_password(material: Material, which: str) -> None:
    path = getattr(material, which)
    err = _err(_server(material, key_file=path))
    assert f"key {path} is encrypted; key_password is required" in str(err)


@pytest.mark.parametrize(
    ("key_file", "password"),
    [
        ("server_key", None),
        ("server_key_pkcs8", None),
        ("server_key_enc_pkcs8", PASSWORD),
        ("server_key_enc_trad", PASSWORD),
        ("server_key", PASSWORD),  # a password for a plain key is ignored, as OpenSSL does
        ("combined", None),
    ],
)
def test_good_key_forms_load(material: Material, key_file: str, password: str | None) -> None:
    cert = material.combined if key_file == "combined" else material.server_crt
    ctx = _server(
        material, cert_file=cert, key_file=getattr(material, key_file), key_password=password
    )()
    assert isinstance(ctx, ssl.SSLContext)


def test_encrypted_key_without_password_never_prompts(material: Material) -> None:
    # No controlling terminal and no stdin: a prompting OpenSSL would fail or hang here.
    code = textwrap.dedent(
        f"""
        from trio_tcp._tls import CertKey, ListenerSecureSocket, build_server_context
        from trio_tcp._errors import ConfigurationError
        key = CertKey(cert_file={str(material.server_crt)!r},
                      key_file={str(material.server_key_enc_trad)!r})
        try:
            build_server_context(ListenerSecureSocket(key=key))
        except ConfigurationError as exc:
            print("ConfigurationError:", exc)
        """
    )
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ConfigurationError:" in result.stdout
    assert "key_password is required" in result.stdout
    assert "pass phrase" not in result.stdout + result.stderr


def test_password_callback_stops_openssl_prompt(material: Material) -> None:
    # Even if the pre-check were skipped, OpenSSL gets a callable that raises.
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    callback = tls_files._password_callback(None, "server.key", "here")
    with pytest.raises(ConfigurationError, match="key_password is required"):
        ctx.load_cert_chain(material.server_crt, material.server_key_enc_pkcs8, password=callback)


@pytest.mark.parametrize(
    ("path", "password"),
    [("server_p12", WRONG), ("server_p12", None), ("garbage", PASSWORD)],
    ids=["wrong-password", "no-password", "garbage"],
)
def test_keystore_cannot_open(material: Material, path: str, password: str | None) -> None:
    store = getattr(material, path)
    key = KeyStore(path=store, password=password)
    err = _err(lambda: build_server_context(ListenerSecureSocket(key=key)))
    assert f"cannot open keystore {store}: wrong password or corrupt file" in str(err)
    assert "ListenerSecureSocket.key.path" in str(err)
    assert isinstance(err.__cause__, ValueError)


@pytest.mark.parametrize("store", ["trust_p12", "certs_only_p12"])
def test_keystore_without_key(material: Material, store: str) -> None:
    key = KeyStore(path=getattr(material, store), password=PASSWORD)
    err = _err(lambda: build_server_context(ListenerSecureSocket(key=key)))
    assert "holds no private key" in str(err)


def test_keystore_leaf_found_among_additional_certs(material: Material, tmp_path: Path) -> None:
    # Some tools store every certificate as an "additional" one: find the key's own.
    bundle = pkcs12.load_pkcs12(material.server_p12.read_bytes(), PASSWORD.encode())
    assert bundle.key is not None
    assert bundle.cert is not None
    chain = [c.certificate for c in bundle.additional_certs]
    store = tmp_path / "loose.p12"
    store.write_bytes(_p12(bundle.key, None, [*chain, bundle.cert.certificate], PASSWORD))
    key = KeyStore(path=store, password=PASSWORD)
    assert isinstance(build_server_context(ListenerSecureSocket(key=key)), ssl.SSLContext)


def test_keystore_without_matching_certificate(material: Material) -> None:
    key = KeyStore(path=material.key_only_p12, password=PASSWORD)
    err = _err(lambda: build_server_context(ListenerSecureSocket(key=key)))
    assert "holds no certificate for its private key" in str(err)


def test_keystore_missing(material: Material) -> None:
    key = KeyStore(path=material.dir / "none.p12", password=PASSWORD)
    err = _err(lambda: build_server_context(ListenerSecureSocket(key=key)))
    assert "keystore file not found" in str(err)


def _client_with_trust(cert: Path | TrustStore) -> Callable[[], object]:
    return lambda: build_client_context(ClientSecureSocket(cert=cert))


def test_truststore_missing(material: Material) -> None:
    missing = material.dir / "trust-none.p12"
    err = _err(_client_with_trust(TrustStore(path=missing, password=PASSWORD)))
    assert f"truststore file not found: {missing}" in str(err)
    assert "ClientSecureSocket.cert.path" in str(err)


@pytest.mark.parametrize(
    ("path", "password"), [("garbage", None), ("trust_p12", WRONG)], ids=["garbage", "wrong-pw"]
)
def test_truststore_cannot_open(material: Material, path: str, password: str | None) -> None:
    store = getattr(material, path)
    err = _err(_client_with_trust(TrustStore(path=store, password=password)))
    assert f"cannot open truststore {store}: wrong password or corrupt file" in str(err)


def test_truststore_without_certificates(material: Material, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    store = tmp_path / "keyonly.p12"
    store.write_bytes(_p12(key, None, None, PASSWORD))
    err = _err(_client_with_trust(TrustStore(path=store, password=PASSWORD)))
    assert f"truststore {store} contains no certificate" in str(err)


def test_ca_file_missing_and_garbage(material: Material) -> None:
    err = _err(_client_with_trust(material.dir / "ca-none.pem"))
    assert "CA certificate file not found" in str(err)
    assert "ClientSecureSocket.cert" in str(err)
    err = _err(_client_with_trust(material.garbage))
    assert f"invalid certificate file {material.garbage} (not PEM)" in str(err)
    cfg = ListenerSecureSocket(
        key=CertKey(cert_file=material.server_crt, key_file=material.server_key),
        client_auth="require",
        client_cert=material.garbage,
    )
    err = _err(lambda: build_server_context(cfg))
    assert "ListenerSecureSocket.client_cert" in str(err)


def test_no_password_in_any_error(material: Material, tmp_path: Path) -> None:
    def chain(exc: BaseException | None) -> Iterator[BaseException]:
        while exc is not None:
            yield exc
            exc = exc.__cause__ or exc.__context__

    cases: list[Callable[[], object]] = [
        _server(material, key_file=material.server_key_enc_pkcs8, key_password=WRONG),
        _server(material, key_file=material.server_key_enc_trad, key_password=WRONG),
        _server(material, key_file=material.other_key, key_password=WRONG),
        _server(material, key_file=material.garbage, key_password=WRONG),
        _server(material, cert_file=material.garbage, key_password=WRONG),
        _server(material, key_file=tmp_path / "missing", key_password=WRONG),
        lambda: build_server_context(
            ListenerSecureSocket(key=KeyStore(path=material.server_p12, password=WRONG))
        ),
        lambda: build_server_context(
            ListenerSecureSocket(key=KeyStore(path=material.garbage, password=WRONG))
        ),
        lambda: build_server_context(
            ListenerSecureSocket(key=KeyStore(path=material.trust_p12, password=PASSWORD))
        ),
        _client_with_trust(TrustStore(path=material.trust_p12, password=WRONG)),
        _client_with_trust(TrustStore(path=material.garbage, password=WRONG)),
        lambda: build_client_context(
            ClientSecureSocket(
                cert=material.ca_pem,
                key=KeyStore(path=material.client_p12, password=WRONG),
            )
        ),
    ]
    for case in cases:
        err = _err(case)
        for exc in chain(err):
            for secret in (PASSWORD, WRONG):
                assert secret not in str(exc), exc
                assert secret not in repr(exc), exc


# ---------------------------------------------------------------------------
# PKCS#12: the private key never lands in a readable file
# ---------------------------------------------------------------------------


class _LoadSpy:
    """Replaces SSLContext.load_cert_chain to look at what it is handed, then loads it."""

    def __init__(self, tmpdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmpdir = tmpdir
        self.seen: list[tuple[str, list[str], list[int]]] = []
        self.key_encrypted = False
        real = ssl.SSLContext.load_cert_chain

        def load_cert_chain(ctx: ssl.SSLContext, certfile: Any, *args: Any, **kw: Any) -> None:
            names = sorted(os.listdir(tmpdir))
            modes = [stat.S_IMODE(os.stat(tmpdir / n).st_mode) for n in names]
            path = os.fspath(certfile)
            target = os.readlink(path) if path.startswith("/proc/self/fd/") else path
            self.seen.append((target, names, modes))
            self.key_encrypted = b"ENCRYPTED PRIVATE KEY" in Path(path).read_bytes()
            real(ctx, certfile, *args, **kw)

        monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", load_cert_chain)


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    return tmpdir


@pytest.mark.skipif(not tls_files.memfd_available(), reason="needs memfd_create and /proc")
def test_keystore_goes_through_memfd(
    material: Material, private_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _LoadSpy(private_tmpdir, monkeypatch)
    key = KeyStore(path=material.server_p12, password=PASSWORD)
    build_server_context(ListenerSecureSocket(key=key))
    [(target, names, _)] = spy.seen
    assert target.startswith("/memfd:trio_tcp-keystore")
    assert names == []  # nothing in the temp dir while OpenSSL reads it
    assert not spy.key_encrypted  # anonymous memory: no need
    assert os.listdir(private_tmpdir) == []


def test_keystore_fallback_uses_private_temp_file(
    material: Material, private_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_files, "memfd_available", lambda: False)
    spy = _LoadSpy(private_tmpdir, monkeypatch)
    key = KeyStore(path=material.server_p12, password=PASSWORD)
    build_server_context(ListenerSecureSocket(key=key))
    [(path, names, modes)] = spy.seen
    assert Path(path).parent == private_tmpdir
    assert len(names) == 1
    assert all(mode & 0o077 == 0 for mode in modes)
    assert spy.key_encrypted  # with a one-time password, in case the file outlives us
    assert os.listdir(private_tmpdir) == []  # unlinked right after loading


def test_keystore_fallback_removes_file_on_error(
    material: Material, private_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_files, "memfd_available", lambda: False)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise ssl.SSLError(1, "boom")

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", fail)
    key = KeyStore(path=material.server_p12, password=PASSWORD)
    err = _err(lambda: build_server_context(ListenerSecureSocket(key=key)))
    assert "cannot load keystore" in str(err)
    assert os.listdir(private_tmpdir) == []


def test_keystore_without_password_loads(material: Material) -> None:
    key = KeyStore(path=material.server_p12_nopw)
    assert isinstance(build_server_context(ListenerSecureSocket(key=key)), ssl.SSLContext)


# ---------------------------------------------------------------------------
# Session timeout: what is applied, what is only warned about
# ---------------------------------------------------------------------------


def _bio_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Handshake two SSLObjects over memory BIOs, then let tickets arrive."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost", session=session)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for step in (client.do_handshake, server.do_handshake):
            with contextlib.suppress(ssl.SSLWantReadError):
                step()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    server.write(b"x")
    c_in.write(s_out.read())
    assert client.read(1) == b"x"  # also processes NewSessionTicket messages
    return client, server


@pytest.mark.parametrize(
    ("version", "timeout", "resumed"),
    [
        (ssl.TLSVersion.TLSv1_3, None, True),
        (ssl.TLSVersion.TLSv1_3, 0, False),
        (ssl.TLSVersion.TLSv1_2, None, True),
        # Documented limitation: session-ID resumption cannot be switched off.
        (ssl.TLSVersion.TLSv1_2, 0, True),
    ],
    ids=["tls13-default", "tls13-off", "tls12-default", "tls12-off-limitation"],
)
def test_session_timeout_zero_effect(
    material: Material,
    server_config: ListenerSecureSocket,
    caplog: pytest.LogCaptureFixture,
    version: ssl.TLSVersion,
    timeout: float | None,
    resumed: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    server_ctx = build_server_context(dataclasses.replace(server_config, session_timeout=timeout))
    client_ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem))
    client_ctx.maximum_version = version
    if timeout == 0:
        assert server_ctx.options & ssl.OP_NO_TICKET
        assert server_ctx.num_tickets == 0
        assert "session-ID resumption" in caplog.text
    first, _ = _bio_handshake(server_ctx, client_ctx)
    second, server = _bio_handshake(server_ctx, client_ctx, session=first.session)
    assert second.session_reused is resumed
    assert server.session_reused is resumed


def test_session_timeout_zero_tls13_only_does_not_warn(
    server_config: ListenerSecureSocket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    cfg = dataclasses.replace(
        server_config, session_timeout=0, protocol=TLSProtocol(versions=("TLSv1.3",))
    )
    build_server_context(cfg)
    assert caplog.records == []


def test_positive_session_timeout_warns_on_server(
    server_config: ListenerSecureSocket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    build_server_context(dataclasses.replace(server_config, session_timeout=300))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "session_timeout=300 cannot be applied" in record.getMessage()
    assert "7200" in record.getMessage()


def test_client_session_timeout_is_silent(
    material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_tcp")
    ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem, session_timeout=0))
    assert ctx.options & ssl.OP_NO_TICKET
    build_client_context(ClientSecureSocket(cert=material.ca_pem, session_timeout=60))
    assert caplog.records == []


# ---------------------------------------------------------------------------
# Handshake sanity checks over memory streams
# ---------------------------------------------------------------------------


async def _try_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any], list[trio.BrokenResourceError]]:
    """Handshake both ends; a failed end is closed so its peer fails too instead of hanging."""
    left, right = trio.testing.memory_stream_pair()
    client = trio.SSLStream(left, client_ctx, server_hostname=server_hostname)
    server = trio.SSLStream(right, server_ctx, server_side=True)
    errors: list[trio.BrokenResourceError] = []

    async def handshake(stream: trio.SSLStream[Any]) -> None:
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            errors.append(exc)
            await trio.aclose_forcefully(stream)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handshake, client)
            nursery.start_soon(handshake, server)
    return client, server, errors


async def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str = "localhost"
) -> tuple[trio.SSLStream[Any], trio.SSLStream[Any]]:
    client, server, errors = await _try_handshake(server_ctx, client_ctx, server_hostname)
    assert errors == []
    with trio.fail_after(5):
        await client.send_all(b"ping")
        assert await server.receive_some(4) == b"ping"
    return client, server


@pytest.mark.trio
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_handshake_and_peer_details(
    material: Material, server_config: ListenerSecureSocket, version: str
) -> None:
    protocol = TLSProtocol(versions=(version,))
    server_ctx = build_server_context(dataclasses.replace(server_config, protocol=protocol))
    client_ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem, protocol=protocol))
    client, server = await _handshake(server_ctx, client_ctx)
    negotiated, cipher, cert = peer_tls_details(client)
    assert negotiated == version
    assert cipher
    assert cert is not None
    assert ("DNS", "localhost") in cert["subjectAltName"]
    assert peer_tls_details(server)[2] is None  # no client certificate asked for


def test_peer_details_before_handshake(material: Material) -> None:
    ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem))
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert peer_tls_details(obj) == (None, None, None)


@pytest.mark.trio
async def test_keystore_chain_and_mutual_tls(material: Material) -> None:
    # The server's keystore carries the intermediate; the client trusts the root only.
    server_cfg = ListenerSecureSocket(
        key=KeyStore(path=material.server_p12, password=PASSWORD),
        client_auth="require",
        client_cert=TrustStore(path=material.trust_p12, password=PASSWORD),
    )
    client_cfg = ClientSecureSocket(
        cert=TrustStore(path=material.trust_p12, password=PASSWORD),
        key=CertKey(cert_file=material.client_crt, key_file=material.client_key),
    )
    _, server = await _handshake(build_server_context(server_cfg), build_client_context(client_cfg))
    cert = peer_tls_details(server)[2]
    assert cert is not None
    assert ("DNS", "client.example.org") in cert["subjectAltName"]


@pytest.mark.trio
async def test_required_client_certificate_missing_fails(material: Material) -> None:
    server_cfg = ListenerSecureSocket(
        key=CertKey(cert_file=material.server_crt, key_file=material.server_key),
        protocol=TLSProtocol(versions=("TLSv1.2",)),
        client_auth="require",
        client_cert=material.ca_pem,
    )
    client_cfg = ClientSecureSocket(
        cert=material.ca_pem, protocol=TLSProtocol(versions=("TLSv1.2",))
    )
    _, _, errors = await _try_handshake(
        build_server_context(server_cfg), build_client_context(client_cfg)
    )
    assert errors


@pytest.mark.trio
async def test_pinned_leaf_certificate_is_an_anchor(
    material: Material, server_config: ListenerSecureSocket
) -> None:
    client_ctx = build_client_context(ClientSecureSocket(cert=material.server_leaf))
    await _handshake(build_server_context(server_config), client_ctx)


@pytest.mark.trio
async def test_verify_hostname(material: Material, server_config: ListenerSecureSocket) -> None:
    server_ctx = build_server_context(server_config)
    lax = build_client_context(ClientSecureSocket(cert=material.ca_pem, verify_hostname=False))
    assert lax.verify_mode == ssl.CERT_REQUIRED
    await _handshake(server_ctx, lax, server_hostname="wrong.example")
    strict = build_client_context(ClientSecureSocket(cert=material.ca_pem))
    _, _, errors = await _try_handshake(server_ctx, strict, server_hostname="wrong.example")
    assert any(isinstance(e.__cause__, ssl.SSLCertVerificationError) for e in errors)


@pytest.mark.trio
async def test_cipher_restriction_is_negotiated(
    material: Material, server_config: ListenerSecureSocket
) -> None:
    server_cfg = dataclasses.replace(
        server_config,
        protocol=TLSProtocol(versions=("TLSv1.2",)),
        ciphers=("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",),
    )
    client_ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem))
    client, _ = await _handshake(build_server_context(server_cfg), client_ctx)
    assert peer_tls_details(client)[1] == "ECDHE-ECDSA-AES256-GCM-SHA384"


@pytest.mark.trio
async def test_legacy_tls10_handshakes_when_listed(
    material: Material, server_config: ListenerSecureSocket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    protocol = TLSProtocol(versions=("TLSv1",))
    server_ctx = build_server_context(dataclasses.replace(server_config, protocol=protocol))
    client_ctx = build_client_context(ClientSecureSocket(cert=material.ca_pem, protocol=protocol))
    client, _ = await _handshake(server_ctx, client_ctx)
    assert peer_tls_details(client)[0] == "TLSv1"


@pytest.mark.trio
async def test_default_server_refuses_tls10_client(
    material: Material, server_config: ListenerSecureSocket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_tcp")
    client_cfg = ClientSecureSocket(cert=material.ca_pem, protocol=TLSProtocol(versions=("TLSv1",)))
    _, _, errors = await _try_handshake(
        build_server_context(server_config), build_client_context(client_cfg)
    )
    assert errors
