"""Sans-IO tests of trio_tcp.framing: every chunking decodes to the same messages."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_tcp._errors import ConfigurationError, FramingError
from trio_tcp._framing import check_framing
from trio_tcp.framing import (
    DEFAULT_MAX_DELIMITED,
    DEFAULT_MAX_LENGTH_PREFIXED,
    Decoder,
    Delimited,
    Framing,
    LengthPrefixed,
)

# ---------------------------------------------------------------------------
# The user-written framer of docs/framing.md (the worked example there).


class FixedSize:
    """Every message is exactly ``size`` bytes: no header, no delimiter."""

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, message: bytes) -> bytes:
        if len(message) != self.size:
            raise FramingError(f"record must be {self.size} bytes, got {len(message)}")
        return message

    def decoder(self) -> FixedSizeDecoder:
        return FixedSizeDecoder(self.size)


class FixedSizeDecoder:
    def __init__(self, size: int) -> None:
        self.size = size
        self.buffer = bytearray()  # never more than size - 1 bytes between calls

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        whole = len(self.buffer) - len(self.buffer) % self.size
        records = [bytes(self.buffer[i : i + self.size]) for i in range(0, whole, self.size)]
        del self.buffer[:whole]
        return records

    def pending(self) -> int:
        return len(self.buffer)


# ---------------------------------------------------------------------------
# Helpers


def split(wire: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``wire`` at the given offsets (any order, duplicates allowed)."""
    points = [0, *sorted(set(cuts)), len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(points)]


def chunkings(data: st.DataObject, wire: bytes) -> list[list[bytes]]:
    """All at once, one byte at a time, and one arbitrary chunking."""
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20), label="cuts")
    return [[wire], [wire[i : i + 1] for i in range(len(wire))], split(wire, cuts)]


def decode(
    decoder: Decoder, chunks: Sequence[bytes], bound: int, as_type: Callable[[bytes], object]
) -> list[bytes]:
    """Feed ``chunks``, checking the buffering bound after every call."""
    messages: list[bytes] = []
    for chunk in chunks:
        out = decoder.feed(as_type(chunk))  # type: ignore[arg-type]  # built-ins take bytes-likes
        assert all(type(m) is bytes for m in out)
        messages.extend(out)
        assert decoder.pending() <= bound
    return messages


def feed_until_error(
    decoder: Decoder, chunks: Sequence[bytes], bound: int
) -> tuple[list[bytes], FramingError | None]:
    """Feed ``chunks`` until a FramingError; return the messages and the error, if any."""
    messages: list[bytes] = []
    for chunk in chunks:
        try:
            messages.extend(decoder.feed(chunk))
        except FramingError as exc:
            return messages, exc
        assert decoder.pending() <= bound
    return messages, None


# What a chunk may arrive as: trio streams return bytes or bytearray.
AS_TYPES: st.SearchStrategy[Callable[[bytes], object]] = st.sampled_from(
    [bytes, bytearray, memoryview]
)

DELIMITERS = [
    pytest.param(b"\n", id="LF"),
    pytest.param(b"\r\n", id="CRLF"),
    pytest.param(b"\x00\x00", id="NULNUL"),
    pytest.param(b"aba", id="self-overlapping"),
    pytest.param(b"--XY--", id="boundary"),
]


def delimited_message(delimiter: bytes) -> st.SearchStrategy[bytes]:
    """A message made of delimiter fragments and other bytes, so partial matches abound."""
    ends = range(1, len(delimiter))
    pieces = [delimiter[:i] for i in ends] + [delimiter[i:] for i in ends]
    piece = st.sampled_from(pieces) if pieces else st.nothing()
    return st.lists(piece | st.binary(max_size=4), max_size=6).map(b"".join)


def encodable(framing: Delimited, messages: list[bytes]) -> list[bytes]:
    kept = []
    for message in messages:
        try:
            framing.encode(message)
        except FramingError:
            continue
        kept.append(message)
    return kept


# ---------------------------------------------------------------------------
# Delimited


@pytest.mark.parametrize("delimiter", DELIMITERS)
@given(data=st.data(), as_type=AS_TYPES)
def test_delimited_round_trip_any_chunking(
    delimiter: bytes, as_type: Callable[[bytes], object], data: st.DataObject
) -> None:
    framing = Delimited(delimiter, max_size=64)
    messages = encodable(
        framing, data.draw(st.lists(delimited_message(delimiter), max_size=12), label="messages")
    )
    wire = b"".join(framing.encode(m) for m in messages)
    for chunks in chunkings(data, wire):
        decoder = framing.decoder()
        bound = framing.max_size + len(delimiter) - 1
        assert decode(decoder, chunks, bound, as_type) == messages
        assert decoder.pending() == 0


