"""TLS configuration: frozen settings in, one :class:`ssl.SSLContext` out.

Theory of operation
-------------------
The settings (:class:`ListenerSecureSocket`, :class:`ClientSecureSocket` and
the key and trust sources they hold) are frozen dataclasses whose
``__post_init__`` does only cheap checks: types, empty paths, timeouts, version
and cipher names (see ``_ciphers``). Nothing touches the disk there.

:func:`build_server_context` and :func:`build_client_context` run when a
listener starts or a client connects, before any socket exists. They start
from :func:`ssl.create_default_context`, set the version span and ciphers,
then let ``_tls_files`` read, check and load every key and certificate file,
so a bad file becomes a :class:`ConfigurationError` naming its path and field
(never a password, never a terminal prompt).

What Python's :mod:`ssl` cannot do is said, not hidden: TLS 1.3 suites cannot
be restricted (a list of only TLS 1.3 suites is an error), and OpenSSL's
session lifetime cannot be set (``_apply_session_timeout`` does what can be
done and logs a warning about the rest). TLS 1.0/1.1 run only when listed,
at OpenSSL security level 0, with a logged warning.
"""

from __future__ import annotations

import logging
import os
import ssl
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from ._ciphers import select_ciphers
from ._config import check_timeout
from ._errors import ConfigurationError

__all__ = [
    "CertKey",
    "ClientSecureSocket",
    "KeyStore",
    "ListenerSecureSocket",
    "TLSProtocol",
    "TrustStore",
    "build_client_context",
    "build_server_context",
]

logger = logging.getLogger("trio_tcp")

StrPath: TypeAlias = "str | os.PathLike[str]"
ClientAuth: TypeAlias = Literal["none", "optional", "require"]

#: Handshake deadline, in seconds. Ballerina's default is 0 (no deadline), which
#: lets a client that never finishes its hello hold a connection forever; 10 s
#: is Netty's default (nginx uses 60 s).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: Lifetime OpenSSL 1.1.1/3.x gives server sessions and tickets (a TLS server's
#: ``ticket_lifetime_hint`` is 7200); Python has no way to change it.
OPENSSL_SESSION_LIFETIME = 7200

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_VERSION_NAMES = "TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
# With TLS 1.0/1.1 allowed, the default suites (AEAD/SHA-2 only) would leave
# those versions nothing to negotiate, and OpenSSL 3's default security level
# forbids their SHA-1 handshake signatures: keep forward-secret AES/ChaCha
# suites including the SHA-1 CBC ones, at security level 0.
_LEGACY_CIPHERS = "ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!AESCCM"
_LEGACY_LEVEL = ":@SECLEVEL=0"
_CLIENT_AUTH_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "require": ssl.CERT_REQUIRED,
}


# ---------------------------------------------------------------------------
# Cheap checks, run by __post_init__
# ---------------------------------------------------------------------------


def _check_path(name: str, value: object) -> None:
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str):
        raise TypeError(f"{name} must be a str or os.PathLike[str], got {type(value).__name__}")
    if not os.fspath(value):
        raise ConfigurationError(f"certificate file location must be provided ({name})")


