"""The shape of the shared test certificates (the fixtures are in ``conftest.py``)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TLS_VERSIONS", "PemFiles"]

#: The TLS versions the shared contexts come in, by the names trio_tcp's settings use.
TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class PemFiles:
    """The session's certificates as PEM files, written once to a temporary directory."""

    ca: Path  # the CA every shared certificate chains to
    server_crt: Path  # localhost, 127.0.0.1 and ::1 (the leaf only)
    server_key: Path
    client_crt: Path  # client.example.org
    client_key: Path