@pytest.mark.parametrize("delimiter", DELIMITERS)
@given(data=st.data())
def test_delimited_encode_rejects_exactly_what_would_not_read_back(
    delimiter: bytes, data: st.DataObject
) -> None:
    framing = Delimited(delimiter, max_size=64)
    message = data.draw(delimited_message(delimiter), label="message")
    wire = message + delimiter
    reads_back = framing.decoder().feed(wire) == [message]
    if reads_back:
        assert framing.encode(message) == wire
    else:
        assert delimiter in wire[: len(message) + len(delimiter) - 1]
        with pytest.raises(FramingError, match="contains the delimiter"):
            framing.encode(message)


def test_delimited_empty_messages_are_delivered() -> None:
    decoder = Delimited(b"\r\n").decoder()
    assert decoder.feed(b"\r\n\r\na\r\n") == [b"", b"", b"a"]
    assert Delimited(b"\n").encode(b"") == b"\n"


def test_delimited_partial_message_is_pending() -> None:
    decoder = Delimited(b"\r\n").decoder()
    assert decoder.feed(b"abc\r") == []
    assert decoder.pending() == 4
    assert decoder.feed(b"\nde") == [b"abc"]
    assert decoder.pending() == 2


@pytest.mark.parametrize("delimiter", DELIMITERS)
@given(data=st.data())
def test_delimited_oversize_raises_and_stays_bounded(delimiter: bytes, data: st.DataObject) -> None:
    max_size = data.draw(st.integers(1, 12), label="max_size")
    framing = Delimited(delimiter, max_size=max_size)
    filler = st.binary(max_size=2 * max_size + 3).filter(
        lambda m: delimiter not in m + delimiter[:-1]
    )
    messages = data.draw(st.lists(filler, min_size=1, max_size=6), label="messages")
    wire = b"".join(m + delimiter for m in messages)
    oversize = [len(m) > max_size for m in messages]
    first_bad = oversize.index(True) if any(oversize) else len(messages)
    bound = max_size + len(delimiter) - 1
    for chunks in chunkings(data, wire):
        decoder = framing.decoder()
        got, error = feed_until_error(decoder, chunks, bound)
        assert got == messages[: len(got)]
        if error is None:
            assert first_bad == len(messages)
            assert got == messages
        else:
            assert f"max_size={max_size}" in str(error)
            assert decoder.pending() == 0  # memory freed at once
            assert len(got) <= first_bad < len(messages)


def test_delimited_oversize_detected_before_the_delimiter_arrives() -> None:
    decoder = Delimited(b"\r\n", max_size=4).decoder()
    assert decoder.feed(b"abcd\r") == []  # 4 bytes + maybe a delimiter: may still fit
    with pytest.raises(FramingError, match="max_size=4"):
        decoder.feed(b"x")  # 5 message bytes and no delimiter yet: can never fit


@pytest.mark.parametrize("delimiter", DELIMITERS)
def test_delimited_exact_max_size(delimiter: bytes) -> None:
    framing = Delimited(delimiter, max_size=10)
    ok, over = b"z" * 10, b"z" * 11
    assert framing.encode(ok) == ok + delimiter
    with pytest.raises(FramingError, match="max_size=10"):
        framing.encode(over)
    assert framing.decoder().feed(ok + delimiter) == [ok]
    with pytest.raises(FramingError, match="max_size=10"):
        framing.decoder().feed(over + delimiter)
    decoder = framing.decoder()
    assert decoder.feed(b"z" * 6) == []
    with pytest.raises(FramingError):
        decoder.feed(b"z" * 5 + delimiter)


def test_delimited_one_byte_at_a_time_over_a_megabyte() -> None:
    # A quadratic decoder (re-searching the whole buffer on every byte) would
    # need ~5e11 byte comparisons here; this one looks at each byte a bounded
    # number of times, which keeps this test to about a second.
    size = 1 << 20
    framing = Delimited(b"\r\n", max_size=size)
    wire = b"\r" * (size - 2) + b"x\r\n" + b"tail\r\n"
    decoder = framing.decoder()
    messages = []
    for i in range(len(wire)):
        messages.extend(decoder.feed(wire[i : i + 1]))
        assert decoder.pending() <= size + 1
    assert messages == [b"\r" * (size - 2) + b"x", b"tail"]


# ---------------------------------------------------------------------------
# LengthPrefixed

HEADER_SIZES = [pytest.param(n, id=f"header{n}") for n in (1, 2, 4, 8)]


@pytest.mark.parametrize("header_size", HEADER_SIZES)
@given(data=st.data(), as_type=AS_TYPES)
def test_length_prefixed_round_trip_any_chunking(
    header_size: int, as_type: Callable[[bytes], object], data: st.DataObject
) -> None:
    framing = LengthPrefixed(header_size, max_size=40)
    messages = data.draw(st.lists(st.binary(max_size=40), max_size=10), label="messages")
    wire = b"".join(framing.encode(m) for m in messages)
    for chunks in chunkings(data, wire):
        decoder = framing.decoder()
        bound = framing.max_size + header_size - 1
        assert decode(decoder, chunks, bound, as_type) == messages
        assert decoder.pending() == 0