def _check_password(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        # The value itself may be a secret: name its type only.
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")


def _as_tuple(name: str, value: object) -> tuple[str, ...]:
    """Return a list or tuple of names as a tuple (hashable), or raise TypeError."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple of str, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{name} entries must be str, got {type(item).__name__}")
    return tuple(value)


def _normalise(cfg: object, **values: object) -> None:
    """Store checked values on a frozen config in ``__post_init__``, the one place that may.

    A list given where a tuple is declared becomes a tuple (so the config
    stays hashable), an int timeout a float.
    """
    for name, value in values.items():
        object.__setattr__(cfg, name, value)


def _check_trust_source(name: str, value: object) -> None:
    if not isinstance(value, TrustStore):
        _check_path(name, value)


def _check_common(cfg: ListenerSecureSocket | ClientSecureSocket, owner: str) -> None:
    """Checks shared by both sides: protocol, ciphers, timeouts (normalised in place)."""
    if cfg.protocol is not None and not isinstance(cfg.protocol, TLSProtocol):
        raise TypeError(f"{owner}.protocol must be a TLSProtocol or None")
    ciphers = _as_tuple(f"{owner}.ciphers", cfg.ciphers)
    selected = select_ciphers(ciphers, f"{owner}.ciphers")
    if selected and _span(cfg.protocol)[0] == ssl.TLSVersion.TLSv1_3:
        raise ConfigurationError(
            f"{owner}.ciphers restricts TLS 1.2 and older only, but the protocol allows "
            "only TLSv1.3: the list would have no effect"
        )
    _normalise(
        cfg,
        ciphers=ciphers,
        handshake_timeout=check_timeout(
            f"{owner}.handshake_timeout", cfg.handshake_timeout, allow_zero=False
        ),
        session_timeout=check_timeout(f"{owner}.session_timeout", cfg.session_timeout),
    )


def _span(protocol: TLSProtocol | None) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    versions = [_VERSIONS[v] for v in (protocol or TLSProtocol()).versions]
    return min(versions), max(versions)


# ---------------------------------------------------------------------------
# Public configuration types
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CertKey:
    """A certificate (chain) and its private key, both PEM files.

    Attributes:
        cert_file: PEM file with the certificate first, then any intermediates.
        key_file: PEM private key, PKCS#8 or traditional, encrypted or not. It
            may be the same file as ``cert_file``.
        key_password: Password of an encrypted key. Required when the key is
            encrypted (there is never a terminal prompt); ignored otherwise.
            Not shown in ``repr``.
    """

    cert_file: StrPath
    key_file: StrPath
    key_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_path("CertKey.cert_file", self.cert_file)
        _check_path("CertKey.key_file", self.key_file)
        _check_password("CertKey.key_password", self.key_password)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyStore:
    """A PKCS#12 file (``.p12``/``.pfx``) holding a private key and its certificate chain.

    Attributes:
        path: The PKCS#12 file.
        password: Its password; ``None`` for an unprotected file. Not shown in ``repr``.
    """

    path: StrPath
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_path("KeyStore.path", self.path)
        _check_password("KeyStore.password", self.password)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustStore:
    """A PKCS#12 file whose certificates are all trusted (e.g. a Java truststore in PKCS#12).

    Attributes:
        path: The PKCS#12 file.
        password: Its password; ``None`` for an unprotected file. Not shown in ``repr``.
    """

    path: StrPath
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_path("TrustStore.path", self.path)
        _check_password("TrustStore.password", self.password)


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSProtocol:
    """Which TLS versions may be negotiated.

    Attributes:
        name: Must be ``"TLS"`` (SSL is not supported).
        versions: Names among ``"TLSv1"`` (alias ``"TLSv1.0"``), ``"TLSv1.1"``,
            ``"TLSv1.2"``, ``"TLSv1.3"``; they must form a contiguous range, which
            becomes the context's minimum and maximum version. TLS 1.0 and 1.1
            are enabled only when listed, and then OpenSSL's security level is
            lowered to 0 (OpenSSL 3 refuses their SHA-1 handshake otherwise).
    """

    name: str = "TLS"
    versions: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"TLSProtocol.name must be a str, got {type(self.name).__name__}")
        if not (self.name.isascii() and self.name.upper() == "TLS"):
            raise ConfigurationError(
                f"TLSProtocol.name must be 'TLS', got {self.name!r} (only TLS is supported)"
            )
        versions = _as_tuple("TLSProtocol.versions", self.versions)
        _normalise(self, versions=versions)
        if not versions:
            raise ConfigurationError(f"TLSProtocol.versions is empty; valid: {_VERSION_NAMES}")
        for version in versions:
            if version.upper().startswith("SSL"):
                raise ConfigurationError(
                    f"{version!r} is not supported (insecure, removed from OpenSSL) "
                    f"in TLSProtocol.versions; valid: {_VERSION_NAMES}"
                )
            if version not in _VERSIONS:
                raise ConfigurationError(
                    f"unknown TLS version {version!r} in TLSProtocol.versions; "
                    f"valid: {_VERSION_NAMES}"
                )
        wanted = {_VERSIONS[v] for v in versions}
        missing = [
            v for v in _VERSIONS.values() if min(wanted) < v < max(wanted) and v not in wanted
        ]
        if missing:
            raise ConfigurationError(
                f"TLSProtocol.versions {versions!r} leaves a gap that OpenSSL would enable "
                f"anyway ({', '.join(_version_name(v) for v in missing)}); list a contiguous range"
            )


def _version_name(version: ssl.TLSVersion) -> str:
    return next(name for name, value in _VERSIONS.items() if value == version)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerSecureSocket:
    """TLS settings of a listener (Ballerina ``ListenerSecureSocket``).

    Attributes:
        key: The server's certificate and key (:class:`CertKey` or :class:`KeyStore`).
        protocol: Allowed versions; ``None`` means TLS 1.2 and 1.3.
        ciphers: TLS 1.2-and-older suites, IANA or OpenSSL names, one per entry
            (a list is stored as a tuple). Empty: OpenSSL's defaults via Python.
            TLS 1.3 suites are always enabled and cannot be restricted.
        handshake_timeout: Seconds a connection gets to finish its handshake
            before it is closed; ``None`` disables the deadline (not advised).
        session_timeout: ``0`` disables TLS 1.3 and ticket resumption; other
            values cannot be applied by Python and log a warning (see the docs).
        client_auth: ``"none"``, ``"optional"`` (verify a certificate if the
            client sends one) or ``"require"`` (mutual TLS).
        client_cert: CA file (PEM) or :class:`TrustStore` that client
            certificates must chain to; required unless ``client_auth`` is ``"none"``.
    """

    key: CertKey | KeyStore
    protocol: TLSProtocol | None = None
    ciphers: tuple[str, ...] = ()
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    session_timeout: float | None = None
    client_auth: ClientAuth = "none"
    client_cert: StrPath | TrustStore | None = None

    def __post_init__(self) -> None:
        key: object = self.key
        if not isinstance(key, (CertKey, KeyStore)):
            got = type(key).__name__
            raise TypeError(f"ListenerSecureSocket.key must be a CertKey or KeyStore, got {got}")
        _check_common(self, "ListenerSecureSocket")
        if self.client_auth not in _CLIENT_AUTH_MODES:
            raise ConfigurationError(
                "ListenerSecureSocket.client_auth must be 'none', 'optional' or 'require', "
                f"got {self.client_auth!r}"
            )
        if self.client_cert is None:
            if self.client_auth != "none":
                raise ConfigurationError(
                    f"ListenerSecureSocket.client_auth={self.client_auth!r} needs client_cert "
                    "(the CA file or TrustStore that client certificates are checked against)"
                )
        elif self.client_auth == "none":
            raise ConfigurationError(
                "ListenerSecureSocket.client_cert is set but client_auth is 'none', so it "
                "would never be used; set client_auth to 'optional' or 'require'"
            )
        else:
            _check_trust_source("ListenerSecureSocket.client_cert", self.client_cert)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientSecureSocket:
    """TLS settings of a client (Ballerina ``ClientSecureSocket``).

    Attributes:
        enable: ``False`` means plain TCP; every other field is then ignored and
            not validated.
        cert: What the server's certificate must chain to: a PEM file of CA
            certificates or of the server's own certificate, or a
            :class:`TrustStore`. ``None``: the system's default CAs.
        key: Client certificate and key for mutual TLS (:class:`CertKey` or :class:`KeyStore`).
        protocol: Allowed versions; ``None`` means TLS 1.2 and 1.3.
        ciphers: As for :class:`ListenerSecureSocket`.
        handshake_timeout: Seconds the connect may spend on the handshake;
            ``None`` disables the deadline.
        session_timeout: Accepted for parity; ``0`` also stops asking for TLS
            1.2 tickets. trio_tcp clients never resume sessions (see the docs).
        server_name: Name sent as SNI and checked against the certificate;
            ``None``: the host connected to.
        verify_hostname: Check that the certificate names the server. The
            chain is always verified, whatever this says.
    """

    enable: bool = True
    cert: StrPath | TrustStore | None = None
    key: CertKey | KeyStore | None = None
    protocol: TLSProtocol | None = None
    ciphers: tuple[str, ...] = ()
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    session_timeout: float | None = None
    server_name: str | None = None
    verify_hostname: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.enable, bool):
            raise TypeError(f"ClientSecureSocket.enable must be a bool, got {self.enable!r}")
        if not self.enable:
            ciphers: object = self.ciphers
            if isinstance(ciphers, list):  # stay hashable; nothing else is looked at
                _normalise(self, ciphers=tuple(ciphers))
            return
        if self.cert is not None:
            _check_trust_source("ClientSecureSocket.cert", self.cert)
        if self.key is not None and not isinstance(self.key, (CertKey, KeyStore)):
            raise TypeError(
                "ClientSecureSocket.key must be a CertKey, KeyStore or None, "
                f"got {type(self.key).__name__}"
            )
        _check_common(self, "ClientSecureSocket")
        if self.server_name is not None:
            if not isinstance(self.server_name, str):
                raise TypeError("ClientSecureSocket.server_name must be a str or None")
            if not self.server_name:
                raise ConfigurationError("ClientSecureSocket.server_name must not be empty")
        if not isinstance(self.verify_hostname, bool):
            raise TypeError("ClientSecureSocket.verify_hostname must be a bool")


# ---------------------------------------------------------------------------
# Building a context
# ---------------------------------------------------------------------------


def _load_identity(ctx: ssl.SSLContext, key: CertKey | KeyStore, where: str) -> None:
    # Reading key files needs cryptography: imported here, never by ``import trio_tcp``.
    from ._tls_files import load_cert_key, load_keystore

    if isinstance(key, CertKey):
        load_cert_key(ctx, key.cert_file, key.key_file, key.key_password, where)
    else:
        load_keystore(ctx, key.path, key.password, where)


def _trusted_pem(source: StrPath | TrustStore, where: str) -> str:
    from ._tls_files import ca_file_pem, truststore_pem

    if isinstance(source, TrustStore):
        return truststore_pem(source.path, source.password, where)
    return ca_file_pem(source, where)


def _apply_protocol(
    ctx: ssl.SSLContext, cfg: ListenerSecureSocket | ClientSecureSocket, where: str
) -> None:
    low, high = _span(cfg.protocol)
    legacy = low < ssl.TLSVersion.TLSv1_2
    with warnings.catch_warnings():
        # Setting TLSv1/TLSv1_1 warns "deprecated"; the user asked for them by name.
        warnings.filterwarnings("ignore", r"ssl\.TLSVersion\.TLSv1", DeprecationWarning)
        ctx.minimum_version = low
        ctx.maximum_version = high
    selected = select_ciphers(cfg.ciphers, f"{where}.ciphers")
    if selected or legacy:
        spec = ":".join(selected) if selected else _LEGACY_CIPHERS
        try:
            ctx.set_ciphers(spec + (_LEGACY_LEVEL if legacy else ""))
        except ssl.SSLError as exc:  # pragma: no cover - every name was checked
            raise ConfigurationError(f"no usable cipher in {where}.ciphers") from exc
    if legacy:
        logger.warning(
            "%s enables %s: OpenSSL security level lowered to 0 for this context",
            where,
            _version_name(low),
        )


def _apply_session_timeout(
    ctx: ssl.SSLContext, timeout: float | None, where: str, *, server: bool
) -> None:
    """Apply what Python allows of ``session_timeout``, and say what it does not.

    CPython's ``SSLContext`` has no setter for ``SSL_CTX_set_timeout``, and
    ``SSLSession.timeout`` is read-only, so a lifetime cannot be set. What can
    be done: ``OP_NO_TICKET`` stops TLS 1.2 tickets, and ``num_tickets = 0``
    stops TLS 1.3 tickets, which are TLS 1.3's only way to resume. TLS 1.2
    session-ID resumption from the server's cache stays possible.
    """
    if timeout is None:
        return
    if timeout == 0:
        ctx.options |= ssl.OP_NO_TICKET
        if server:
            ctx.num_tickets = 0
            if ctx.minimum_version < ssl.TLSVersion.TLSv1_3:
                logger.warning(
                    "%s.session_timeout=0: TLS 1.3 resumption and TLS 1.2 tickets are off, "
                    "but Python cannot turn off TLS 1.2 session-ID resumption "
                    "(OpenSSL keeps those sessions for %d s)",
                    where,
                    OPENSSL_SESSION_LIFETIME,
                )
        return
    if server:
        logger.warning(
            "%s.session_timeout=%g cannot be applied: Python's ssl module cannot set "
            "OpenSSL's session lifetime, which stays %d s (use 0 to turn resumption off)",
            where,
            timeout,
            OPENSSL_SESSION_LIFETIME,
        )
    # Client side there is nothing to apply: trio.SSLStream never offers a
    # saved session, so no session is ever used past its first connection.


@contextmanager
def _openssl_errors(where: str) -> Iterator[None]:
    """Last line of defence: OpenSSL refusing what cryptography accepted."""
    try:
        yield
    except ssl.SSLError as exc:  # pragma: no cover - every input was checked first
        reason = exc.reason or type(exc).__name__
        raise ConfigurationError(f"OpenSSL refused the {where} settings: {reason}") from exc


# ---------------------------------------------------------------------------
# Builders and connection details
# ---------------------------------------------------------------------------


def build_server_context(config: ListenerSecureSocket) -> ssl.SSLContext:
    """Build the server-side context for a listener.

    Reads and checks every file the configuration names.

    Args:
        config: The listener's TLS settings.

    Returns:
        A new :class:`ssl.SSLContext` for ``server_side=True`` streams.

    Raises:
        ConfigurationError: A file is missing, unreadable or malformed, a key
            does not match its certificate, a password is wrong or missing, or
            a keystore or truststore cannot be opened. The message names the
            field and the path, never a password.
        TypeError: ``config`` is not a :class:`ListenerSecureSocket`.
    """
    if not isinstance(config, ListenerSecureSocket):
        raise TypeError(f"expected a ListenerSecureSocket, got {type(config).__name__}")
    where = "ListenerSecureSocket"
    with _openssl_errors(where):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        _apply_protocol(ctx, config, where)
        _load_identity(ctx, config.key, f"{where}.key")
        if config.client_cert is not None:
            ctx.verify_mode = _CLIENT_AUTH_MODES[config.client_auth]
            pem = _trusted_pem(config.client_cert, f"{where}.client_cert")
            ctx.load_verify_locations(cadata=pem)
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        _apply_session_timeout(ctx, config.session_timeout, where, server=True)
    return ctx


def build_client_context(config: ClientSecureSocket) -> ssl.SSLContext:
    """Build the client-side context for a connection.

    The server's chain is always verified (``CERT_REQUIRED``);
    ``verify_hostname`` only decides whether its name is checked too. The
    caller passes ``config.server_name`` (or the host) as ``server_hostname``.

    Args:
        config: The client's TLS settings, with ``enable=True``.

    Returns:
        A new :class:`ssl.SSLContext` for client streams.

    Raises:
        ConfigurationError: As for :func:`build_server_context`.
        TypeError: ``config`` is not a :class:`ClientSecureSocket`.
        ValueError: ``config.enable`` is ``False`` (plain TCP has no context).
    """
    if not isinstance(config, ClientSecureSocket):
        raise TypeError(f"expected a ClientSecureSocket, got {type(config).__name__}")
    if not config.enable:
        raise ValueError("ClientSecureSocket.enable is False: the connection is plain TCP")
    where = "ClientSecureSocket"
    with _openssl_errors(where):
        if config.cert is None:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
        else:
            # Given anchors replace the system's CAs (create_default_context
            # loads those only when given none). Every listed certificate is an
            # anchor, so a pinned, not self-signed server certificate works too.
            pem = _trusted_pem(config.cert, f"{where}.cert")
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pem)
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.check_hostname = config.verify_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        _apply_protocol(ctx, config, where)
        if config.key is not None:
            _load_identity(ctx, config.key, f"{where}.key")
        _apply_session_timeout(ctx, config.session_timeout, where, server=False)
    return ctx
