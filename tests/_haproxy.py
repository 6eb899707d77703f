"""HAProxy in front of trio_tcp listeners: its configuration, its process, its log and stats.

Used by ``test_interop_haproxy.py`` and by ``benchmarks/haproxy_restarts.py``;
nothing here depends on pytest. HAProxy runs in the foreground
(``haproxy -db -f CONFIG``) as a child process, on loopback ports picked free
at run time, with its configuration in a directory the caller owns; it is
killed when the ``async with`` block ends, however it ends.

Its admin socket is a Linux abstract UNIX socket named after that directory
(:func:`admin_socket`): a path inside a deep temporary directory (nox sets
``TMPDIR`` under ``.nox/``) can exceed the 97 bytes HAProxy allows for a
socket path, and an abstract name has no file to clean up.

HAProxy logs one line per client session to its stdout, in a format made for
matching (:data:`LOG_FORMAT`): the client's port comes first, and the
backends see the same port as the source of the PROXY header, so a session
can be followed from the client through HAProxy to the server.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

__all__ = [
    "LOG_FORMAT",
    "HAProxy",
    "LogLine",
    "Server",
    "admin_socket",
    "find_haproxy",
    "free_port",
    "make_config",
    "running_haproxy",
]

#: One line per session: client port, client address, server, timers
#: (queue / connect / total, ms; -1 = never), bytes from the client, bytes to
#: the client, termination state, retries ("+N": redispatched).
LOG_FORMAT = "%cp %ci %s %Tw/%Tc/%Tt %U %B %ts %rc %Ts.%ms"


def find_haproxy() -> str | None:
    """The haproxy executable, or ``None`` where it is not installed."""
    found = shutil.which("haproxy")
    if found is None and Path("/usr/sbin/haproxy").exists():
        found = "/usr/sbin/haproxy"  # not on a non-root PATH on Debian
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (HAProxy cannot be told to pick one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def admin_socket(directory: Path) -> str:
    """The name of the admin socket of the HAProxy configured in ``directory``."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:24]
    return f"trio-tcp-haproxy-{digest}"


def _abstract_address(name: str) -> bytes:
    """The address HAProxy binds for ``abns@name``: the whole ``sun_path``, NUL-padded."""
    address = b"\0" + name.encode()
    return address + b"\0" * (108 - len(address))


@dataclass(frozen=True)
class Server:
    """One ``server`` line of the backend.

    Attributes:
        name: the server's name in HAProxy's log and stats.
        port: its port on 127.0.0.1.
        proxy: ``"v1"`` (``send-proxy``) or ``"v2"`` (``send-proxy-v2``).
        check: health checks with the PROXY header, every ``inter``.
    """

    name: str
    port: int
    proxy: str = "v2"
    check: bool = True


