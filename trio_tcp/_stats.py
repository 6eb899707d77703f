"""Listener counters: mutated in place on the hot path, read as frozen snapshots."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Counters", "ListenerStats"]


@dataclass(frozen=True, slots=True)
class ListenerStats:
    """A snapshot of a listener's counters, as returned by :attr:`Listener.stats`.

    Attributes:
        active_connections: connections being served right now.
        total_connections: connections accepted since the listener was created.
        bytes_received: payload bytes read from all connections.
        bytes_sent: payload bytes written to all connections.
        errors: connections that ended with an error (reported to ``on_error``,
            or a failed TLS handshake, PROXY header or ``on_connect``), except
            those counted in ``aborted``.
        aborted: connections that ended before any payload byte went either
            way: load balancer health checks, port scans, clients that gave up.
            Such a connection still runs its callbacks (a reset still reaches
            ``on_error``), but it is no error of the service's.
        bytes_discarded: input read and dropped while closing (a lingering
            close reads the peer's last bytes so that closing does not reset
            the connection and destroy replies the peer has not read yet).
        refused: connections closed at once because they came from outside
            ``trusted_proxies``.
        outbox_overflows: connections closed because their outbox went over
            ``outbox_limit`` (a peer that stopped reading).
    """

    active_connections: int
    total_connections: int
    bytes_received: int
    bytes_sent: int
    errors: int
    aborted: int = 0
    bytes_discarded: int = 0
    refused: int = 0
    outbox_overflows: int = 0


class Counters:
    """The live counters behind :class:`ListenerStats`; plain attributes for cheap updates."""

    __slots__ = (
        "aborted",
        "active",
        "bytes_discarded",
        "bytes_received",
        "bytes_sent",
        "errors",
        "outbox_overflows",
        "refused",
        "total",
    )

    def __init__(self) -> None:
        self.active = 0
        self.total = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.errors = 0
        self.aborted = 0
        self.bytes_discarded = 0
        self.refused = 0
        self.outbox_overflows = 0

    def snapshot(self) -> ListenerStats:
        """Return the current values."""
        return ListenerStats(
            active_connections=self.active,
            total_connections=self.total,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            errors=self.errors,
            aborted=self.aborted,
            bytes_discarded=self.bytes_discarded,
            refused=self.refused,
            outbox_overflows=self.outbox_overflows,
        )
