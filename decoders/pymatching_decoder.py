"""``pymatching``: minimum-weight perfect matching (PyMatching 2, sparse blossom).

A block goes to ``Matching.decode_batch`` bit-packed in and out, untouched, so streamed
predictions are bit-identical to decoding the same shots offline.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pymatching
import stim

from client.syndrome_block import PackedBits
from decoders.contract import CompiledDecoder, Decoder
from decoders.errors import ModelError, UndecodableBlock


class CompiledPyMatching(CompiledDecoder):
    """``pymatching`` compiled for one model: a ``pymatching.Matching`` graph."""

    def __init__(
        self, *, matching: pymatching.Matching, dem: stim.DetectorErrorModel, model_hash: str
    ) -> None:
        super().__init__(
            decoder_name=PyMatchingDecoder.name,
            num_detectors=dem.num_detectors,
            num_observables=dem.num_observables,
            model_hash=model_hash,
        )
        self.matching = matching

    def _decode_packed(self, dets: PackedBits) -> PackedBits:
        try:
            predictions = self.matching.decode_batch(
                dets, bit_packed_shots=True, bit_packed_predictions=True
            )
        except ValueError as exc:  # e.g. "No perfect matching could be found"
            raise UndecodableBlock(self.decoder_name, reason=str(exc)) from exc
        return np.asarray(predictions, dtype=np.uint8)

    def _describe(self) -> str:
        return f"nodes={self.matching.num_nodes} edges={self.matching.num_edges}"


class PyMatchingDecoder(Decoder):
    """``pymatching``: ``Matching.from_detector_error_model``; it takes no options.

    The model's errors must be graphlike (``decompose_errors=True`` when stim builds it).
    """

    name: ClassVar[str] = "pymatching"

    def __init__(self) -> None:
        pass

    def _compile(self, dem: stim.DetectorErrorModel, model_hash: str) -> CompiledPyMatching:
        try:
            matching = pymatching.Matching.from_detector_error_model(dem)
        except ValueError as exc:
            raise ModelError(self.name, reason=str(exc)) from exc
        return CompiledPyMatching(matching=matching, dem=dem, model_hash=model_hash)
