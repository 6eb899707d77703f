"""The ``trio_tcp`` logger, and log lines that a flood could repeat, rate-limited."""

from __future__ import annotations

import logging
import math

import trio

__all__ = ["RateLimited", "log"]

log = logging.getLogger("trio_tcp")


class RateLimited:
    """A log line logged at most once per ``interval`` seconds, with a count of those skipped.

    For conditions that many connections can hit at once (out of file
    descriptors, no service attached, untrusted PROXY senders): one line a
    second says as much as thousands would.
    """

    __slots__ = ("_interval", "_last", "_level", "_message", "_suppressed")

    def __init__(self, level: int, message: str, interval: float = 1.0) -> None:
        self._level = level
        self._message = message
        self._interval = interval
        self._last = -math.inf
        self._suppressed = 0

    def note(self, *args: object) -> None:
        """Log the message with ``args``, unless it was logged less than ``interval`` ago."""
        now = trio.current_time()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar since the last report)" if self._suppressed else ""
        log.log(self._level, self._message + suffix, *args)
        self._last, self._suppressed = now, 0
