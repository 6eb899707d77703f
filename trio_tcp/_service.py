"""What a listener drives: the ``Service`` protocol, the ``ConnectionService`` base, and
the shape of each callback, found once per connection.

Services are duck-typed. A :class:`Service` is anything with ``on_connect``; a
connection service is any object, and each of ``on_bytes``, ``on_error`` and
``on_close`` it lacks is skipped. Callbacks may be ``async def`` or plain
``def``. ``on_bytes`` takes ``(data)`` or ``(caller, data)``: two *required*
positional parameters mean the second form. All of this is decided once, when
the connection starts, so the per-chunk path is a plain call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Union

from ._framing import Framing, check_framing

if TYPE_CHECKING:
    from ._caller import Caller
    from ._errors import Error

__all__ = ["Callbacks", "ConnectionService", "Service", "call", "callback_shape"]

T = TypeVar("T")
#: A callback result, returned directly by a ``def`` or awaited from an ``async def``.
MaybeAwaitable = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union on 3.10


class ConnectionService:
    """Base class for the object that handles one connection; every method is optional.

    Subclassing is not required: any object works, and a missing method is
    skipped. This base supplies no-op ``on_error`` and ``on_close``. It has no
    ``on_bytes``, because that method may take either form::

        async def on_bytes(self, data: bytes) -> bytes | None: ...
        async def on_bytes(self, caller: trio_tcp.Caller, data: bytes) -> bytes | None: ...

    Without an ``on_bytes``, received bytes are read and discarded. A bytes-like
    value returned by ``on_bytes`` is written back to the caller; ``None``
    writes nothing. With a ``framing`` attribute (see :mod:`trio_tcp.framing`)
    ``on_bytes`` receives one whole message per call and its return value is
    framed.

    ``on_stop()`` is optional too (this base has none): it is called when the
    listener's graceful stop reaches the connection, after the input that had
    already arrived was handled. It is the place for a protocol's own goodbye:
    a bytes-like value it returns is written (framed, with a framing), then
    the connection closes.
    """

    async def on_error(self, err: Error) -> None:
        """Called once when the connection fails, before ``on_close``. Does nothing here."""

    async def on_close(self) -> None:
        """Called exactly once when the connection ends. Does nothing here."""


class Service(Protocol):
    """What a :class:`~trio_tcp.Listener` needs: an ``on_connect`` callback.

    ``on_connect(caller)`` runs in the new connection's own task, after any TLS
    handshake and before anything is read. It returns the
    :class:`ConnectionService` for the connection, or ``None`` to close it. An
    exception is logged and closes the connection; no other callback runs.
    Subclass it, or pass any object with such a method.
    """

    def on_connect(self, caller: Caller, /) -> MaybeAwaitable[ConnectionService | None]:
        """Accept a connection: return its handler, or ``None`` to close it."""
        ...


async def call(callback: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async callback; for the rare ones where one check per call is fine."""
    result = callback(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


@functools.lru_cache(maxsize=1024)
def _shape(function: Callable[..., Any], bound: bool) -> tuple[bool, int, int]:
    """Return (is async, required positional count, accepted positional count).

    Cached on the plain function, so a service class's methods are inspected
    once, however many connections create instances of it.
    """
    is_async = inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
    required = accepted = 0
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            accepted = 1 << 16
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            accepted += 1
            if parameter.default is parameter.empty:
                required += 1
    if bound:  # ``self`` is already supplied
        required, accepted = max(0, required - 1), accepted - 1
    return is_async, required, accepted


def callback_shape(callback: Callable[..., Any]) -> tuple[bool, int, int]:
    """Return the shape of ``callback``, looking through bound methods for caching."""
    function = getattr(callback, "__func__", None)
    if function is not None and getattr(callback, "__self__", None) is not None:
        return _shape(function, True)
    try:
        hash(callback)
    except TypeError:
        # An unhashable callable (a dataclass instance with ``__call__``, say)
        # cannot be a cache key: inspect it uncached rather than reject it.
        return _shape.__wrapped__(callback, False)
    return _shape(callback, False)


class Callbacks:
    """A connection service's per-chunk callback and framing, resolved once per connection."""

    __slots__ = ("bytes_async", "framing", "on_bytes")

    def __init__(self, service: object, caller: Caller) -> None:
        framing = getattr(service, "framing", None)
        self.framing: Framing | None = None if framing is None else check_framing(framing)
        on_bytes: Callable[..., Any] | None = getattr(service, "on_bytes", None)
        self.bytes_async = False
        if on_bytes is not None:
            is_async, required, accepted = callback_shape(on_bytes)
            if required >= 2:
                on_bytes = functools.partial(on_bytes, caller)
            elif accepted < 1:
                name = f"{type(service).__qualname__}.on_bytes"
                raise TypeError(f"{name} must take (data) or (caller, data)")
            self.bytes_async = is_async
        self.on_bytes = on_bytes
        # From now on the caller can take messages (or refuse them for want of
        # a framing); until now it was still in on_connect.
        caller._framing = self.framing
        caller._ready = True
