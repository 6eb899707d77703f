"""Certificate, key and PKCS#12 files: read once, checked, then loaded into OpenSSL.

OpenSSL's errors do not say which file is wrong, and it reports garbage and a
wrong password alike ("PEM lib"). So every file is read here, parsed with
``cryptography`` first, and each failure becomes a
:class:`~trio_tcp.ConfigurationError` that names the path and the field
(``where``) and never a password. Key loads always pass OpenSSL a ``password``
callable, so it never prompts on a terminal.

``load_cert_chain`` only takes file names, so PKCS#12 material is re-encoded as
PEM into an anonymous ``memfd`` (Linux), opened by OpenSSL as
``/proc/self/fd/N``; elsewhere into a ``mkstemp`` file (mode 0600, key
encrypted with a one-time password) that is unlinked right after loading.
Trusted certificates are handed over as PEM text (``cadata``): no file at all.

This module knows nothing of the configuration classes: callers pass paths,
passwords and the field name to blame.
"""

from __future__ import annotations

import os
import secrets
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

    StrPath = str | os.PathLike[str]

__all__ = [
    "MAX_TLS_FILE_SIZE",
    "ca_file_pem",
    "load_cert_key",
    "load_keystore",
    "memfd_available",
    "truststore_pem",
]

#: Largest certificate, key or store file read. A system CA bundle is ~200 KiB;
#: anything far larger is a wrong path, and must not be read into memory.
MAX_TLS_FILE_SIZE = 4 * 1024 * 1024


def _read(path: StrPath, what: str, where: str) -> bytes:
    """Read a whole regular file, or raise a ConfigurationError naming it."""
    shown = os.fspath(path)
    try:
        # O_NONBLOCK: a FIFO at the path must not block us until a writer appears.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{what} file not found: {shown} ({where})") from exc
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} file {shown} ({where}): {exc.strerror or exc}"
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigurationError(f"{what} file {shown} is not a regular file ({where})")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read(MAX_TLS_FILE_SIZE + 1)
    except OSError as exc:  # pragma: no cover - e.g. EIO on a failing disk
        raise ConfigurationError(
            f"cannot read {what} file {shown} ({where}): {exc.strerror or exc}"
        ) from exc
    finally:
        os.close(fd)
    if len(data) > MAX_TLS_FILE_SIZE:
        raise ConfigurationError(
            f"{what} file {shown} is larger than {MAX_TLS_FILE_SIZE} bytes ({where})"
        )
    return data


def _parse_certs(data: bytes, path: StrPath, where: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid certificate file {os.fspath(path)} (not PEM) ({where})"
        ) from exc


def _parse_key(data: bytes, password: str | None, path: StrPath, where: str) -> PrivateKeyTypes:
    shown = os.fspath(path)
    secret = None if password is None else password.encode()
    try:
        return serialization.load_pem_private_key(data, secret)
    except TypeError as exc:
        if secret is None:
            raise ConfigurationError(
                f"key {shown} is encrypted; key_password is required ({where})"
            ) from exc
        # A password for an unencrypted key: OpenSSL ignores it, and so do we.
        return _parse_key(data, None, path, where)
    except ValueError as exc:
        encrypted = b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data
        if secret is not None and encrypted:
            raise ConfigurationError(f"wrong key password for {shown} ({where})") from exc
        raise ConfigurationError(
            f"invalid private key file {shown} (not a PEM private key) ({where})"
        ) from exc
    except UnsupportedAlgorithm as exc:  # pragma: no cover - depends on the OpenSSL build
        raise ConfigurationError(
            f"private key {shown} uses an unsupported algorithm ({where})"
        ) from exc


def _same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    except (ValueError, UnsupportedAlgorithm):  # pragma: no cover - exotic key types
        return False


def _open_pkcs12(
    path: StrPath, password: str | None, what: str, where: str
) -> pkcs12.PKCS12KeyAndCertificates:
    data = _read(path, what, where)
    secret = None if password is None else password.encode()
    try:
        return pkcs12.load_pkcs12(data, secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(
            f"cannot open {what} {os.fspath(path)}: wrong password or corrupt file ({where})"
        ) from exc


def _password_callback(password: str | None, shown: str, where: str) -> Callable[[], bytes]:
    def callback() -> bytes:
        # OpenSSL calls this only for an encrypted key. Raising (rather than
        # passing no callback at all) is what keeps it from prompting on a TTY.
        if password is None:
            raise ConfigurationError(
                f"key {shown} is encrypted; key_password is required ({where})"
            )
        return password.encode()

    return callback


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or type(exc).__name__)


