"""The decoder contract: compile once per noise model, decode many bit-packed blocks.

A :class:`Decoder` holds a decoder's options. :meth:`Decoder.compile` turns a
``stim.DetectorErrorModel`` into a :class:`CompiledDecoder`, which decodes blocks of shots:

- input: detection events, bit-packed exactly as stim writes them (the layout of
  :mod:`client.syndrome_block`, which both ends of a stream share), ``uint8`` of shape
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
from functools import partial
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import stim

from client import syndrome_block
from client.syndrome_block import PackedBits, packed_width
from client.wire import model_hash
from decoders.errors import BadPrediction, InvalidBlock, ModelError


def check_block(decoder: str, dets: object, num_detectors: int) -> PackedBits:
    """:func:`client.syndrome_block.check_block`, whose errors are :class:`InvalidBlock`
    naming ``decoder`` and the property that is wrong.

    >>> check_block("pymatching", np.zeros((4, 3), dtype=np.int64), 24)
    Traceback (most recent call last):
    ...
    decoders.errors.InvalidBlock: [bad_block] pymatching: bad detection-event block: dtype ...
    """
    return syndrome_block.check_block(dets, num_detectors, partial(InvalidBlock, decoder))


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
