"""Write a development CA, a server certificate and key (and with --client, a client pair).

The certificates come from trustme: a throwaway CA whose private key is never
written, so nothing else can ever be signed by it. For development and tests
only. Keys are written with mode 0600.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._options import UsageError, say

__all__ = ["EPILOG", "HELP", "CertFiles", "add_arguments", "check", "run", "write_certs"]

HELP = "write a development CA and server (and client) certificates"
EPILOG = """\
examples:
  trio-tcp certs certs                     # certs/ca.pem, server.pem, server.key
  trio-tcp certs certs --client            # also client.pem and client.key
  trio-tcp certs certs --hostname myhost.lan --hostname 192.168.1.20

The commands to use them are printed at the end, e.g.:
  trio-tcp serve --tls-cert certs/server.pem --tls-key certs/server.key
  trio-tcp connect localhost 3000 --cafile certs/ca.pem
"""

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
#: The identity in the client certificate (a name in the reserved .invalid domain).
CLIENT_NAME = "client.trio-tcp.invalid"

_HOSTNAME = re.compile(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


@dataclass(frozen=True)
class CertFiles:
    """Where :func:`write_certs` put everything."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path | None = None
    client_key: Path | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-tcp certs``."""
    parser.add_argument("directory", metavar="DIR", help="where to write (created if needed)")
    parser.add_argument(
        "--hostname",
        action="append",
        metavar="NAME",
        help="a name or IP address the server certificate is valid for; repeatable "
        f"(default: {', '.join(DEFAULT_HOSTNAMES)})",
    )
    parser.add_argument(
        "--client", action="store_true", help="also write client.pem and client.key (mutual TLS)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def check(args: argparse.Namespace) -> None:
    """Reject a --hostname that is neither an IP address nor a DNS name."""
    for name in args.hostname or ():
        if not (_HOSTNAME.fullmatch(name) or _is_ip(name)):
            raise UsageError(f"argument --hostname: not a host name or IP address: {name!r}")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def write_certs(
    directory: Path, hostnames: Sequence[str], *, client: bool = False, force: bool = False
) -> CertFiles:
    """Issue the certificates with trustme and write them to ``directory``.

    Raises:
        FileExistsError: a file is already there and ``force`` is false.
    """
    import trustme  # only certs and demo need it

    files = CertFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem" if client else None,
        client_key=directory / "client.key" if client else None,
    )
    paths = [p for p in vars(files).values() if p is not None]
    if not force:
        for path in paths:
            if path.exists():
                raise FileExistsError(f"{path} already exists (--force overwrites it)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="trio-tcp development CA")
    server = ca.issue_cert(*hostnames)
    _write(files.ca, ca.cert_pem.bytes(), 0o644)
    _write(files.server_cert, b"".join(pem.bytes() for pem in server.cert_chain_pems), 0o644)
    _write(files.server_key, server.private_key_pem.bytes(), 0o600)
    if files.client_cert is not None and files.client_key is not None:
        leaf = ca.issue_cert(CLIENT_NAME, common_name="trio-tcp development client")
        _write(files.client_cert, b"".join(pem.bytes() for pem in leaf.cert_chain_pems), 0o644)
        _write(files.client_key, leaf.private_key_pem.bytes(), 0o600)
    return files


def _write(path: Path, data: bytes, mode: int) -> None:
    # Created with its final mode: a key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with open(fd, "wb") as file:
        os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
        file.write(data)


async def run(args: argparse.Namespace) -> int:
    """Write the files and print the serve/connect options that use them."""
    hostnames = args.hostname or list(DEFAULT_HOSTNAMES)
    files = write_certs(Path(args.directory), hostnames, client=args.client, force=args.force)
    q = shlex.quote
    print(f"wrote {files.ca} (the CA to trust)")
    print(f"wrote {files.server_cert} and {files.server_key} for {', '.join(hostnames)}")
    serve = (
        f"trio-tcp serve --tls-cert {q(str(files.server_cert))}"
        f" --tls-key {q(str(files.server_key))}"
    )
    connect = f"trio-tcp connect {q(hostnames[0])} 3000 --cafile {q(str(files.ca))}"
    if files.client_cert is not None and files.client_key is not None:
        print(f"wrote {files.client_cert} and {files.client_key} (client certificate)")
        serve += f" --tls-client-ca {q(str(files.ca))}"
        connect += f" --cert {q(str(files.client_cert))} --key {q(str(files.client_key))}"
    print()
    print("serve with TLS:")
    print(f"  {serve}")
    print("connect to it (bench takes the same TLS options):")
    print(f"  {connect}")
    say("development certificates: never use them in production")
    return 0
