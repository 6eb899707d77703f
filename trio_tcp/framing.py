"""Message framing: turn a TCP byte stream into whole messages, and back.

TCP delivers a stream of bytes, not messages: one ``send`` may arrive in several
chunks, and several sends may arrive in one. A *framing* says where each
message ends. Give one to a connection service, or to a client::

    class LineService(trio_tcp.ConnectionService):
        framing = trio_tcp.framing.Delimited(b"\\n", max_size=4096)

        async def on_bytes(self, line: bytes) -> bytes:
            return line.upper()          # one whole line in; the reply is framed

    client = await trio_tcp.Client.connect(
        "localhost", 3000, framing=trio_tcp.framing.LengthPrefixed(4)
    )
    await client.write_message(b"hello")  # sends b"\\x00\\x00\\x00\\x05hello"
    reply = await client.read_message()   # exactly one whole message

Built-in framings
-----------------
:class:`Delimited` ``(delimiter, *, max_size=65536)``
    Each message is followed by ``delimiter`` (non-empty). Messages exclude it;
    empty messages are delivered. A message that contains the delimiter cannot
    be sent.
:class:`LengthPrefixed` ``(header_size=4, *, max_size=None)``
    Each message is preceded by its length, a big-endian unsigned integer of
    ``header_size`` bytes (1, 2, 4 or 8), the header not counted. ``max_size``
    defaults to 1 MiB (255 and 65535 for 1- and 2-byte headers).

Both are immutable and can be shared by any number of connections. ``max_size``
bounds every message, in both directions: a payload of exactly ``max_size``
bytes is fine; a bigger one raises :class:`~trio_tcp.FramingError` when it is
written, and when it is read (as soon as that is certain, without buffering it),
which ends the connection.

Writing your own
----------------
Any object with the :class:`Framing` protocol works: ``encode(message) ->
bytes``, and ``decoder()`` returning a new :class:`Decoder` for each connection
— an object with ``feed(data) -> list of messages`` and ``pending() -> int``.
trio_tcp always passes ``bytes`` to ``encode`` and ``feed``. A decoder must
bound what it buffers, and raise :class:`~trio_tcp.FramingError` for input it
cannot accept. See ``docs/framing.md`` for a worked example.
"""

from __future__ import annotations

from ._framing import (
    DEFAULT_MAX_DELIMITED,
    DEFAULT_MAX_LENGTH_PREFIXED,
    Decoder,
    Delimited,
    DelimitedDecoder,
    Framing,
    LengthPrefixed,
    LengthPrefixedDecoder,
)

__all__ = [
    # The protocols a framing implements.
    "Framing",
    "Decoder",
    # The built-in framings and their decoders.
    "Delimited",
    "DelimitedDecoder",
    "LengthPrefixed",
    "LengthPrefixedDecoder",
    # Their default limits.
    "DEFAULT_MAX_DELIMITED",
    "DEFAULT_MAX_LENGTH_PREFIXED",
]

# Show the public home in help(), reprs of the classes and generated docs.
for _cls in (Framing, Decoder, Delimited, DelimitedDecoder, LengthPrefixed, LengthPrefixedDecoder):
    _cls.__module__ = __name__
del _cls
