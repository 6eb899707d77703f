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
        bytes_received: bytes read from all connections.
        bytes_sent: bytes written to all connections.
        errors: connections that ended with an error (``on_error`` or a failed
            handshake / ``on_connect``).
    """

    active_connections: int
    total_connections: int
    bytes_received: int
    bytes_sent: int
    errors: int


class Counters:
    """The live counters behind :class:`ListenerStats`; plain attributes for cheap updates."""

    __slots__ = ("active", "bytes_received", "bytes_sent", "errors", "total")

    def __init__(self) -> None:
        self.active = 0
        self.total = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.errors = 0

    def snapshot(self) -> ListenerStats:
        """Return the current values."""
        return ListenerStats(
            active_connections=self.active,
            total_connections=self.total,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            errors=self.errors,
        )
