"""The syndrome block: the one schema of a stream's requests and replies (PROTOCOL.md §3.8).

A block is one request to a decoder service. Its header body is
``{"stream": str, "seq": int, "model": hash, "emitted_ns": int}`` and its one array holds
the detection events; the reply's body echoes ``stream`` and ``seq`` and adds
``decoder``, ``batch_shots``, ``batch_blocks`` and ``decode_us``, and its one array holds
the predicted observable flips. Both arrays are bit-packed the way stim packs them:
``uint8`` of shape ``(shots, ceil(num_bits / 8))``, bit ``k % 8`` of byte ``k // 8`` is
bit ``k`` of the shot. The model travels as its content hash
(:func:`client.wire.model_hash`), stored once in the broker (``nl.model.put``).

The producer (:mod:`client.stream`) builds requests and reads replies with this module,
and the decoders (:mod:`decoders.service`, :mod:`decoders.contract`) read requests, check
blocks and build replies with it, so both ends keep one copy of each key.

>>> body = request_body("s1", 7, "ab" * 32, emitted_ns=5)
>>> sorted(body)
['emitted_ns', 'model', 'seq', 'stream']
>>> check_block(np.zeros((2, 3), dtype=np.uint8), num_detectors=24).shape
(2, 3)
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from client.errors import BadBlock, ProtocolError
from client.messages import Message

# --- the header body ---------------------------------------------------------------------

STREAM: Final = "stream"
"""The stream's id (str); echoed in the reply."""
SEQ: Final = "seq"
"""The block's sequence number in its stream (int); echoed in the reply."""
MODEL: Final = "model"
"""The content hash of the noise model the block was sampled under (str)."""
EMITTED_NS: Final = "emitted_ns"
"""When the producer emitted the block, its own ``perf_counter_ns`` (int); only the
producer reads it back."""
DECODER: Final = "decoder"
"""Reply: the registered name of the decoder that decoded the block."""
BATCH_SHOTS: Final = "batch_shots"
"""Reply: shots in the decode call that took the block."""
BATCH_BLOCKS: Final = "batch_blocks"
"""Reply: blocks in the decode call that took the block."""
DECODE_US: Final = "decode_us"
"""Reply: how long that decode call took, in microseconds."""

# --- the arrays --------------------------------------------------------------------------

PACKED_DTYPE: Final = np.dtype(np.uint8)
"""The dtype of bit-packed detection events and predictions."""

BIT_ORDER: Final = "little"
"""stim's bit order inside each byte (``np.packbits(..., bitorder=BIT_ORDER)``)."""

LAYOUT: Final = "bit-packed uint8, shape (shots, ceil(num_detectors / 8)), little bit order"
"""The layout of a block's detection events, in words, for error messages."""

PackedBits = npt.NDArray[np.uint8]
"""A bit-packed ``(shots, bytes)`` block, see :func:`pack_bits`."""


def packed_width(num_bits: int) -> int:
    """Bytes per shot for ``num_bits`` bits: ``ceil(num_bits / 8)``.

    >>> packed_width(0), packed_width(1), packed_width(8), packed_width(9)
    (0, 1, 1, 2)
    """
    if num_bits < 0:
        raise ValueError(f"num_bits must be >= 0, got {num_bits}")
    return (num_bits + 7) // 8


def pack_bits(bits: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]) -> PackedBits:
    """Pack a ``(shots, num_bits)`` array of 0/1 into stim's ``(shots, bytes)`` layout.

    >>> pack_bits(np.array([[1, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.uint8))
    array([[1, 1]], dtype=uint8)
    """
    if bits.ndim != 2:
        raise ValueError(f"bits must be 2-D (shots, num_bits), got ndim={bits.ndim}")
    return np.packbits(bits.astype(np.bool_, copy=False), axis=1, bitorder=BIT_ORDER)


def unpack_bits(packed: PackedBits, num_bits: int) -> npt.NDArray[np.uint8]:
    """Unpack stim's ``(shots, bytes)`` layout into ``(shots, num_bits)`` of 0/1 ``uint8``.

    Padding bits past ``num_bits`` in the last byte are ignored.

    >>> unpack_bits(np.array([[1, 1]], dtype=np.uint8), 9)
    array([[1, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=uint8)
    """
    if packed.ndim != 2:
        raise ValueError(f"packed must be 2-D (shots, bytes), got ndim={packed.ndim}")
    return np.unpackbits(packed, axis=1, count=num_bits, bitorder=BIT_ORDER)


# --- the block check ---------------------------------------------------------------------


class BlockErrorFactory(Protocol):
    """Builds the error for a bad block: which property is wrong (``"type"``,
    ``"dtype"``, ``"ndim"`` or ``"width"``), what was expected and what came."""

    def __call__(self, *, what: str, expected: object, got: object) -> BadBlock: ...