@pytest.mark.parametrize("header_size", HEADER_SIZES)
def test_length_prefixed_wire_format(header_size: int) -> None:
    framing = LengthPrefixed(header_size)
    assert framing.encode(b"abc") == (3).to_bytes(header_size, "big") + b"abc"
    assert framing.encode(b"") == bytes(header_size)
    assert framing.decoder().feed(bytes(header_size) * 2) == [b"", b""]


def test_length_prefixed_big_endian() -> None:
    framing = LengthPrefixed(2, max_size=300)
    assert framing.encode(b"x" * 258)[:2] == b"\x01\x02"


@pytest.mark.parametrize("header_size", HEADER_SIZES)
def test_length_prefixed_exact_max_size(header_size: int) -> None:
    max_size = 200
    framing = LengthPrefixed(header_size, max_size=max_size)
    ok = b"q" * max_size
    assert framing.decoder().feed(framing.encode(ok)) == [ok]
    with pytest.raises(FramingError, match=f"max_size={max_size}"):
        framing.encode(ok + b"q")
    with pytest.raises(FramingError, match=f"max_size={max_size}"):
        framing.decoder().feed((max_size + 1).to_bytes(header_size, "big"))


@pytest.mark.parametrize("header_size", HEADER_SIZES)
@given(data=st.data())
def test_length_prefixed_oversize_raises_on_the_header(
    header_size: int, data: st.DataObject
) -> None:
    largest = (1 << (8 * header_size)) - 1
    max_size = data.draw(st.integers(1, 254), label="max_size")
    length = data.draw(st.integers(max_size + 1, largest), label="length")
    good = data.draw(st.lists(st.binary(max_size=max_size), max_size=3), label="good")
    framing = LengthPrefixed(header_size, max_size=max_size)
    prefix = b"".join(framing.encode(m) for m in good)
    header = length.to_bytes(header_size, "big")
    decoder = framing.decoder()
    got = [m for i in range(len(prefix)) for m in decoder.feed(prefix[i : i + 1])]
    assert got == good
    for byte in header[:-1]:
        assert decoder.feed(bytes([byte])) == []
    # Raised on the header's last byte: the oversize payload is never awaited.
    with pytest.raises(FramingError, match=f"announces a message of {length} bytes"):
        decoder.feed(header[-1:])
    assert decoder.pending() == 0


def test_length_prefixed_pending_counts_the_header() -> None:
    decoder = LengthPrefixed(4).decoder()
    assert decoder.feed(b"\x00\x00") == []
    assert decoder.pending() == 2
    assert decoder.feed(b"\x00\x03ab") == []
    assert decoder.pending() == 6
    assert decoder.feed(b"c\x00") == [b"abc"]
    assert decoder.pending() == 1


def test_length_prefixed_default_max_size_fits_the_header() -> None:
    assert LengthPrefixed().header_size == 4
    assert LengthPrefixed().max_size == DEFAULT_MAX_LENGTH_PREFIXED
    assert LengthPrefixed(1).max_size == 255
    assert LengthPrefixed(2).max_size == 65535
    assert LengthPrefixed(8).max_size == DEFAULT_MAX_LENGTH_PREFIXED
    assert LengthPrefixed(1, max_size=255).max_size == 255


# ---------------------------------------------------------------------------
# A user-written framer goes through the same property


@pytest.mark.parametrize("size", [1, 3, 16])
@given(data=st.data())
def test_user_fixed_size_framer_round_trip(size: int, data: st.DataObject) -> None:
    framing = FixedSize(size)
    records = data.draw(st.lists(st.binary(min_size=size, max_size=size), max_size=10))
    wire = b"".join(framing.encode(r) for r in records)
    for chunks in chunkings(data, wire):
        assert decode(framing.decoder(), chunks, size - 1, bytes) == records
    with pytest.raises(FramingError):
        framing.encode(b"x" * (size + 1))


def test_protocols_are_structural() -> None:
    for framing in (Delimited(b"\n"), LengthPrefixed(), FixedSize(4)):
        assert isinstance(framing, Framing)
        assert isinstance(framing.decoder(), Decoder)
        assert check_framing(framing) is framing
    with pytest.raises(TypeError, match="encode"):
        check_framing(b"\n")


def test_each_decoder_is_independent() -> None:
    framing = Delimited(b"\n")
    first, second = framing.decoder(), framing.decoder()
    assert first.feed(b"ab") == []
    assert second.feed(b"cd\n") == [b"cd"]
    assert first.feed(b"\n") == [b"ab"]


