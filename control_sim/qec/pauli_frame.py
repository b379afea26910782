"""Logical-error bookkeeping: decoder predictions against the true observable flips.

Per shot, the decoder's predicted observable flips are applied to the logical Pauli
frame by XOR; a shot is a logical error when the corrected frame is not the identity,
that is when any predicted flip differs from the true one.

>>> import numpy as np
>>> frame = LogicalFrame(1)
>>> predicted = np.array([[0], [1], [1], [0]], dtype=np.uint8)
>>> true_obs = np.array([[0], [1], [0], [1]], dtype=np.uint8)
>>> frame.apply(predicted, true_obs)
2
>>> frame.logical_errors, frame.shots, frame.ler
(2, 4, 0.5)
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from control_sim.qec.integers import check_int

__all__ = ["LogicalFrame"]


class LogicalFrame:
    """Counts logical errors over bit-packed batches for ``num_observables`` observables.

    Both arrays given to :meth:`apply` are ``uint8`` of shape
    ``(shots, ceil(num_observables / 8))`` in stim's little-endian bit packing (observable
    ``k`` is bit ``k % 8`` of byte ``k // 8``). Padding bits beyond ``num_observables`` are
    ignored.
    """

    def __init__(self, num_observables: int) -> None:
        num_observables = check_int("num_observables", num_observables, 1)
        self._num_observables = num_observables
        self._observable_bytes = -(-num_observables // 8)
        # Only the first num_observables bits of a packed row carry observables.
        mask_bits = np.zeros(self._observable_bytes * 8, dtype=np.uint8)
        mask_bits[:num_observables] = 1
        self._mask = np.packbits(mask_bits, bitorder="little")
        self._observable_errors = np.zeros(num_observables, dtype=np.int64)
        self._logical_errors = 0
        self._shots = 0

    @property
    def num_observables(self) -> int:
        """Observables per shot."""
        return self._num_observables

    @property
    def observable_bytes(self) -> int:
        """Bytes per shot in the packed arrays: ``ceil(num_observables / 8)``."""
        return self._observable_bytes

    @property
    def logical_errors(self) -> int:
        """Shots so far in which any observable was mispredicted."""
        return self._logical_errors

    @property
    def shots(self) -> int:
        """Shots counted so far."""
        return self._shots

    @property
    def ler(self) -> float:
        """Logical error rate per shot, ``logical_errors / shots``; NaN before any shot."""
        return self._logical_errors / self._shots if self._shots else math.nan

    @property
    def observable_errors(self) -> npt.NDArray[np.int64]:
        """Mispredictions per observable so far, shape ``(num_observables,)`` (a copy)."""
        return self._observable_errors.copy()

    def apply(
        self, predictions_packed: npt.NDArray[np.uint8], true_obs_packed: npt.NDArray[np.uint8]
    ) -> int:
        """Apply a batch of predicted flips against the true flips; return its logical errors.

        Raises ``ValueError`` unless both arrays are ``uint8`` with the shape
        ``(shots, observable_bytes)``.
        """
        for name, arr in (
            ("predictions_packed", predictions_packed),
            ("true_obs", true_obs_packed),
        ):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 2:
                raise ValueError(f"{name} must be a 2-D uint8 array, got {_describe(arr)}")
            if arr.shape[1] != self._observable_bytes:
                raise ValueError(
                    f"{name} must have {self._observable_bytes} bytes per shot for "
                    f"{self._num_observables} observables, got shape {arr.shape}"
                )
        if predictions_packed.shape[0] != true_obs_packed.shape[0]:
            raise ValueError(
                f"shot counts differ: {predictions_packed.shape[0]} predictions, "
                f"{true_obs_packed.shape[0]} true observable rows"
            )
        residual = (predictions_packed ^ true_obs_packed) & self._mask
        failed = int(np.count_nonzero(residual.any(axis=1)))
        if failed:
            bits = np.unpackbits(residual, axis=1, count=self._num_observables, bitorder="little")
            self._observable_errors += bits.sum(axis=0, dtype=np.int64)
        self._logical_errors += failed
        self._shots += int(predictions_packed.shape[0])
        return failed

    def __repr__(self) -> str:
        return (
            f"LogicalFrame(num_observables={self._num_observables}, shots={self._shots}, "
            f"logical_errors={self._logical_errors})"
        )


def _describe(arr: object) -> str:
    if isinstance(arr, np.ndarray):
        return f"{arr.dtype} array of shape {arr.shape}"
    return type(arr).__name__
