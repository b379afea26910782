"""One lane message: the wire body's frames (header, then array frames) in one buffer.

A lane carries the same header and arrays as the wire (PROTOCOL.md §3.2, §3.3), so
handlers do not change. In front of them goes a 16-byte preamble, little-endian:

====== ===== =========================================================================
offset bytes field
====== ===== =========================================================================
0      8     ``awake_until_ns``: the sender polls for the answer until this
             ``CLOCK_MONOTONIC`` time; the receiver wakes it with an event only after
8      1     flags: bit 0 set on a FINAL reply (a PARTIAL has it clear; requests: 0);
             bit 1 on an acknowledgement (a client's, with no frames: the first field
             then counts the replies it has read in all)
9      3     zero
12     4     ``n``: the number of frames
16     4n    each frame's length
====== ===== =========================================================================

then the frames, back to back.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, NamedTuple

from client.wire import Frame, ProtocolError
from client.wire.limits import MAX_FRAMES

FINAL: Final = 1
ACK: Final = 2
_PREAMBLE: Final = struct.Struct("<QB3xI")
_LEN: Final = struct.Struct("<I")


class LaneMessage(NamedTuple):
    """One message read off a lane, its frames sliced out of one copied buffer."""

    awake_until_ns: int
    """For an acknowledgement: the replies its client has read in all."""
    final: bool
    frames: list[memoryview]
    ack: bool = False


def pack_ack(replies_read: int) -> bytes:
    """A client's acknowledgement: it has read ``replies_read`` replies in all.

    >>> m = unpack(pack_ack(12))
    >>> m.ack, m.awake_until_ns, m.frames
    (True, 12, [])
    """
    return _PREAMBLE.pack(replies_read, ACK, 0)


def pack(frames: Sequence[Frame], awake_until_ns: int, final: bool = False) -> bytes:
    """``frames`` with the preamble, in one buffer to copy into a sample.

    >>> m = unpack(pack([b"head", b"\\x01\\x02"], 7, final=True))
    >>> m.awake_until_ns, m.final, [bytes(f) for f in m.frames]
    (7, True, [b'head', b'\\x01\\x02'])
    """
    n = len(frames)
    lens = struct.pack(f"<{n}I", *map(len, frames))
    pre = _PREAMBLE.pack(awake_until_ns, FINAL if final else 0, n)
    return b"".join((pre, lens, *frames))


def unpack(data: bytes) -> LaneMessage:
    """Read one lane message out of ``data``, which the caller owns (a copy of the
    sample), so that the frames stay valid after the sample is released.

    >>> unpack(b"\\x00" * 3)
    Traceback (most recent call last):
    ...
    client.wire.errors.ProtocolError: lane message of 3 bytes is shorter than its preamble
    """
    size = len(data)
    if size < _PREAMBLE.size:
        raise ProtocolError(f"lane message of {size} bytes is shorter than its preamble")
    awake_until_ns, flags, n = _PREAMBLE.unpack_from(data, 0)
    if n > MAX_FRAMES or _PREAMBLE.size + 4 * n > size:
        raise ProtocolError(f"lane message of {size} bytes cannot hold {n} frames")
    view = memoryview(data)
    at = _PREAMBLE.size + 4 * n
    frames = []
    for k in range(n):
        (length,) = _LEN.unpack_from(data, _PREAMBLE.size + 4 * k)
        end = at + length
        if end > size:
            raise ProtocolError(f"lane message of {size} bytes ends inside frame {k}")
        frames.append(view[at:end])
        at = end
    if at != size:
        raise ProtocolError(f"lane message has {size - at} bytes after its last frame")
    return LaneMessage(awake_until_ns, bool(flags & FINAL), frames, bool(flags & ACK))
