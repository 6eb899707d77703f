"""One worker of ``trio-tcp serve --workers N``: serve the supervisor's socket until told to stop.

A worker is ``trio-tcp serve`` started by the supervisor with the user's own
arguments plus two hidden ones: the listening socket(s) it inherits
(``--worker-sockets``) and its end of a control socket pair
(``--worker-control``). Over the control socket it reports one line once:

* ``ready`` -- the service is loaded and the listener is accepting;
* ``error STATUS MESSAGE`` -- it could not start (an APP that does not load,
  TLS files that do not work); it exits with STATUS without printing
  anything, and the supervisor says MESSAGE once for all workers.

The supervisor writes ``stop`` (stop gracefully) or ``now`` (stop at once).
These are not signals on purpose: a service manager may signal every process
of the service at once (systemd's default ``KillMode=control-group``), and a
worker must not take the supervisor's graceful stop that follows for a
second signal. When the stream ends, the supervisor has exited -- even by
SIGKILL, since the kernel closes its end -- and the worker stops gracefully,
so no worker outlives its supervisor for longer than a graceful stop.
"""

from __future__ import annotations

import argparse
import contextlib
import socket

import trio

import trio_tcp

from ._log import log
from ._options import CommandError, describe, exception_leaves
from ._serving import Stop, listener_options, load_service, serve_until_stopped
from ._sockets import from_fds, trio_listeners

__all__ = ["NOW", "READY", "STOP", "run"]

READY = b"ready\n"
STOP = b"stop\n"
NOW = b"now\n"
#: Failures a worker reports instead of printing: they are about its setup,
#: the same in every worker, and the supervisor says each once.
_SETUP_ERRORS = (CommandError, trio_tcp.Error, OSError)


async def run(args: argparse.Namespace) -> int:
    """Load the service, serve the inherited sockets, report readiness; return the exit status."""
    control = trio.SocketStream(
        trio.socket.from_stdlib_socket(socket.socket(fileno=args.worker_control))
    )
    async with control:
        ready = False

        async def report_ready() -> None:
            nonlocal ready
            ready = True
            # If the supervisor is gone, watch_supervisor() sees it too.
            with contextlib.suppress(trio.BrokenResourceError):
                await control.send_all(READY)

        async def watch_supervisor(stop: trio.MemorySendChannel[Stop]) -> None:
            received = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await control.receive_some():
                    received += chunk
                    *lines, received = received.split(b"\n")
                    for line in lines:
                        if line + b"\n" in (STOP, NOW):
                            await stop.send(Stop("supervisor", now=line == b"now"))
            await stop.send(Stop("supervisor gone", now=False))

        try:
            sockets = from_fds(args.worker_sockets, source="inherited socket")
            service = load_service(args)
            listener = trio_tcp.Listener(0, **listener_options(args))
            listener.attach(service)
            await serve_until_stopped(
                listener,
                lambda *, task_status: listener.serve_listeners(
                    trio_listeners(sockets), task_status=task_status
                ),
                grace=args.grace,
                ready=report_ready,
                stop_when=watch_supervisor,
            )
        except BaseException as exc:
            if ready or not all(isinstance(e, _SETUP_ERRORS) for e in exception_leaves(exc)):
                raise  # a failure while serving: the usual report, and the supervisor restarts
            return await _report_failure(control, exc)
    log.debug("worker stopped")
    return 0


async def _report_failure(control: trio.SocketStream, exc: BaseException) -> int:
    leaves = list(exception_leaves(exc))
    status = max(e.status if isinstance(e, CommandError) else 1 for e in leaves)
    message = "; ".join(dict.fromkeys(describe(e) for e in leaves))
    with contextlib.suppress(trio.BrokenResourceError):
        await control.send_all(f"error {status} {message}\n".encode(errors="replace"))
    return status