def bad_block_message(what: str, expected: object, got: object) -> str:
    """The words of a bad-block error.

    >>> bad_block_message("ndim", 2, 1)
    'bad detection-event block: ndim is 1, expected 2 (bit-packed uint8, ...)'
    """
    return f"bad detection-event block: {what} is {got!r}, expected {expected!r} ({LAYOUT})"


def _bad_block(*, what: str, expected: object, got: object) -> BadBlock:
    return BadBlock(bad_block_message(what, expected, got))


def check_block(
    dets: object, num_detectors: int | None, invalid: BlockErrorFactory = _bad_block
) -> PackedBits:
    """Return ``dets`` as a C-contiguous packed block, or raise ``invalid(...)``, a
    :class:`~client.errors.BadBlock` (by default, a plain one).

    Checks, in order: it is a numpy array, its dtype is ``uint8``, it is 2-D, and (when
    ``num_detectors`` is known) each row is ``ceil(num_detectors / 8)`` bytes wide. A
    read-only array (a zero-copy frame) is fine.

    >>> check_block(np.zeros((4, 3), dtype=np.uint8), num_detectors=25)
    Traceback (most recent call last):
    ...
    client.errors.BadBlock: [bad_block] bad detection-event block: width is (4, 3), ...
    """
    if not isinstance(dets, np.ndarray):
        raise invalid(what="type", expected="numpy.ndarray", got=type(dets).__name__)
    if dets.dtype != PACKED_DTYPE:
        raise invalid(what="dtype", expected="uint8", got=str(dets.dtype))
    if dets.ndim != 2:
        raise invalid(what="ndim", expected=2, got=dets.ndim)
    if num_detectors is not None:
        width = packed_width(num_detectors)
        if dets.shape[1] != width:
            raise invalid(what="width", expected=(dets.shape[0], width), got=tuple(dets.shape))
    return np.ascontiguousarray(dets)


# --- requests and replies ----------------------------------------------------------------


def request_body(stream: str, seq: int, model: str, *, emitted_ns: int) -> dict[str, Any]:
    """The header body of block ``seq`` of ``stream``, sampled under model hash ``model``."""
    return {STREAM: stream, SEQ: seq, MODEL: model, EMITTED_NS: emitted_ns}


class BlockRequest(NamedTuple):
    """A block as a decoder reads it: its stream, sequence number, model hash and
    detection events (not yet checked against the model: see :func:`check_block`)."""

    stream: str
    seq: int
    model: str
    detections: npt.NDArray[Any]


def read_request(message: Message) -> BlockRequest:
    """The block a request carries; raises :class:`~client.errors.BadBlock` if its body or
    its arrays are not a block's."""
    body = message.body
    if not (
        isinstance(body, dict)
        and isinstance(body.get(STREAM), str)
        and type(body.get(SEQ)) is int
        and isinstance(body.get(MODEL), str)
    ):
        raise BadBlock(f"a block's body needs {STREAM} (str), {SEQ} (int) and {MODEL} (str)")
    if len(message.arrays) != 1:
        raise BadBlock(f"a block carries 1 array, not {len(message.arrays)}")
    return BlockRequest(body[STREAM], body[SEQ], body[MODEL], message.arrays[0])


def reply_body(
    block: BlockRequest, *, decoder: str, batch_shots: int, batch_blocks: int, decode_us: int
) -> dict[str, Any]:
    """The header body of the result of ``block``."""
    return {
        STREAM: block.stream,
        SEQ: block.seq,
        DECODER: decoder,
        BATCH_SHOTS: batch_shots,
        BATCH_BLOCKS: batch_blocks,
        DECODE_US: decode_us,
    }


def reply_info(reply: Message) -> dict[str, Any]:
    """What a result's body says (decoder, batch sizes, decode time), or ``{}``."""
    return reply.body if isinstance(reply.body, dict) else {}


def read_reply(
    reply: Message, *, stream: str, seq: int, shots: int
) -> tuple[PackedBits, dict[str, Any]]:
    """The predictions and the body of the result of block ``seq`` of ``stream``, which
    had ``shots`` shots; raises :class:`~client.errors.ProtocolError` if the reply is not
    that block's result."""
    info = reply_info(reply)
    if info.get(STREAM) != stream or info.get(SEQ) != seq:
        named = f"{info.get(STREAM)}/{info.get(SEQ)}"
        raise ProtocolError(f"reply names stream/seq {named}, not {stream}/{seq}")
    if len(reply.arrays) != 1 or reply.arrays[0].dtype != PACKED_DTYPE:
        raise ProtocolError("a block's reply must carry one uint8 array")
    predictions: PackedBits = reply.arrays[0]
    if predictions.ndim != 2 or predictions.shape[0] != shots:
        raise ProtocolError(f"predictions {predictions.shape} do not match the block's shots")
    return predictions, info