def make_config(
    *,
    directory: Path,
    frontends: Mapping[str, tuple[Sequence[str], Sequence[Server]]],
    inter: str = "200ms",
) -> str:
    """An HAProxy configuration: a frontend and its backend per entry of ``frontends``.

    Args:
        directory: the directory the configuration goes in; names the admin socket.
        frontends: ``{name: (binds, servers)}``: ``binds`` are ``host:port``
            (``[::1]:port`` for IPv6); each frontend balances round-robin
            over its servers.
        inter: the health check interval.
    """
    lines = [
        "global",
        "    log stdout format raw local0 info",
        f"    stats socket abns@{admin_socket(directory)} mode 600 level admin",
        "defaults",
        "    mode tcp",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        # Short: a refused connect is retried after min(timeout connect, 1 s).
        "    timeout connect 200ms",
        "    timeout client 10s",
        "    timeout server 10s",
        "    retries 3",
        "    option redispatch",
    ]
    for name, (binds, servers) in frontends.items():
        lines.append(f"frontend {name}")
        lines.extend(f"    bind {bind}" for bind in binds)
        lines.append(f"    default_backend {name}_servers")
        lines += [f"backend {name}_servers", "    balance roundrobin"]
        for server in servers:
            proxy = "send-proxy-v2" if server.proxy == "v2" else "send-proxy"
            check = f" check check-send-proxy inter {inter} fall 1 rise 1" if server.check else ""
            lines.append(f"    server {server.name} 127.0.0.1:{server.port} {proxy}{check}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class LogLine:
    """One session, as HAProxy logged it (see :data:`LOG_FORMAT`)."""

    client_port: int
    client_host: str
    server: str
    connect_ms: int
    total_ms: int
    bytes_in: int
    bytes_out: int
    state: str
    retries: str
    #: Wall-clock time HAProxy accepted the client's connection (ms resolution).
    accepted: float = 0.0
    #: Milliseconds the session waited in a queue before connecting to a server.
    queued_ms: int = 0

    @classmethod
    def parse(cls, line: str) -> LogLine | None:
        fields = line.split()
        if len(fields) != 9 or not fields[0].isdigit():
            return None  # a startup notice, or a server going up or down
        port, host, server, timers, bytes_in, bytes_out, state, retries, accepted = fields
        queued, connect, total = timers.split("/")
        return cls(
            int(port),
            host,
            server,
            int(connect),
            int(total),
            int(bytes_in),
            int(bytes_out),
            state,
            retries,
            float(accepted),
            max(0, int(queued)),
        )

    @property
    def connected_at(self) -> float:
        """Wall-clock time the connection to the server completed (about: ms resolution)."""
        return self.accepted + (self.queued_ms + max(0, self.connect_ms)) / 1000


class HAProxy:
    """A running HAProxy: its log so far, and its admin socket."""

    def __init__(self, process: trio.Process, directory: Path) -> None:
        self.process = process
        self.directory = directory
        #: Every line HAProxy wrote to its stdout, in order.
        self.output: list[str] = []
        #: The parsed session lines among them.
        self.sessions: list[LogLine] = []

    async def command(self, command: str) -> str:
        """Send one command to the admin socket; return the answer."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            await sock.connect(_abstract_address(admin_socket(self.directory)))
            await sock.send(command.encode() + b"\n")
            answer = bytearray()
            while chunk := await sock.recv(65536):
                answer += chunk
        return answer.decode()

    async def server_status(self) -> dict[str, str]:
        """``{"backend/server": "UP" | "DOWN" | ...}``, from ``show stat``."""
        text = await self.command("show stat")
        header, *rows = (line for line in text.splitlines() if line)
        columns = header.lstrip("# ").split(",")
        name, server, status = (columns.index(c) for c in ("pxname", "svname", "status"))
        found = {}
        for row in rows:
            fields = row.split(",")
            if fields[server] not in ("FRONTEND", "BACKEND"):
                found[f"{fields[name]}/{fields[server]}"] = fields[status]
        return found

    async def wait_up(self, servers: int) -> None:
        """Wait until ``servers`` servers are UP (the caller bounds the wait)."""
        while sum(s == "UP" for s in (await self.server_status()).values()) < servers:  # noqa: ASYNC110
            await trio.sleep(0.05)

    async def _read_log(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.output.append(line)
                session = LogLine.parse(line)
                if session is not None:
                    self.sessions.append(session)

    async def wait_logged(self, count: int) -> None:
        """Wait until ``count`` sessions are logged (the caller bounds the wait)."""
        while len(self.sessions) < count:  # noqa: ASYNC110 - the log has no event to wait on
            await trio.sleep(0.01)


@asynccontextmanager
async def running_haproxy(executable: str, config: str, directory: Path) -> AsyncIterator[HAProxy]:
    """Start HAProxy with ``config``; yield once it is up (its ports bound, its socket open)."""
    path = directory / "haproxy.cfg"
    path.write_text(config)
    process = await trio.lowlevel.open_process(
        [executable, "-db", "-f", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    haproxy = HAProxy(process, directory)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(haproxy._read_log)
            with trio.fail_after(10):
                await _wait_ready(haproxy)
            yield haproxy
            nursery.cancel_scope.cancel()
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def _wait_ready(haproxy: HAProxy) -> None:
    """Wait until the admin socket answers: HAProxy binds every port before it opens."""
    delay = 0.005
    while True:
        if haproxy.process.returncode is not None:
            raise RuntimeError("haproxy exited:\n" + "\n".join(haproxy.output))
        try:
            await haproxy.command("show info")
        except OSError:
            await trio.sleep(delay)
            delay = min(delay * 2, 0.1)
            continue
        return
