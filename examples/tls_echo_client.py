"""A TLS echo client: connect, send a greeting, print the reply and the TLS details, close.

Start ``examples/tls_echo_server.py`` first; it prints where it wrote its
throwaway CA certificate, and the command to run, e.g.::

    python examples/tls_echo_client.py --cafile /tmp/trio-tcp-demo-k2j4x8/ca.pem
    python examples/tls_echo_client.py --cafile public.crt --port 9002   # pin a server cert

For mutual TLS, add ``--cert client.pem --key client.key``. Without
``--cafile`` the system's CAs are trusted. A failed handshake (untrusted
certificate, wrong host name, no TLS version in common) is printed, exit status 1.
"""

from __future__ import annotations

import argparse
import sys

import trio

import trio_tcp


async def main(args: argparse.Namespace) -> None:
    key = None
    if args.cert is not None:
        key = trio_tcp.CertKey(cert_file=args.cert, key_file=args.key)
    secure_socket = trio_tcp.ClientSecureSocket(cert=args.cafile, key=key)
    client = await trio_tcp.Client.connect(
        args.host, args.port, timeout=10, secure_socket=secure_socket
    )
    async with client:
        print(f"Connected: {client.tls_version}, {client.cipher}", flush=True)
        message = args.message.encode()
        await client.write_bytes(message)
        # Bytes, not messages: the echo may arrive in several chunks.
        reply = await client.read_exactly(len(message))
        print("Response:", reply.decode(), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="localhost", help="server host (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9002, help="server port (default: %(default)s)")
    parser.add_argument("--cafile", help="CA (or server) certificate to trust; default: system CAs")
    parser.add_argument("--cert", help="client certificate PEM file, for mutual TLS; needs --key")
    parser.add_argument("--key", help="client private key PEM file; needs --cert")
    parser.add_argument("--message", default="Hello from a trio_tcp client over TLS")
    args = parser.parse_args()
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    try:
        trio.run(main, arguments)
    except (trio_tcp.TLSError, trio_tcp.ConnectError, trio_tcp.ConfigurationError) as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
