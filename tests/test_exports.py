"""The public surface: pinned, documented, and shown as ``trio_tcp.X``."""

from __future__ import annotations

import inspect
import types

import pytest

import trio_tcp
import trio_tcp.framing

EXPECTED = {
    "Client",
    "Listener",
    "ListenerOptions",
    "ListenerStats",
    "open_tcp_listeners",
    "serve",
    "Caller",
    "ConnectionService",
    "Group",
    "ProxyInfo",
    "Service",
    "CertKey",
    "ClientSecureSocket",
    "KeyStore",
    "ListenerSecureSocket",
    "TLSProtocol",
    "TrustStore",
    "framing",
    "Error",
    "BindError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionClosedError",
    "FramingError",
    "OutboxFullError",
    "ReadTimeoutError",
    "TLSError",
    "UsageError",
    "WriteTimeoutError",
}
TESTING = {"MemoryServer", "MemoryStream", "open_memory_server", "open_service_client"}


def test_all_is_pinned() -> None:
    assert set(trio_tcp.__all__) == EXPECTED
    assert len(trio_tcp.__all__) == len(EXPECTED), "duplicates in __all__"


def test_testing_exports() -> None:
    import trio_tcp.testing

    assert set(trio_tcp.testing.__all__) == TESTING


def test_listener_options_are_declared_once() -> None:
    # The typed keywords and the validated config must name the same options.
    from dataclasses import fields

    from trio_tcp._options import ListenerConfig

    assert set(trio_tcp.ListenerOptions.__annotations__) == {f.name for f in fields(ListenerConfig)}


def test_plain_import_loads_no_tls_file_machinery() -> None:
    # cryptography (key files, PKCS#12) and trustme (the CLI's demo certificates)
    # are imported only when used: a plain TCP user pays for neither.
    import subprocess
    import sys

    code = (
        "import sys, trio_tcp, trio_tcp.framing, trio_tcp.testing;"
        "heavy = [m for m in ('cryptography', 'trustme') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_framing_exports() -> None:
    assert {"Delimited", "LengthPrefixed", "Framing", "Decoder"} <= set(trio_tcp.framing.__all__)


def _public_objects() -> list[tuple[str, object]]:
    import trio_tcp.testing

    objects = [(name, getattr(trio_tcp, name)) for name in trio_tcp.__all__]
    objects += [(f"framing.{n}", getattr(trio_tcp.framing, n)) for n in trio_tcp.framing.__all__]
    objects += [(f"testing.{n}", getattr(trio_tcp.testing, n)) for n in trio_tcp.testing.__all__]
    return [(n, o) for n, o in objects if not isinstance(o, (types.ModuleType, int))]


@pytest.mark.parametrize(("name", "obj"), _public_objects(), ids=lambda v: str(v)[:40])
def test_public_objects_have_docstrings(name: str, obj: object) -> None:
    assert inspect.getdoc(obj), f"{name} has no docstring"


@pytest.mark.parametrize(("name", "obj"), _public_objects(), ids=lambda v: str(v)[:40])
def test_public_objects_name_their_public_module(name: str, obj: object) -> None:
    module = getattr(obj, "__module__", "trio_tcp")
    assert not module.startswith("trio_tcp._"), f"{name} shows as {module}"


def _public_methods() -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, obj in _public_objects():
        if not isinstance(obj, type):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_"):
                continue
            if inspect.isfunction(value) or isinstance(value, (property, classmethod)):
                found.append((f"{name}.{attr}", value))
    return found


@pytest.mark.parametrize(("name", "method"), _public_methods(), ids=lambda v: str(v)[:50])
def test_public_methods_have_docstrings(name: str, method: object) -> None:
    target = method.__func__ if isinstance(method, classmethod) else method
    assert inspect.getdoc(target), f"{name} has no docstring"


def test_version() -> None:
    assert isinstance(trio_tcp.__version__, str)
    assert trio_tcp.__version__.count(".") == 2
