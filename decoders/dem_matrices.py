"""A detector error model as check matrices: what BP and OSD decoders run on.

The conversion is ldpc's own (``ldpc.ckt_noise.dem_matrices``, from stimbposd): one column
per distinct set of detectors an error flips, identical columns merged with their
probabilities combined as independent flips (``p = p1 (1 - p2) + p2 (1 - p1)``). Decomposed
errors (``D0 D1 ^ D2 D3``) count as the XOR of their parts. This module wraps it in a typed,
frozen value and drops columns that can never fire (probability 0).

Note the helper's one simplification, kept here so that ``bposd`` and ``bp-gpu`` decode
exactly what ldpc's own sinter decoder does: when two mechanisms flip the same detectors but
different observables, the merged column keeps the observables of the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse
import stim
from ldpc.ckt_noise.dem_matrices import detector_error_model_to_check_matrices


@dataclass(frozen=True, eq=False)
class DemMatrices:
    """Check matrix ``H``, observables matrix ``L`` and priors of a detector error model.

    A shot's detection events are ``H @ e % 2`` and its observable flips ``L @ e % 2`` for
    the error vector ``e``, whose bit ``j`` is set with probability ``priors[j]``.

    Attributes:
        check_matrix: ``(num_detectors, num_errors)`` 0/1 ``uint8``, CSR.
        observables_matrix: ``(num_observables, num_errors)`` 0/1 ``uint8``, CSR.
        priors: ``(num_errors,)`` float64, each in ``(0, 1)``.
    """

    check_matrix: scipy.sparse.csr_matrix
    observables_matrix: scipy.sparse.csr_matrix
    priors: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = self.check_matrix.shape[1]
        if self.observables_matrix.shape[1] != n or self.priors.shape != (n,):
            raise ValueError(
                f"inconsistent shapes: H {self.check_matrix.shape}, "
                f"L {self.observables_matrix.shape}, priors {self.priors.shape}"
            )
        if n and not (np.all(self.priors > 0) and np.all(self.priors < 1)):
            raise ValueError("priors must lie strictly between 0 and 1")

    @classmethod
    def from_detector_error_model(cls, dem: stim.DetectorErrorModel) -> DemMatrices:
        """Build the matrices of ``dem`` (see the module docstring for the merging rule).

        Raises:
            ValueError: ``dem`` holds an instruction ldpc's converter does not know.
        """
        try:
            raw = detector_error_model_to_check_matrices(dem, allow_undecomposed_hyperedges=True)
        except NotImplementedError as exc:
            raise ValueError(f"unsupported instruction in the detector error model: {exc}") from exc
        priors = np.asarray(raw.priors, dtype=np.float64)
        keep = np.flatnonzero(priors > 0)
        h = scipy.sparse.csr_matrix(raw.check_matrix, dtype=np.uint8)[:, keep]
        obs = scipy.sparse.csr_matrix(raw.observables_matrix, dtype=np.uint8)[:, keep]
        return cls(
            check_matrix=scipy.sparse.csr_matrix(h),
            observables_matrix=scipy.sparse.csr_matrix(obs),
            priors=np.ascontiguousarray(priors[keep]),
        )

    @property
    def num_detectors(self) -> int:
        """Rows of ``H``."""
        return int(self.check_matrix.shape[0])

    @property
    def num_errors(self) -> int:
        """Columns of ``H`` (distinct error mechanisms after merging)."""
        return int(self.check_matrix.shape[1])

    @property
    def num_observables(self) -> int:
        """Rows of ``L``."""
        return int(self.observables_matrix.shape[0])

    def observable_flips(self, errors: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """``L @ e % 2`` for each row ``e`` of a ``(shots, num_errors)`` 0/1 array."""
        flips = (self.observables_matrix @ errors.T.astype(np.int32)).T
        return np.asarray(flips % 2, dtype=np.uint8)

    def syndromes(self, errors: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """``H @ e % 2`` for each row ``e`` of a ``(shots, num_errors)`` 0/1 array."""
        syn = (self.check_matrix @ errors.T.astype(np.int32)).T
        return np.asarray(syn % 2, dtype=np.uint8)

    def __repr__(self) -> str:
        return (
            f"<DemMatrices detectors={self.num_detectors} errors={self.num_errors} "
            f"observables={self.num_observables} nnz(H)={self.check_matrix.nnz}>"
        )
