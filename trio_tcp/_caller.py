"""``Caller``: the listener's handle on one accepted connection."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ._errors import Error
from ._streams import Bytes, Endpoints, close_stream
from ._writer import ConnectionInfo, Writer, check_bytes

if TYPE_CHECKING:
    from ._framing import Framing

__all__ = ["Caller"]

# Connection ids only need to be unique within the process; a counter is
# cheaper than a UUID on every accept.
_serial = itertools.count(1)


class Caller(ConnectionInfo, trio.abc.AsyncResource):
    """One accepted connection, as a service sees it.

    A ``Caller`` is handed to ``on_connect`` (and to ``on_bytes(caller, data)``).
    Keep it to write to the client later, from any task: writes are serialised,
    each one sent whole and in call order, which is what a chat server
    broadcasting to every caller needs.

    Resource handling:
        ``await caller.close()`` (or ``aclose()``) ends the connection: reading
        stops, TLS sends close_notify, and ``on_close`` runs. It is idempotent.

    Error handling:
        Writing to a closed connection raises
        :class:`~trio_tcp.ConnectionClosedError`. A write that fails, or that is
        cancelled midway (for example by a ``trio.move_on_after`` around it),
        closes the connection, since the peer may have received part of it.
    """

    __slots__ = ("_endpoints", "_framing", "_id", "_stop_reading", "_writer")

    def __init__(
        self,
        stream: trio.abc.Stream,
        endpoints: Endpoints,
        stop_reading: Callable[[], None],
    ) -> None:
        self._writer = Writer(stream)
        self._endpoints = endpoints
        self._id = f"{next(_serial):x}"
        self._stop_reading = stop_reading
        self._framing: Framing | None = None

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        return (
            f"<trio_tcp.Caller {self._id} {self.remote_host}:{self.remote_port}"
            f"{' tls' if self.is_secure else ''} {state}>"
        )

    @property
    def id(self) -> str:
        """A string that identifies this connection uniquely within the process."""
        return self._id

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (writes will raise)."""
        return self._writer.closed

    async def write_bytes(self, data: Bytes) -> None:
        """Send all of ``data`` to the client.

        Raises:
            ConnectionClosedError: the connection is closed, or broke during the write.
            TLSError: the TLS layer failed during the write.
            TypeError: ``data`` is not bytes-like.
        """
        await self._writer.write(data, None)

    async def write_message(self, message: Bytes) -> None:
        """Frame ``message`` with the service's framing and send it.

        Raises:
            Error: the connection service has no ``framing``.
            FramingError: the message breaks the framing rules (too big, contains
                the delimiter).
            ConnectionClosedError: as for :meth:`write_bytes`.
        """
        check_bytes(message)
        if self._framing is None:
            raise Error("write_message needs a connection service with a 'framing' attribute")
        payload = message if type(message) is bytes else bytes(message)
        await self._writer.write(self._framing.encode(payload), None)

    async def aclose(self) -> None:
        """Close the connection; idempotent. ``on_close`` follows in the connection's task."""
        writer = self._writer
        if writer.closed:
            await trio.lowlevel.checkpoint()
            return
        writer.closed = True
        self._stop_reading()
        await close_stream(writer.stream)

    async def close(self) -> None:
        """Same as :meth:`aclose` (Ballerina's name)."""
        await self.aclose()