# ---------------------------------------------------------------------------
# Construction and argument checking


# Untyped aliases, to pass what the type checker would rightly refuse.
AnyDelimited: Any = Delimited
AnyLengthPrefixed: Any = LengthPrefixed


@pytest.mark.parametrize(
    ("make", "error"),
    [
        pytest.param(lambda: AnyDelimited(b""), ConfigurationError, id="empty-delimiter"),
        pytest.param(lambda: AnyDelimited("\n"), TypeError, id="str-delimiter"),
        pytest.param(lambda: AnyDelimited(10), TypeError, id="int-delimiter"),
        pytest.param(lambda: AnyDelimited(None), TypeError, id="none-delimiter"),
        pytest.param(lambda: AnyDelimited(b"\n", max_size=0), ConfigurationError, id="zero-max"),
        pytest.param(
            lambda: AnyDelimited(b"\n", max_size=-1), ConfigurationError, id="negative-max"
        ),
        pytest.param(lambda: AnyDelimited(b"\n", max_size=1.5), TypeError, id="float-max"),
        pytest.param(lambda: AnyDelimited(b"\n", max_size=True), TypeError, id="bool-max"),
        pytest.param(lambda: AnyDelimited(b"\n", 10), TypeError, id="positional-max"),
        pytest.param(lambda: AnyLengthPrefixed(3), ConfigurationError, id="header3"),
        pytest.param(lambda: AnyLengthPrefixed(0), ConfigurationError, id="header0"),
        pytest.param(lambda: AnyLengthPrefixed(16), ConfigurationError, id="header16"),
        pytest.param(lambda: AnyLengthPrefixed("4"), TypeError, id="str-header"),
        pytest.param(lambda: AnyLengthPrefixed(4.0), TypeError, id="float-header"),
        pytest.param(lambda: AnyLengthPrefixed(True), TypeError, id="bool-header"),
        pytest.param(lambda: AnyLengthPrefixed(max_size=-5), ConfigurationError, id="negative-max"),
        pytest.param(lambda: AnyLengthPrefixed(max_size=0), ConfigurationError, id="zero-max"),
        pytest.param(lambda: AnyLengthPrefixed(max_size="9"), TypeError, id="str-max"),
        pytest.param(
            lambda: AnyLengthPrefixed(1, max_size=256), ConfigurationError, id="over-header1"
        ),
        pytest.param(
            lambda: AnyLengthPrefixed(4, max_size=1 << 32), ConfigurationError, id="over-header4"
        ),
    ],
)
def test_invalid_construction(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        LengthPrefixed(3)


def test_delimiter_accepts_bytes_likes_and_stores_bytes() -> None:
    assert Delimited(bytearray(b"\r\n")).delimiter == b"\r\n"
    assert type(Delimited(memoryview(b";")).delimiter) is bytes
    assert Delimited(b"\n").max_size == DEFAULT_MAX_DELIMITED


@pytest.mark.parametrize(
    "framing",
    [pytest.param(Delimited(b"\n"), id="delimited"), pytest.param(LengthPrefixed(), id="length")],
)
def test_wrong_payload_types(framing: Delimited | LengthPrefixed) -> None:
    for bad in ("text", 5, None, [1, 2]):
        with pytest.raises(TypeError):
            framing.encode(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            framing.decoder().feed(bad)  # type: ignore[arg-type]
    assert framing.encode(bytearray(b"ab")) == framing.encode(memoryview(b"ab"))


def test_framings_are_frozen_values() -> None:
    framing = Delimited(b"\n", max_size=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        framing.max_size = 20  # type: ignore[misc]
    assert framing == Delimited(b"\n", max_size=10)
    assert hash(framing) == hash(Delimited(b"\n", max_size=10))
    assert LengthPrefixed(2) == LengthPrefixed(2, max_size=65535)
    assert LengthPrefixed(2) != LengthPrefixed(4)
    assert repr(LengthPrefixed(2)) == "LengthPrefixed(header_size=2, max_size=65535)"
    assert repr(framing) == "Delimited(delimiter=b'\\n', max_size=10)"
    assert dataclasses.replace(framing, max_size=3) == Delimited(b"\n", max_size=3)
    assert (
        dataclasses.replace(LengthPrefixed(2), header_size=1, max_size=9).encode(b"a") == b"\x01a"
    )
    with pytest.raises(ConfigurationError):
        dataclasses.replace(LengthPrefixed(2), header_size=3)


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=30), max_size=20))
def test_many_messages_in_one_chunk_are_sliced_in_order(messages: list[bytes]) -> None:
    framing = LengthPrefixed(2, max_size=30)
    decoder = framing.decoder()
    assert decoder.feed(b"".join(map(framing.encode, messages))) == messages
