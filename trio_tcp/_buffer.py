"""Sans-IO receive buffer behind ``Client.read_bytes``, ``read_exactly`` and ``read_until``.

Bytes are appended as they arrive and taken from the front. Consumed bytes are
dropped lazily (an offset moves; the storage is compacted only when the dead
prefix is large), so taking many small pieces from one big chunk stays linear.
A delimiter search remembers how far it already looked, so a line arriving one
byte at a time is scanned once, not once per byte.
"""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]

# Compact once the consumed prefix is both this large and most of the storage:
# cheap amortised copies, without holding a big dead prefix for long.
_COMPACT_AT = 65536


class ReceiveBuffer:
    """Bytes received but not yet handed to the reader."""

    __slots__ = ("_data", "_scanned", "_scanned_for", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0
        # How far (from _start) a search for _scanned_for has already looked;
        # it says nothing about another delimiter.
        self._scanned = 0
        self._scanned_for = b""

    def __len__(self) -> int:
        return len(self._data) - self._start

    def __bool__(self) -> bool:
        return len(self._data) > self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        self._data += data

    def take(self, max_bytes: int) -> bytes:
        """Remove and return up to ``max_bytes`` from the front (maybe fewer, maybe none)."""
        start = self._start
        end = min(start + max_bytes, len(self._data))
        chunk = bytes(self._data[start:end])
        self._consume(end - start)
        return chunk

    def take_exactly(self, size: int) -> bytes | None:
        """Remove and return exactly ``size`` bytes, or ``None`` if fewer are buffered."""
        if len(self) < size:
            return None
        return self.take(size)

    def take_until(self, delimiter: bytes, max_size: int | None = None) -> bytes | None:
        """Remove and return the bytes before ``delimiter``, consuming it too.

        Returns ``None`` if no delimiter is buffered yet; the next call resumes
        the search where this one stopped. With ``max_size``, only a delimiter
        within the first ``max_size + len(delimiter)`` bytes counts, so a
        longer message is never returned, however the bytes were chunked.
        """
        start = self._start
        if delimiter != self._scanned_for:
            self._scanned = 0
            self._scanned_for = delimiter
        # A delimiter may straddle the old end: back off by its length - 1.
        search_from = start + max(0, self._scanned - len(delimiter) + 1)
        end = len(self._data)
        if max_size is not None:
            end = min(end, start + max_size + len(delimiter))
        index = self._data.find(delimiter, search_from, end)
        if index < 0:
            self._scanned = end - start
            return None
        message = bytes(self._data[start:index])
        self._consume(index - start + len(delimiter))
        return message

    def _consume(self, count: int) -> None:
        self._start += count
        self._scanned = 0
        if self._start == len(self._data):
            self._data.clear()
            self._start = 0
        elif self._start >= _COMPACT_AT and self._start * 2 >= len(self._data):
            del self._data[: self._start]
            self._start = 0
