"""What ``Client`` and ``Caller`` both tell about their connection: addresses and TLS details.

Kept apart from TLS *configuration* (``_tls``), so that reading a connection's
details never imports what loading certificates needs.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from ._streams import Endpoints

__all__ = ["ConnectionInfo", "peer_tls_details"]


class _TLSObject(Protocol):
    def version(self) -> str | None: ...
    def cipher(self) -> tuple[str, str, int] | None: ...
    def getpeercert(self) -> object: ...


def peer_tls_details(
    ssl_object: _TLSObject,
) -> tuple[str | None, str | None, dict[str, Any] | None]:
    """Describe a finished handshake: negotiated version, cipher and peer certificate.

    Args:
        ssl_object: An :class:`ssl.SSLObject`, or a :class:`trio.SSLStream`
            (which forwards these methods) after its handshake.

    Returns:
        ``(version, cipher, peer_certificate)``: e.g. ``("TLSv1.3",
        "TLS_AES_256_GCM_SHA384", {...})``. The certificate is the
        :meth:`ssl.SSLObject.getpeercert` dict, or ``None`` when the peer sent
        none or it was not verified. Before the handshake all three are ``None``.
    """
    version = ssl_object.version()
    if version is None:  # no handshake yet: getpeercert() would raise
        return None, None, None
    cipher = ssl_object.cipher()
    cert = ssl_object.getpeercert()
    return (
        version,
        cipher[0] if cipher else None,
        cert if isinstance(cert, dict) and cert else None,
    )


class ConnectionInfo:
    """Addresses and TLS details of a connection; mixed into ``Client`` and ``Caller``."""

    __slots__ = ()

    # Provided by the subclasses.
    _endpoints: Endpoints
    _stream: trio.abc.Stream

    @property
    def remote_host(self) -> str:
        """The peer's IP address (``""`` where there is none, e.g. a UNIX-domain peer)."""
        return self._endpoints.remote_host

    @property
    def remote_port(self) -> int:
        """The peer's port (0 where there is none)."""
        return self._endpoints.remote_port

    @property
    def local_host(self) -> str:
        """The IP address of this end."""
        return self._endpoints.local_host

    @property
    def local_port(self) -> int:
        """The port of this end."""
        return self._endpoints.local_port

    @property
    def is_secure(self) -> bool:
        """Whether the connection runs over TLS."""
        return isinstance(self._stream, trio.SSLStream)

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version (``"TLSv1.3"``), or ``None`` on a plain connection."""
        return self._tls_details()[0]

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher's OpenSSL name, or ``None`` on a plain connection."""
        return self._tls_details()[1]

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The peer's certificate as :meth:`ssl.SSLSocket.getpeercert` gives it, or ``None``.

        ``None`` on a plain connection, or when the peer sent no certificate
        (a client, unless the listener asks for one).
        """
        return self._tls_details()[2]

    def _tls_details(self) -> tuple[str | None, str | None, dict[str, Any] | None]:
        stream = self._stream
        if not isinstance(stream, trio.SSLStream):
            return None, None, None
        return peer_tls_details(stream)