def memfd_available() -> bool:
    """Whether PKCS#12 keys can be handed to OpenSSL through an anonymous memfd."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


@contextmanager
def _secret_file(data: bytes) -> Iterator[str]:
    """Yield a path OpenSSL can open that holds ``data``, never a readable file on disk."""
    if memfd_available():
        fd = os.memfd_create("trio_tcp-keystore", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="trio_tcp-", suffix=".pem")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield name
    finally:
        with suppress(FileNotFoundError):
            os.unlink(name)


def load_cert_key(
    ctx: ssl.SSLContext, cert_file: StrPath, key_file: StrPath, password: str | None, where: str
) -> None:
    """Check a PEM certificate chain and key, then load them into ``ctx``.

    Raises:
        ConfigurationError: naming ``where.cert_file`` / ``where.key_file``.
    """
    cert_at, key_at = f"{where}.cert_file", f"{where}.key_file"
    certs = _parse_certs(_read(cert_file, "certificate", cert_at), cert_file, cert_at)
    private = _parse_key(_read(key_file, "private key", key_at), password, key_file, key_at)
    cert_path, key_path = os.fspath(cert_file), os.fspath(key_file)
    if not _same_key(certs[0], private):
        raise ConfigurationError(
            f"private key {key_path} does not match certificate {cert_path} ({where})"
        )
    try:
        ctx.load_cert_chain(
            cert_path, key_path, password=_password_callback(password, key_path, key_at)
        )
    except ConfigurationError:  # pragma: no cover - from the callback; the pre-check came first
        raise
    except (ssl.SSLError, OSError, ValueError) as exc:  # pragma: no cover - checked above
        raise ConfigurationError(
            f"cannot load certificate {cert_path} with key {key_path} ({where}): {_reason(exc)}"
        ) from exc


def load_keystore(ctx: ssl.SSLContext, path: StrPath, password: str | None, where: str) -> None:
    """Load the key and certificate chain of a PKCS#12 file into ``ctx``.

    Raises:
        ConfigurationError: naming ``where.path``.
    """
    where = f"{where}.path"
    shown = os.fspath(path)
    bundle = _open_pkcs12(path, password, "keystore", where)
    if bundle.key is None:
        raise ConfigurationError(f"keystore {shown} holds no private key ({where})")
    certs = [c.certificate for c in ([bundle.cert] if bundle.cert else [])]
    certs += [c.certificate for c in bundle.additional_certs]
    leaf = next((c for c in certs if _same_key(c, bundle.key)), None)
    if leaf is None:
        raise ConfigurationError(
            f"keystore {shown} holds no certificate for its private key ({where})"
        )
    # Off Linux the PEM goes through a real (0600, at once unlinked) file:
    # encrypt the key in it with a one-time password, in case it outlives us.
    one_time = None if memfd_available() else secrets.token_urlsafe(32)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if one_time is None
        else serialization.BestAvailableEncryption(one_time.encode())
    )
    pem = bundle.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pem += b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *(c for c in certs if c != leaf)]
    )
    try:
        with _secret_file(pem) as secret_path:
            ctx.load_cert_chain(secret_path, password=_password_callback(one_time, shown, where))
    except (ssl.SSLError, OSError) as exc:  # pragma: no cover - re-encoded by us just now
        raise ConfigurationError(f"cannot load keystore {shown} ({where}): {_reason(exc)}") from exc


def ca_file_pem(path: StrPath, where: str) -> str:
    """Return the certificates of a PEM CA (or pinned certificate) file, re-encoded.

    Raises:
        ConfigurationError: naming ``where``.
    """
    certs = _parse_certs(_read(path, "CA certificate", where), path, where)
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def truststore_pem(path: StrPath, password: str | None, where: str) -> str:
    """Return every certificate of a PKCS#12 truststore as PEM text.

    Raises:
        ConfigurationError: naming ``where.path``.
    """
    where = f"{where}.path"
    bundle = _open_pkcs12(path, password, "truststore", where)
    certs = [c.certificate for c in ([bundle.cert] if bundle.cert else [])]
    certs += [c.certificate for c in bundle.additional_certs]
    if not certs:
        raise ConfigurationError(f"truststore {os.fspath(path)} contains no certificate ({where})")
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)
