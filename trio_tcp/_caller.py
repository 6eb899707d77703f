"""``Caller``: the listener's handle on one accepted connection, and ``Group`` of callers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

from ._errors import OutboxFullError, UsageError
from ._info import ConnectionInfo
from ._writer import Writer, check_bytes

if TYPE_CHECKING:
    from ._framing import Framing
    from ._proxy import ProxyInfo
    from ._streams import Bytes, Endpoints

__all__ = ["Caller", "Group"]

# Connection ids only need to be unique within the process; a counter is
# cheaper than a UUID on every accept.
_serial = itertools.count(1)


class Caller(ConnectionInfo, trio.abc.AsyncResource):
    """One accepted connection, as a service sees it.

    A ``Caller`` is handed to ``on_connect`` (and to ``on_bytes(caller, data)``).
    Keep it to write to the client later, from any task: writes are
    serialised, each one sent whole and in call order.

    Two ways to write:

    * ``await write_bytes(data)`` / ``write_message(msg)`` return once the data
      is sent: the writer waits for a slow peer (backpressure);
    * ``send_nowait(data)`` / ``send_message_nowait(msg)`` queue the data in
      the connection's bounded *outbox* and return at once; a writer task
      sends it. This is for fan-out (a chat room, pub/sub): a peer that stops
      reading never delays the sender, and when its outbox goes over the
      listener's ``outbox_limit`` it is closed (its ``on_error`` gets an
      :class:`~trio_tcp.OutboxFullError`), or, with
      ``outbox_overflow="raise"``, the sender gets that error instead.

    Both keep one order: data goes out in the order it was written or queued,
    whichever task wrote it. A ``write_bytes`` that has to wait for its turn
    (another send is under way) takes its place when its turn comes: what
    other tasks queued meanwhile goes first.

    Resource handling:
        ``await caller.close()`` (or ``aclose()``) ends the connection in an
        orderly way and returns at once: writes are refused from then on,
        and the connection's own task sends what is queued, sends TLS
        close_notify and FIN, reads the peer's last bytes so that no reply
        is destroyed by a reset, closes the socket and runs ``on_close``.
        It is idempotent.

    Error handling:
        Writing to a closed connection raises
        :class:`~trio_tcp.ConnectionClosedError`. A write that fails, stalls
        past the listener's ``write_timeout``, or is cancelled midway (for
        example by a ``trio.move_on_after`` around it) closes the
        connection, since the peer may have received part of it.
    """

    __slots__ = (
        "_endpoints",
        "_framing",
        "_groups",
        "_id",
        "_proxy",
        "_ready",
        "_stop",
        "_stream",
        "_writer",
        "bytes_received",
    )

    def __init__(
        self,
        writer: Writer,
        endpoints: Endpoints,
        stop: Callable[[], None],
        proxy: ProxyInfo | None = None,
    ) -> None:
        self._writer = writer
        self._stream = writer.stream
        self._endpoints = endpoints
        self._id = f"{next(_serial):x}"
        self._stop = stop
        self._proxy = proxy
        self._framing: Framing | None = None
        # Whether on_connect has returned the connection service (which has the framing).
        self._ready = False
        self._groups: list[Group] | None = None
        #: Payload bytes received on this connection so far.
        self.bytes_received = 0

    def __repr__(self) -> str:
        state = "closed" if self._writer.closed else "open"
        host, port = self.remote_host, self.remote_port
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"<trio_tcp.Caller {self._id} {where}{' tls' if self.is_secure else ''} {state}>"

    @property
    def id(self) -> str:
        """A string that identifies this connection uniquely within the process."""
        return self._id

    @property
    def closed(self) -> bool:
        """Whether the connection is closed to writes (closed, or broken)."""
        return self._writer.closed

    @property
    def bytes_sent(self) -> int:
        """Payload bytes actually written to this connection so far."""
        return self._writer.bytes_sent

    @property
    def proxy(self) -> ProxyInfo | None:
        """How the connection came through a load balancer, or ``None`` without a PROXY header."""
        return self._proxy

    @property
    def outbox_size(self) -> int:
        """Bytes queued for this connection and not sent yet, those being sent included.

        That is the outbox (:meth:`send_nowait`) and replies waiting to go
        out; the listener's ``outbox_limit`` bounds it.
        """
        return self._writer.pending

    async def write_bytes(self, data: Bytes) -> None:
        """Send all of ``data`` to the client (after anything queued before it).

        Raises:
            ConnectionClosedError: the connection is closed, or broke during the write.
            WriteTimeoutError: the peer took no byte for the listener's
                ``write_timeout``; the connection is closed.
            TLSError: the TLS layer failed during the write.
            TypeError: ``data`` is not bytes-like.
        """
        await self._writer.write(data)

    async def write_message(self, message: Bytes) -> None:
        """Frame ``message`` with the service's framing and send it.

        Raises:
            UsageError: the connection service has no ``framing``.
            FramingError: the message breaks the framing rules (too big, contains
                the delimiter); nothing was sent.
            ConnectionClosedError, WriteTimeoutError, TLSError: as for
                :meth:`write_bytes`.
        """
        await self._writer.write(self._frame(message))

    def send_nowait(self, data: Bytes) -> None:
        """Queue ``data`` in the connection's outbox and return without waiting.

        The data is copied. What happens when the outbox is over the
        listener's ``outbox_limit`` depends on its ``outbox_overflow``:
        ``"close"`` (the default) closes this connection (its ``on_error``
        gets an :class:`~trio_tcp.OutboxFullError`) and drops the data;
        ``"raise"`` raises the error here, queues nothing, and leaves the
        connection open.

        Raises:
            ConnectionClosedError: the connection is closed.
            OutboxFullError: the outbox is full and the policy is ``"raise"``.
            TypeError: ``data`` is not bytes-like.
        """
        self._writer.send_nowait(data)

    def send_message_nowait(self, message: Bytes) -> None:
        """Frame ``message`` with the service's framing and queue it; see :meth:`send_nowait`.

        Raises:
            UsageError: the connection service has no ``framing``.
            FramingError: the message breaks the framing rules; nothing was queued.
            ConnectionClosedError, OutboxFullError: as for :meth:`send_nowait`.
        """
        self._writer.send_nowait(self._frame(message))

    async def aclose(self) -> None:
        """Close the connection in an orderly way; returns at once, idempotent.

        ``on_close`` follows in the connection's own task, once what was
        queued is sent and the peer's last bytes are read (see the class
        docstring).
        """
        writer = self._writer
        if not writer.closed:
            writer.closed = True
            self._stop()
        await trio.lowlevel.checkpoint()

    async def close(self) -> None:
        """Same as :meth:`aclose` (Ballerina's name)."""
        await self.aclose()

    def _frame(self, message: Bytes) -> bytes:
        check_bytes(message)
        framing = self._framing
        if framing is None:
            if not self._ready:
                raise UsageError(
                    "no framing yet: a message can be written once on_connect has returned"
                    " the connection service (write framing.encode(message) as bytes before)"
                )
            raise UsageError(
                "writing a message needs a connection service with a 'framing' attribute"
            )
        return framing.encode(message if type(message) is bytes else bytes(message))

    def _leave_groups(self) -> None:
        """The connection is over: leave every group it joined."""
        groups, self._groups = self._groups, None
        for group in groups or ():
            group.discard(self)


class Group:
    """Callers that receive the same data, sent without waiting: a chat room, a topic.

    ::

        room = trio_tcp.Group()

        class Member(trio_tcp.ConnectionService):
            framing = Delimited(b"\\n")

            def __init__(self, caller):
                self.caller = caller
                room.add(caller)                 # left automatically when it closes

            async def on_bytes(self, line):
                room.send_message_nowait(line, exclude=self.caller)

    Sending goes through each member's outbox (see
    :meth:`Caller.send_nowait`): a member that stops reading never slows the
    sender or the other members; it is dropped when its outbox overflows.
    A member whose connection ends leaves the group by itself.
    """

    __slots__ = ("_members",)

    def __init__(self) -> None:
        self._members: dict[str, Caller] = {}

    def __repr__(self) -> str:
        return f"<trio_tcp.Group of {len(self._members)}>"

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Caller]:
        return iter(list(self._members.values()))

    def __contains__(self, caller: object) -> bool:
        return isinstance(caller, Caller) and self._members.get(caller.id) is caller

    def add(self, caller: Caller) -> None:
        """Add ``caller``; adding it twice does nothing, and a closed one is not added."""
        if not isinstance(caller, Caller):
            raise TypeError(f"a Group holds Callers, got {type(caller).__name__}")
        if caller.closed or caller.id in self._members:
            return
        self._members[caller.id] = caller
        if caller._groups is None:
            caller._groups = []
        caller._groups.append(self)

    def discard(self, caller: Caller) -> None:
        """Remove ``caller`` if it is a member."""
        if not isinstance(caller, Caller):
            raise TypeError(f"a Group holds Callers, got {type(caller).__name__}")
        if self._members.pop(caller.id, None) is not None and caller._groups:
            caller._groups.remove(self)

    def send_nowait(self, data: Bytes, *, exclude: Caller | None = None) -> list[Caller]:
        """Queue ``data`` for every member (but ``exclude``); never waits.

        Returns:
            The members that did not get it because their outbox was full
            under the ``"raise"`` policy (with ``"close"``, the default, such
            a member is closed instead, and the list is empty).
        """
        check_bytes(data)
        payload = data if type(data) is bytes else bytes(data)
        return self._send(lambda caller: payload, exclude)

    def send_message_nowait(self, message: Bytes, *, exclude: Caller | None = None) -> list[Caller]:
        """Frame ``message`` with each member's framing and queue it; see :meth:`send_nowait`.

        A member whose ``on_connect`` has not returned yet has no framing
        yet: it is skipped, as if it had joined just after the message.
        The message is framed for every member before it is queued for any,
        so an error leaves every outbox as it was.

        Raises:
            UsageError: a member's connection service has no ``framing``.
            FramingError: the message breaks a member's framing rules.
        """
        check_bytes(message)
        encoded: dict[int, bytes] = {}  # one encoding per framing object

        def frame(caller: Caller) -> bytes | None:
            if not caller._ready:
                return None
            key = id(caller._framing)
            if key not in encoded:
                encoded[key] = caller._frame(message)
            return encoded[key]

        return self._send(frame, exclude)

    def _send(
        self, payload_for: Callable[[Caller], bytes | None], exclude: Caller | None
    ) -> list[Caller]:
        # Every payload first: what can fail, fails before anything is queued.
        payloads = [
            (caller, payload)
            for caller in self._members.values()
            if caller is not exclude
            and not caller.closed
            and (payload := payload_for(caller)) is not None
        ]
        skipped: list[Caller] = []
        for caller, payload in payloads:
            try:
                caller._writer.send_nowait(payload)
            except OutboxFullError:  # noqa: PERF203 - only under "raise", for a slow member
                skipped.append(caller)
        return skipped
