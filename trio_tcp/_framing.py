"""Sans-IO message framing: bytes in, whole messages out; a message in, bytes out.

Theory of operation
-------------------
A :class:`Framing` is an immutable *specification* (``Delimited(b"\\n")``,
``LengthPrefixed(4)``) that one service or client shares across all of its
connections. It encodes outgoing messages itself, and hands out a fresh,
stateful :class:`Decoder` per connection with :meth:`Framing.decoder`, because
each connection has its own partial message in flight.

``Decoder.feed(chunk)`` returns *every* message the chunk completes, as a list
(often empty, usually one). One call per received chunk is the cheapest shape
for the common case "one chunk is one or a few whole messages": no "need more
data" sentinel, no second call to learn that the chunk is used up.

The built-in decoders are written for that common case. When nothing is
buffered they slice messages straight out of the received ``bytes`` and keep
only the unfinished tail. When a message straddles chunks, the buffered part is
never searched again: only its last ``len(delimiter) - 1`` bytes can begin a
delimiter that the new chunk completes, so feeding a stream one byte at a time
costs O(n), not O(n**2). Every buffer has a ceiling: a decoder raises
:class:`~trio_tcp.FramingError` as soon as the input *must* break ``max_size``,
before buffering it.

Nothing here performs I/O, imports trio, or knows about connections.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol, runtime_checkable

from ._errors import ConfigurationError, FramingError

__all__ = [
    "DEFAULT_MAX_DELIMITED",
    "DEFAULT_MAX_LENGTH_PREFIXED",
    "Decoder",
    "Delimited",
    "DelimitedDecoder",
    "Framing",
    "LengthPrefixed",
    "LengthPrefixedDecoder",
    "check_framing",
]

#: Default ``max_size`` of :class:`Delimited`: a line protocol's messages are
#: short, and 64 KiB is also the default of ``Client.read_until`` and the
#: largest unframed chunk, so a delimited peer can never make one connection
#: buffer much more than an unframed one.
DEFAULT_MAX_DELIMITED = 65536

#: Default ``max_size`` of :class:`LengthPrefixed`: 1 MiB, the default message
#: limit of the ``websockets`` library and Kafka. Big enough for ordinary RPC and
#: JSON payloads; small enough that a thousand peers each announcing a maximal
#: message cost at most ~1 GiB. Larger payloads need an explicit, deliberate
#: ``max_size``. Clamped to what a 1- or 2-byte header can express.
DEFAULT_MAX_LENGTH_PREFIXED = 1024 * 1024

# Big-endian unsigned header codecs, one per allowed header size.
_HEADERS = {size: struct.Struct(fmt) for size, fmt in ((1, ">B"), (2, ">H"), (4, ">I"), (8, ">Q"))}


@runtime_checkable
class Decoder(Protocol):
    """The per-connection, stateful half of a framing: bytes in, whole messages out.

    A decoder is created by :meth:`Framing.decoder` for one connection and fed
    that connection's bytes in order. It is not shared and needs no locking.
    """

    def feed(self, data: bytes, /) -> Sequence[bytes]:
        """Take the next received chunk; return the messages it completes, in order.

        Args:
            data: the next bytes of the stream; trio_tcp always passes ``bytes``.

        Returns:
            Every message completed by ``data``, oldest first; empty if the
            chunk only extends an unfinished message. Leftover bytes are kept
            for the next call.

        Raises:
            FramingError: the input breaks the framing rules, or an unfinished
                message can no longer fit in the size limit. The stream is then
                unusable and the decoder must be discarded.
        """
        ...

    def pending(self) -> int:
        """Return how many bytes are buffered towards an unfinished message.

        Non-zero at end of stream means the peer closed mid-message.
        """
        ...


@runtime_checkable
class Framing(Protocol):
    """How messages are cut out of, and put on, a byte stream.

    A framing object is immutable and shared: one instance serves every
    connection of a service or client. Give a ``ConnectionService`` a
    ``framing`` attribute, or pass ``framing=`` to ``Client.connect``.
    """

    def encode(self, message: bytes, /) -> bytes:
        """Return the bytes that carry ``message`` on the wire.

        trio_tcp always passes ``bytes``; the built-in framings also accept
        ``bytearray`` and ``memoryview``.

        Raises:
            FramingError: ``message`` cannot be framed (too big, or it would be
                read back differently).
        """
        ...

    def decoder(self) -> Decoder:
        """Return a new decoder, with empty state, for one connection."""
        ...


def check_framing(value: object, name: str = "framing") -> Framing:
    """Return ``value`` as a :class:`Framing`, or raise :class:`TypeError`.

    For the places that accept a user's framing, so a wrong object fails when
    it is configured rather than on the first message.
    """
    if isinstance(value, Framing):
        return value
    raise TypeError(
        f"{name} must have encode(message) and decoder() methods (see trio_tcp.framing),"
        f" got {type(value).__name__}"
    )


def _to_bytes(data: object, what: str) -> bytes:
    """Return bytes-like ``data`` as ``bytes``; the hot paths test ``type(x) is bytes`` first."""
    # Never bytes(data) blindly: bytes(5) is five zero bytes, not a type error.
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, got {type(data).__name__}")


def _check_max_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_size must be an int, got {type(value).__name__}")
    if value < 1:
        raise ConfigurationError(f"max_size must be at least 1 byte, got {value}")
    return value


# ---------------------------------------------------------------------------
# Delimited


@dataclass(frozen=True, slots=True, init=False)
class Delimited:
    """Messages separated by a delimiter, such as ``b"\\n"`` or ``b"\\r\\n"``.

    On the wire each message is followed by ``delimiter``. Messages exclude the
    delimiter; an empty message (two delimiters in a row) is delivered as
    ``b""``.

    Args:
        delimiter: the non-empty byte string that ends every message.
        max_size: the largest message in bytes, delimiter not counted. Reading
            a longer one, or encoding one, raises
            :class:`~trio_tcp.FramingError`.

    Raises:
        TypeError: ``delimiter`` is not bytes-like, or ``max_size`` not an int.
        ConfigurationError: ``delimiter`` is empty or ``max_size`` is below 1.
    """

    delimiter: bytes
    max_size: int
    # Whether the delimiter overlaps itself (b"aa", b"abab"): then a message's
    # end can form it early, and more than "no delimiter inside" must be checked.
    _self_overlapping: bool = field(init=False, repr=False, compare=False)

    def __init__(
        self, delimiter: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_DELIMITED
    ) -> None:
        given: object = delimiter
        if isinstance(given, str):
            raise TypeError(f"delimiter must be bytes, not str (try {given.encode()!r})")
        delimiter = _to_bytes(given, "delimiter")
        if not delimiter:
            raise ConfigurationError("delimiter must not be empty")
        object.__setattr__(self, "delimiter", delimiter)
        object.__setattr__(self, "max_size", _check_max_size(max_size))
        overlapping = any(
            delimiter[k:] == delimiter[: len(delimiter) - k] for k in range(1, len(delimiter))
        )
        object.__setattr__(self, "_self_overlapping", overlapping)

    def encode(self, message: bytes | bytearray | memoryview) -> bytes:
        """Return ``message`` followed by the delimiter.

        Raises:
            TypeError: ``message`` is not bytes-like.
            FramingError: ``message`` is longer than ``max_size``, or contains
                the delimiter (or ends with bytes that would form it early, as
                ``b"a"`` does with ``b"aa"``), so it would not be read back whole.
        """
        if type(message) is not bytes:
            message = _to_bytes(message, "message")
        if len(message) > self.max_size:
            raise FramingError(
                f"message of {len(message)} bytes is over max_size={self.max_size} of {self!r}"
            )
        delimiter = self.delimiter
        framed = message + delimiter
        # One search finds both a delimiter inside the message and one formed
        # across its end: either way the reader would stop too early.
        if framed.find(delimiter) != len(message):
            raise FramingError(f"message contains the delimiter {delimiter!r}; cannot frame it")
        return framed

    def decoder(self) -> DelimitedDecoder:
        """Return a new decoder for one connection."""
        return DelimitedDecoder(self)


class DelimitedDecoder:
    """The per-connection decoder of a :class:`Delimited` framing.

    Buffers at most ``max_size + len(delimiter) - 1`` bytes between calls: any
    more without a delimiter cannot end in a message that fits, so
    :meth:`feed` raises :class:`~trio_tcp.FramingError` instead of keeping it.
    """

    __slots__ = ("_buffer", "_delimiter", "_limit", "_max_size", "_tail")

    def __init__(self, framing: Delimited) -> None:
        """Start an empty decoder for ``framing``."""
        self._delimiter = framing.delimiter
        self._max_size = framing.max_size
        # Bytes of a partial delimiter that may end the buffer.
        self._tail = len(framing.delimiter) - 1
        # The most an unfinished message may buffer and still end within max_size.
        self._limit = framing.max_size + self._tail
        self._buffer = bytearray()

    def pending(self) -> int:
        """Return the number of bytes buffered towards an unfinished message."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next chunk; return the messages it completes (see :class:`Decoder`).

        Raises:
            TypeError: ``data`` is not bytes-like.
            FramingError: a message is longer than ``max_size``. Messages that
                the same chunk completed before it are dropped with the stream.
        """
        if type(data) is not bytes:
            data = _to_bytes(data, "data")
        buffer = self._buffer
        if not buffer:
            # The commonest chunk of all: exactly one whole message.
            end = data.find(self._delimiter)
            if 0 <= end <= self._max_size and end == len(data) - len(self._delimiter):
                return [data[:end]]
            return self._split(data, 0, [])
        delimiter = self._delimiter
        tail = self._tail
        held = len(buffer)
        # The buffer holds no whole delimiter, so the first one is either across
        # the seam (it starts in the buffer's last `tail` bytes) or inside data.
        if tail:
            seam = buffer[-tail:] + data[:tail]
            found = seam.find(delimiter)
            if found >= 0:
                size = held - min(tail, held) + found
                if size > self._max_size:
                    self._fail(size)
                del buffer[size:]
                message = bytes(buffer)
                buffer.clear()
                return self._split(data, size + len(delimiter) - held, [message])
        found = data.find(delimiter)
        if found < 0:
            if held + len(data) > self._limit:
                self._fail(held + len(data) - tail)
            buffer += data
            return []
        size = held + found
        if size > self._max_size:
            self._fail(size)
        message = b"".join((buffer, memoryview(data)[:found]))
        buffer.clear()
        return self._split(data, found + len(delimiter), [message])

    def _split(self, data: bytes, start: int, messages: list[bytes]) -> list[bytes]:
        """Cut the messages of ``data[start:]`` into ``messages``; buffer the rest."""
        # One bytes.split in C rather than a find per message: a pipelining
        # client sends dozens of messages in one chunk.
        parts = (data[start:] if start else data).split(self._delimiter)
        rest = parts.pop()
        if len(data) - start > self._max_size and parts:
            longest = max(map(len, parts))
            if longest > self._max_size:
                self._fail(longest)
        if messages:
            messages += parts
        else:
            messages = parts
        if rest:
            if len(rest) > self._limit:
                self._fail(len(rest) - self._tail)
            self._buffer += rest
        return messages

    def _fail(self, size: int) -> NoReturn:
        self._buffer.clear()  # the stream is broken: free the memory now
        raise FramingError(
            f"received a message of at least {size} bytes (delimiter {self._delimiter!r}):"
            f" over max_size={self._max_size}"
        )


# ---------------------------------------------------------------------------
# LengthPrefixed


@dataclass(frozen=True, slots=True, init=False)
class LengthPrefixed:
    """Messages preceded by their length: a big-endian unsigned integer header.

    On the wire each message is ``header_size`` bytes holding the payload's
    length (the header not counted), then the payload. Empty payloads are
    allowed.

    Args:
        header_size: bytes in the length header: 1, 2, 4 or 8.
        max_size: the largest payload in bytes; a payload of exactly
            ``max_size`` is fine. A header announcing more raises
            :class:`~trio_tcp.FramingError` as soon as it is read, before any
            of the payload is buffered; encoding a bigger message raises too.
            The default is :data:`DEFAULT_MAX_LENGTH_PREFIXED` (1 MiB), lowered
            to the header's largest value for 1- and 2-byte headers (255 and
            65535).

    Raises:
        TypeError: ``header_size`` or ``max_size`` is not an int.
        ConfigurationError: ``header_size`` is not 1, 2, 4 or 8; ``max_size`` is
            below 1, or above what the header can express (an explicit value is
            never silently lowered).
    """

    header_size: int
    max_size: int
    _header: struct.Struct = field(init=False, repr=False, compare=False)

    def __init__(self, header_size: int = 4, *, max_size: int | None = None) -> None:
        if isinstance(header_size, bool) or not isinstance(header_size, int):
            raise TypeError(f"header_size must be an int, got {type(header_size).__name__}")
        header = _HEADERS.get(header_size)
        if header is None:
            raise ConfigurationError(f"header_size must be 1, 2, 4 or 8, got {header_size}")
        largest = (1 << (8 * header_size)) - 1
        if max_size is None:
            max_size = min(DEFAULT_MAX_LENGTH_PREFIXED, largest)
        elif _check_max_size(max_size) > largest:
            raise ConfigurationError(
                f"max_size={max_size} does not fit in a {header_size}-byte header"
                f" (largest: {largest})"
            )
        object.__setattr__(self, "header_size", header_size)
        object.__setattr__(self, "max_size", max_size)
        object.__setattr__(self, "_header", header)

    def encode(self, message: bytes | bytearray | memoryview) -> bytes:
        """Return the length header followed by ``message``.

        Raises:
            TypeError: ``message`` is not bytes-like.
            FramingError: ``message`` is longer than ``max_size``.
        """
        if type(message) is not bytes:
            message = _to_bytes(message, "message")
        size = len(message)
        if size > self.max_size:
            raise FramingError(
                f"message of {size} bytes is over max_size={self.max_size} of {self!r}"
            )
        return self._header.pack(size) + message

    def decoder(self) -> LengthPrefixedDecoder:
        """Return a new decoder for one connection."""
        return LengthPrefixedDecoder(self)


class LengthPrefixedDecoder:
    """The per-connection decoder of a :class:`LengthPrefixed` framing.

    Buffers at most ``max(max_size, header_size) - 1`` bytes between calls: an
    unfinished header, or the unfinished payload of a header already checked
    against ``max_size``.
    """

    __slots__ = ("_buffer", "_header_size", "_max_size", "_unpack_from", "_wanted")

    def __init__(self, framing: LengthPrefixed) -> None:
        """Start an empty decoder for ``framing``."""
        self._header_size = framing.header_size
        self._max_size = framing.max_size
        self._unpack_from = _HEADERS[framing.header_size].unpack_from
        self._buffer = bytearray()
        # Payload length of the message in progress; -1 while its header is unfinished.
        self._wanted = -1

    def pending(self) -> int:
        """Return the number of bytes buffered towards an unfinished message."""
        return len(self._buffer) + (self._header_size if self._wanted >= 0 else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Take the next chunk; return the messages it completes (see :class:`Decoder`).

        Raises:
            TypeError: ``data`` is not bytes-like.
            FramingError: a header announces more than ``max_size`` bytes.
                Messages that the same chunk completed before it are dropped
                with the stream.
        """
        if type(data) is not bytes:
            data = _to_bytes(data, "data")
        messages: list[bytes] = []
        start = 0
        buffer = self._buffer
        wanted = self._wanted
        if buffer or wanted >= 0:
            if wanted < 0:  # finish the header first
                start = self._header_size - len(buffer)
                buffer += data[:start]
                if len(buffer) < self._header_size:
                    return messages
                wanted = self._check(int.from_bytes(buffer, "big"))
                buffer.clear()
            missing = wanted - len(buffer)
            if len(data) - start < missing:
                self._wanted = wanted
                buffer += data[start:]
                return messages
            end = start + missing
            messages.append(b"".join((buffer, memoryview(data)[start:end])))
            buffer.clear()
            self._wanted = -1
            start = end
        # Nothing buffered: slice whole messages straight out of data.
        header_size = self._header_size
        max_size = self._max_size
        unpack_from = self._unpack_from
        size = len(data)
        while size - start >= header_size:
            (length,) = unpack_from(data, start)
            if length > max_size:
                self._fail(length)
            end = start + header_size + length
            if end > size:
                self._wanted = length
                buffer += data[start + header_size :]
                return messages
            messages.append(data[start + header_size : end])
            start = end
        if start < size:
            buffer += data[start:]
        return messages

    def _check(self, length: int) -> int:
        if length > self._max_size:
            self._fail(length)
        return length

    def _fail(self, length: int) -> NoReturn:
        self._buffer.clear()  # the stream is broken: free the memory now
        self._wanted = -1
        raise FramingError(
            f"length header announces a message of {length} bytes: over max_size={self._max_size}"
        )
