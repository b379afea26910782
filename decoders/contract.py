"""The decoder contract: compile once per noise model, decode many bit-packed blocks.

A :class:`Decoder` holds a decoder's options. :meth:`Decoder.compile` turns a
``stim.DetectorErrorModel`` into a :class:`CompiledDecoder`, which decodes blocks of shots:

- input: detection events, bit-packed exactly as stim writes them, ``uint8`` of shape
  ``(shots, ceil(num_detectors / 8))``, little bit order (detector ``d`` of a shot is bit
  ``d % 8`` of byte ``d // 8``);
- output: observable predictions, ``uint8`` of shape ``(shots, ceil(num_observables / 8))``,
  packed the same way (as ``pymatching.Matching.decode_batch(..., bit_packed_shots=True,
  bit_packed_predictions=True)`` returns them).

:meth:`CompiledDecoder.decode_batch` checks dtype, ndim and width before decoding and the
predictions after; every failure is a :class:`~decoders.errors.DecoderError` that names
the decoder. A model travels as its content hash (:func:`client.wire.model_hash`), never
as text.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Final

import numpy as np
import numpy.typing as npt
import stim

from client.wire import model_hash
from decoders.errors import BadPrediction, InvalidBlock, ModelError

PACKED_DTYPE: Final = np.dtype(np.uint8)
"""The dtype of bit-packed detection events and predictions."""

BIT_ORDER: Final = "little"
"""stim's bit order inside each byte (``np.packbits(..., bitorder=BIT_ORDER)``)."""

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


def check_block(decoder: str, dets: object, num_detectors: int) -> PackedBits:
    """Return ``dets`` as a C-contiguous packed block, or raise :class:`InvalidBlock`.

    Checks, in order: it is a numpy array, its dtype is ``uint8``, it is 2-D, and each row
    is ``ceil(num_detectors / 8)`` bytes wide. A read-only array (a zero-copy frame) is fine.
    """
    width = packed_width(num_detectors)
    if not isinstance(dets, np.ndarray):
        raise InvalidBlock(decoder, what="type", expected="numpy.ndarray", got=type(dets).__name__)
    if dets.dtype != PACKED_DTYPE:
        raise InvalidBlock(decoder, what="dtype", expected="uint8", got=str(dets.dtype))
    if dets.ndim != 2:
        raise InvalidBlock(decoder, what="ndim", expected=2, got=dets.ndim)
    if dets.shape[1] != width:
        raise InvalidBlock(
            decoder, what="width", expected=(dets.shape[0], width), got=tuple(dets.shape)
        )
    return np.ascontiguousarray(dets)


def check_predictions(
    decoder: str, predictions: object, shots: int, num_observables: int
) -> PackedBits:
    """Return ``predictions`` if they are ``uint8 (shots, ceil(k / 8))``, else raise."""
    expected = ("uint8", (shots, packed_width(num_observables)))
    if not isinstance(predictions, np.ndarray):
        raise BadPrediction(decoder, expected=expected, got=(type(predictions).__name__, ()))
    got = (str(predictions.dtype), tuple(int(n) for n in predictions.shape))
    if got != expected:
        raise BadPrediction(decoder, expected=expected, got=got)
    return predictions


class CompiledDecoder(abc.ABC):
    """A decoder configured for one detector error model; decodes bit-packed blocks.

    Subclasses implement :meth:`_decode_packed`; :meth:`decode_batch` does the checks.

    Attributes:
        decoder_name: the registered name of the decoder that compiled it.
        num_detectors: detection-event bits per shot.
        num_observables: observable bits per shot.
        model_hash: :func:`model_hash` of the model text this was compiled from.
    """

    def __init__(
        self, *, decoder_name: str, num_detectors: int, num_observables: int, model_hash: str
    ) -> None:
        self.decoder_name = decoder_name
        self.num_detectors = num_detectors
        self.num_observables = num_observables
        self.model_hash = model_hash

    @property
    def detector_bytes(self) -> int:
        """Bytes per shot of the input: ``ceil(num_detectors / 8)``."""
        return packed_width(self.num_detectors)

    @property
    def observable_bytes(self) -> int:
        """Bytes per shot of the output: ``ceil(num_observables / 8)``."""
        return packed_width(self.num_observables)

    def decode_batch(self, dets: npt.NDArray[np.uint8]) -> PackedBits:
        """Predict the observable flips of a block of shots.

        Args:
            dets: ``uint8``, shape ``(shots, ceil(num_detectors / 8))``, bit-packed detection
                events in stim's little bit order. Zero shots is fine.

        Returns:
            ``uint8``, shape ``(shots, ceil(num_observables / 8))``: bit-packed predictions,
            bit ``k % 8`` of byte ``k // 8`` is observable ``k``.

        Raises:
            InvalidBlock: ``dets`` has the wrong type, dtype, ndim or width.
            BadPrediction: the decoder returned the wrong dtype or shape.
        """
        block = check_block(self.decoder_name, dets, self.num_detectors)
        shots = block.shape[0]
        if shots == 0:
            return np.zeros((0, self.observable_bytes), dtype=np.uint8)
        predictions = self._decode_packed(block)
        return check_predictions(self.decoder_name, predictions, shots, self.num_observables)

    @abc.abstractmethod
    def _decode_packed(self, dets: PackedBits) -> PackedBits:
        """Decode a checked, C-contiguous, non-empty block; return packed predictions."""

    def _describe(self) -> str:
        """What is inside, for ``__repr__`` (subclasses add their own parts)."""
        return ""

    def __repr__(self) -> str:
        extra = self._describe()
        return (
            f"<{type(self).__name__} {self.decoder_name} model={self.model_hash[:12]} "
            f"detectors={self.num_detectors} observables={self.num_observables}"
            f"{' ' + extra if extra else ''}>"
        )


class Decoder(abc.ABC):
    """A decoder's options; compiles detector error models into :class:`CompiledDecoder`.

    Options are keyword-only constructor arguments, checked at construction.
    """

    name: ClassVar[str]
    """The registered name (``"pymatching"``, ``"bposd"``, ``"bp-gpu"``)."""

    def compile(self, dem: stim.DetectorErrorModel) -> CompiledDecoder:
        """Compile ``dem``; the result's ``model_hash`` is ``model_hash(str(dem))``.

        Raises:
            ModelError: this decoder cannot decode ``dem``.
        """
        return self._compile(dem, model_hash(str(dem)))

    def compile_dem(self, dem: stim.DetectorErrorModel, *, model_hash: str) -> CompiledDecoder:
        """Compile ``dem`` parsed from text whose hash the caller already knows.

        Raises:
            ModelError: this decoder cannot decode ``dem``.
        """
        return self._compile(dem, model_hash)

    def compile_text(self, dem_text: str) -> CompiledDecoder:
        """Parse and compile a model's text; the result's ``model_hash`` is that text's.

        Raises:
            ModelError: the text is not a detector error model.
        """
        try:
            dem = stim.DetectorErrorModel(dem_text)
        except (ValueError, IndexError) as exc:  # stim raises IndexError for some syntax errors
            raise ModelError(self.name, reason=str(exc)) from exc
        return self._compile(dem, model_hash(dem_text))

    @abc.abstractmethod
    def _compile(self, dem: stim.DetectorErrorModel, model_hash: str) -> CompiledDecoder:
        """Build the compiled decoder for ``dem``, stamped with ``model_hash``."""

    def options(self) -> dict[str, object]:
        """The options this decoder was built with (for reprs and reports)."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"
