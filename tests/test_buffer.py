"""ReceiveBuffer (sans-IO): plain functions and hypothesis over every chunking.

The reference model is a plain ``bytes`` of what is buffered: whatever the
chunking of the feeds and the sequence of takes, the buffer must answer
exactly like the model, and what comes out (delimiters included) is always a
prefix of what went in, in order.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import SupportsIndex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_tcp._buffer import ReceiveBuffer

DELIMITERS = [b"\n", b"\r\n", b"ab", b"aba", b"\r\n\r\n"]

# Few distinct bytes, so delimiters (and near-misses such as b"\r\r\n" or
# b"abab") actually occur; plus arbitrary binary for everything else.
payloads = st.one_of(
    st.lists(st.sampled_from(b"ab\r\n"), max_size=200).map(bytes),
    st.binary(max_size=200),
)


@dataclass(frozen=True)
class Feed:
    count: int  # feed the next `count` bytes of the input


@dataclass(frozen=True)
class Take:
    max_bytes: int


@dataclass(frozen=True)
class TakeExactly:
    size: int


@dataclass(frozen=True)
class TakeUntil:
    delimiter: bytes
    max_size: int | None = None


Op = Feed | Take | TakeExactly | TakeUntil

operations = st.lists(
    st.one_of(
        st.builds(Feed, st.integers(0, 40)),
        st.builds(Take, st.integers(0, 50)),
        st.builds(TakeExactly, st.integers(0, 50)),
        st.builds(TakeUntil, st.sampled_from(DELIMITERS), st.none() | st.integers(0, 30)),
    ),
    max_size=60,
)


@given(data=payloads, ops=operations)
def test_buffer_matches_model_and_output_is_prefix_of_input(data: bytes, ops: list[Op]) -> None:
    buffer = ReceiveBuffer()
    fed = 0
    model = b""  # what the buffer should hold
    out = bytearray()  # everything taken, delimiters included
    for op in ops:
        if isinstance(op, Feed):
            chunk = data[fed : fed + op.count]
            fed += len(chunk)
            buffer.feed(chunk)
            model += chunk
        elif isinstance(op, Take):
            got = buffer.take(op.max_bytes)
            assert got == model[: op.max_bytes]
            model = model[len(got) :]
            out += got
        elif isinstance(op, TakeExactly):
            got_exact = buffer.take_exactly(op.size)
            if len(model) < op.size:
                assert got_exact is None
            else:
                assert got_exact == model[: op.size]
                model = model[op.size :]
                out += got_exact
        else:
            got_line = buffer.take_until(op.delimiter, op.max_size)
            if op.max_size is None:
                index = model.find(op.delimiter)
            else:
                index = model.find(op.delimiter, 0, op.max_size + len(op.delimiter))
            if index < 0:
                assert got_line is None
            else:
                assert got_line == model[:index]
                model = model[index + len(op.delimiter) :]
                out += got_line + op.delimiter
        assert len(buffer) == len(model)
        assert bool(buffer) == bool(model)
        assert bytes(out) == data[: len(out)]
    # Whatever is left comes out last, and nothing was lost or duplicated.
    assert buffer.take(len(buffer)) == model
    assert bytes(out) + model == data[:fed]
    assert not buffer


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(
    head=payloads,
    delimiter=st.sampled_from([d for d in DELIMITERS if len(d) > 1]),
    tail=payloads,
    cuts=st.lists(st.integers(0, 420), max_size=12),
)
def test_take_until_finds_first_delimiter_straddling_feeds(
    head: bytes, delimiter: bytes, tail: bytes, cuts: list[int]
) -> None:
    data = head + delimiter + tail
    first = data.find(delimiter)
    complete_at = first + len(delimiter)  # bytes needed before the line can be found
    buffer = ReceiveBuffer()
    received = 0
    line = None
    for chunk in _split(data, cuts):
        buffer.feed(chunk)
        received += len(chunk)
        line = buffer.take_until(delimiter)
        if received < complete_at:
            assert line is None
        else:
            break
    # Found exactly when the delimiter completed, however it was split.
    assert line == data[:first]
    assert buffer.take(len(buffer)) == data[complete_at:received]


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"--boundary--"], ids=repr)
def test_one_byte_at_a_time_finds_delimiter_once(delimiter: bytes) -> None:
    line = bytes(random.Random(1).choice(b"abc-\r") for _ in range(5000)).replace(delimiter, b"")
    data = line + delimiter + b"next"
    buffer = ReceiveBuffer()
    found = []
    for i in range(len(data)):
        buffer.feed(data[i : i + 1])
        result = buffer.take_until(delimiter)
        if result is not None:
            found.append((i, result))
    assert found == [(len(line) + len(delimiter) - 1, line)]
    assert buffer.take(100) == b"next"


class _CountingBytearray(bytearray):
    """Records how many bytes every ``find`` call looked at."""

    scanned = 0

    def find(  # type: ignore[override]
        self,
        sub: bytes,
        start: SupportsIndex | None = None,
        end: SupportsIndex | None = None,
    ) -> int:
        begin = 0 if start is None else int(start)
        stop = len(self) if end is None else min(int(end), len(self))
        self.scanned += max(0, stop - begin)
        return super().find(sub, start, end)


def test_one_byte_at_a_time_is_scanned_once_not_quadratically() -> None:
    # The module promises a line arriving byte by byte is scanned once: each
    # search resumes where the last stopped (minus len(delimiter) - 1).
    delimiter = b"\r\n"
    line = b"x" * 20000
    buffer = ReceiveBuffer()
    counting = _CountingBytearray()
    buffer._data = counting  # white-box: count the bytes searched
    for byte in line + delimiter:
        buffer.feed(bytes([byte]))
        result = buffer.take_until(delimiter)
    assert result == line
    # Quadratic rescanning would look at ~200 million bytes.
    assert counting.scanned <= len(delimiter) * (len(line) + len(delimiter))


def test_search_memory_does_not_leak_to_another_delimiter() -> None:
    # A search for b"\n" looked at b"abc"; a search for b"bc" must still find it.
    buffer = ReceiveBuffer()
    buffer.feed(b"abc")
    assert buffer.take_until(b"\n") is None
    assert buffer.take_until(b"bc") == b"a"
    assert not buffer


@pytest.mark.parametrize(
    ("max_size", "expected"),
    [(None, b"abcdefgh"), (9, b"abcdefgh"), (8, b"abcdefgh"), (7, None), (0, None)],
    ids=["unlimited", "over", "exactly", "one-short", "zero"],
)
def test_take_until_ignores_delimiter_beyond_max_size(
    max_size: int | None, expected: bytes | None
) -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"abcdefgh\r\nrest")
    assert buffer.take_until(b"\r\n", max_size) == expected
    if expected is None:
        # Nothing consumed; a later, larger limit still finds the delimiter.
        assert len(buffer) == 14
        assert buffer.take_until(b"\r\n") == b"abcdefgh"
    assert buffer.take(10) == b"rest"


def test_empty_feeds_and_zero_sized_takes() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"")
    assert not buffer
    assert len(buffer) == 0
    assert buffer.take(10) == b""
    assert buffer.take_exactly(0) == b""
    assert buffer.take_exactly(1) is None
    assert buffer.take_until(b"\n") is None
    buffer.feed(bytearray(b"ab"))
    buffer.feed(memoryview(b"\ncd"))
    assert buffer.take(0) == b""
    assert buffer.take_until(b"\n") == b"ab"
    assert buffer.take_exactly(2) == b"cd"
    assert not buffer


def test_empty_line_between_delimiters() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"\n\nx\n")
    assert buffer.take_until(b"\n") == b""
    assert buffer.take_until(b"\n") == b""
    assert buffer.take_until(b"\n") == b"x"
    assert buffer.take_until(b"\n") is None


def test_results_are_immutable_bytes() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(bytearray(b"abc\ndefgh"))
    results = [buffer.take_until(b"\n"), buffer.take_exactly(2), buffer.take(10)]
    assert results == [b"abc", b"de", b"fgh"]
    assert all(type(result) is bytes for result in results)


def test_large_volume_in_small_pieces_across_compaction() -> None:
    # Several hundred KiB taken in small pieces crosses the compaction point
    # many times; the bytes must still come out exactly once, in order.
    rng = random.Random(7)
    data = bytes(rng.choice(b"abcdefgh\n") for _ in range(400_000))
    buffer = ReceiveBuffer()
    out = bytearray()
    fed = 0
    while fed < len(data) or buffer:
        if fed < len(data) and (not buffer or rng.random() < 0.3):
            step = rng.randint(1, 70_000)
            buffer.feed(data[fed : fed + step])
            fed += step
        choice = rng.random()
        if choice < 0.4:
            out += buffer.take(rng.randint(1, 3000))
        elif choice < 0.7:
            exact = buffer.take_exactly(rng.randint(1, 3000))
            out += exact if exact is not None else b""
        else:
            line = buffer.take_until(b"\n")
            out += line + b"\n" if line is not None else b""
            if line is None and fed >= len(data):
                out += buffer.take(len(buffer))
        assert bytes(out) == data[: len(out)]
    assert bytes(out) == data
