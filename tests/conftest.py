"""Shared test configuration, and the certificates every TLS test shares.

Every async test is marked ``@pytest.mark.trio`` and bounds itself with
``trio.fail_after``, so a hang is a failure and never a stuck CI run.

Certificates come from one trustme CA per session (issuing keys is the slow
part of a TLS test): a server certificate for every loopback name, a client
certificate, their PEM files, and ready ``ssl`` contexts, the server's once
per TLS version (tests that take ``server_context`` run for both).
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
from collections.abc import Iterator

import pytest
import trustme
from _certs import TLS_VERSIONS, PemFiles
from hypothesis import HealthCheck, settings

# A shell starts background jobs with SIGINT ignored, and processes inherit that:
# the tests that press Ctrl-C on the trio-tcp command need it delivered.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Real sockets make example timing noisy; correctness, not speed, is under test.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("default"), max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(autouse=True)
def _library_logging_restored() -> Iterator[None]:
    """Undo what a test's in-process ``trio-tcp`` run does to the ``trio_tcp`` loggers.

    The command configures logging for its whole process (a handler on
    stderr, no propagation to the root logger), which is right for a command
    and wrong for the tests after it: their ``caplog`` would see nothing.
    """
    loggers = [logging.getLogger("trio_tcp"), logging.getLogger("trio_tcp.cli")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


# -- certificates ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The session's certificate authority."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_leaf(ca: trustme.CA) -> trustme.LeafCert:
    """A server certificate for ``localhost``, ``127.0.0.1`` and ``::1``."""
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="session")
def client_leaf(ca: trustme.CA) -> trustme.LeafCert:
    """A client certificate for ``client.example.org``."""
    return ca.issue_cert("client.example.org")


@pytest.fixture(scope="session")
def pem_files(
    ca: trustme.CA,
    server_leaf: trustme.LeafCert,
    client_leaf: trustme.LeafCert,
    tmp_path_factory: pytest.TempPathFactory,
) -> PemFiles:
    """The CA and both certificates as PEM files."""
    directory = tmp_path_factory.mktemp("certs")
    files = PemFiles(
        ca=directory / "ca.pem",
        server_crt=directory / "server.crt",
        server_key=directory / "server.key",
        client_crt=directory / "client.crt",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(ca.cert_pem.bytes())
    files.server_crt.write_bytes(server_leaf.cert_chain_pems[0].bytes())
    files.server_key.write_bytes(server_leaf.private_key_pem.bytes())
    files.client_crt.write_bytes(client_leaf.cert_chain_pems[0].bytes())
    files.client_key.write_bytes(client_leaf.private_key_pem.bytes())
    return files


@pytest.fixture(scope="session", params=list(TLS_VERSIONS))
def tls_version(request: pytest.FixtureRequest) -> str:
    """A TLS version, ``"TLSv1.2"`` or ``"TLSv1.3"``: a test that takes it runs for both."""
    version: str = request.param
    return version


@pytest.fixture(scope="session")
def server_context(server_leaf: trustme.LeafCert, tls_version: str) -> ssl.SSLContext:
    """A server context with the shared server certificate, allowing only ``tls_version``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_leaf.configure_cert(context)
    context.minimum_version = context.maximum_version = TLS_VERSIONS[tls_version]
    return context


@pytest.fixture(scope="session")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the session's CA (any TLS version the server allows)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
