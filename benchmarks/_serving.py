"""What every benchmark server shares: the address, the ready line, the stop signal,
serving a trio_tcp listener, and the checks for trio_tcp features that are not
in every version.

A server prints ``listening on 127.0.0.1:PORT`` once it accepts connections and
serves until SIGTERM or SIGINT. It logs nothing per connection: the runner
reads its memory and CPU time from ``/proc`` and its results from the load
generator.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import trio_tcp

HOST = "127.0.0.1"
# trio's own default receive size; every server reads in chunks of at most this.
RECEIVE_SIZE = 65536


def announce(port: int) -> None:
    """Tell the runner where the server listens (the one line it waits for)."""
    print(f"listening on {HOST}:{port}", flush=True)


async def wait_for_signal() -> None:
    """Return at the first SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


# -- trio_tcp features that arrived after the first release ------------------------------


def listener_accepts(keyword: str) -> bool:
    """Whether ``trio_tcp.Listener`` takes the keyword argument ``keyword`` (as a timeout).

    The signature tells, unless the options arrive as ``**options``: then a
    listener is made with the keyword set to 60 (which binds nothing).
    """
    parameters = inspect.signature(trio_tcp.Listener).parameters
    if keyword in parameters:
        return True
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return False
    setting: dict[str, Any] = {keyword: 60.0}
    try:
        trio_tcp.Listener(0, **setting)
    except TypeError:
        return False
    return True


def has_serve_listeners() -> bool:
    """Whether a listener can serve trio listeners made elsewhere (``serve_listeners``)."""
    return callable(getattr(trio_tcp.Listener, "serve_listeners", None))


def has_send_nowait() -> bool:
    """Whether a caller can queue bytes without waiting (the bounded outbox)."""
    return callable(getattr(trio_tcp.Caller, "send_nowait", None))


def has_group() -> bool:
    """Whether trio_tcp has ``Group`` (sending to many callers through their outboxes)."""
    return isinstance(getattr(trio_tcp, "Group", None), type)


# -- serving a trio_tcp listener -----------------------------------------------------------

#: What starts a listener in a nursery: ``listener.serve`` itself, or
#: ``serve_listeners`` given trio listeners. It is awaited by ``nursery.start``.
Starter = Callable[[trio_tcp.Listener, trio.Nursery], Awaitable[Any]]


async def bind_and_serve(listener: trio_tcp.Listener, nursery: trio.Nursery) -> None:
    """Let the listener bind its own sockets."""
    await nursery.start(listener.serve)


async def serve_trio_tcp(
    service: trio_tcp.Service,
    port: int,
    *,
    start: Starter = bind_and_serve,
    **options: Any,
) -> None:
    """Serve ``service`` with a Listener until SIGINT/SIGTERM, then stop it at once."""
    listener = trio_tcp.Listener(port, local_host=HOST, **options)
    listener.attach(service)
    async with trio.open_nursery() as nursery:
        await start(listener, nursery)
        assert listener.port is not None  # known while serving
        announce(listener.port)
        await wait_for_signal()
        await listener.immediate_stop()
