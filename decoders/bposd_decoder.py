"""``bposd``: ldpc's BP+OSD decoder (``ldpc.BpOsdDecoder``, ldpc v2) over the DEM's matrices.

ldpc decodes one syndrome at a time, so a block is a loop over its shots in Python; shots
with no detection event are skipped (ldpc returns the zero correction for them anyway).
The same settings and loop serve as ``bp-gpu``'s CPU fallback for the shots whose BP did
not converge, see :mod:`decoders.bp_gpu`.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
import stim
from ldpc.bposd_decoder import BpOsdDecoder as LdpcBpOsd

from client.syndrome_block import PackedBits, pack_bits, unpack_bits
from decoders.contract import CompiledDecoder, Decoder
from decoders.dem_matrices import DemMatrices
from decoders.errors import BadOption, ModelError

BpMethod = Literal["minimum_sum", "product_sum"]
OsdMethod = Literal["osd0", "osd_e", "osd_cs"]

BP_METHODS: Final[tuple[str, ...]] = ("minimum_sum", "product_sum")
OSD_METHODS: Final[tuple[str, ...]] = ("osd0", "osd_e", "osd_cs")


def gf2_rank(matrix: Any) -> int:
    """The rank over GF(2) of a 0/1 scipy sparse matrix (``ldpc.mod2.rank``)."""
    # Imported by name: ldpc 2.4.1's ldpc/mod2/__init__.pyi does not parse, and mypy would
    # stop on it.
    mod2 = importlib.import_module("ldpc.mod2")
    return int(mod2.rank(matrix))


@dataclass(frozen=True)
class BpOsdSettings:
    """BP and OSD settings, as ldpc's ``BpOsdDecoder`` takes them.

    Attributes:
        max_bp_iters: BP iterations before giving up and running OSD (>= 1).
        bp_method: ``"minimum_sum"`` or ``"product_sum"``.
        ms_scaling_factor: min-sum's check-message scale, in ``(0, 1]``.
        osd_method: ``"osd0"``, ``"osd_e"`` (exhaustive) or ``"osd_cs"`` (combination sweep).
        osd_order: OSD search depth; 0 for ``osd0``.
    """

    max_bp_iters: int = 30
    bp_method: BpMethod = "minimum_sum"
    ms_scaling_factor: float = 0.625
    osd_method: OsdMethod = "osd_cs"
    osd_order: int = 7

    def check(self, decoder: str) -> None:
        """Raise :class:`BadOption`, naming ``decoder``, for the first bad setting."""
        if isinstance(self.max_bp_iters, bool) or not isinstance(self.max_bp_iters, int):
            raise BadOption(
                decoder, option="max_bp_iters", value=self.max_bp_iters, reason="not an int"
            )
        if self.max_bp_iters < 1:
            raise BadOption(
                decoder, option="max_bp_iters", value=self.max_bp_iters, reason="must be >= 1"
            )
        if self.bp_method not in BP_METHODS:
            raise BadOption(
                decoder, option="bp_method", value=self.bp_method, reason=f"one of {BP_METHODS}"
            )
        if not 0.0 < float(self.ms_scaling_factor) <= 1.0:
            raise BadOption(
                decoder,
                option="ms_scaling_factor",
                value=self.ms_scaling_factor,
                reason="must lie in (0, 1]",
            )
        if self.osd_method not in OSD_METHODS:
            raise BadOption(
                decoder, option="osd_method", value=self.osd_method, reason=f"one of {OSD_METHODS}"
            )
        if isinstance(self.osd_order, bool) or not isinstance(self.osd_order, int):
            raise BadOption(decoder, option="osd_order", value=self.osd_order, reason="not an int")
        if self.osd_order < 0 or (self.osd_method == "osd0" and self.osd_order != 0):
            raise BadOption(
                decoder,
                option="osd_order",
                value=self.osd_order,
                reason="must be >= 0, and 0 with osd_method='osd0'",
            )

    def osd_order_for(self, matrices: DemMatrices) -> int:
        """The OSD order used for ``matrices``: ``osd_order``, capped at ``n - rank(H)``.

        OSD can only search over the ``n - rank(H)`` columns outside an information set, and
        ldpc 2.4.1 crashes (segfault, at construction) on some matrices when the order
        exceeds that, so the cap keeps a small or unusual model from killing the worker.
        """
        if self.osd_method == "osd0":
            return 0
        free = matrices.num_errors - gf2_rank(matrices.check_matrix)
        return max(0, min(self.osd_order, free))

    def make_ldpc(self, matrices: DemMatrices) -> Any | None:
        """An ``ldpc.BpOsdDecoder`` for ``matrices`` with these settings (parallel schedule).

        None when ``H`` has no rows or no columns: ldpc cannot be built then, and every
        prediction is 0.
        """
        if matrices.num_errors == 0 or matrices.num_detectors == 0:
            return None
        return LdpcBpOsd(
            matrices.check_matrix,
            error_channel=[float(p) for p in matrices.priors],
            max_iter=self.max_bp_iters,
            bp_method=self.bp_method,
            ms_scaling_factor=float(self.ms_scaling_factor),
            schedule="parallel",
            osd_method=self.osd_method,
            osd_order=self.osd_order_for(matrices),
        )


def decode_syndromes(
    ldpc_decoder: Any | None, matrices: DemMatrices, syndromes: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """Decode ``(shots, num_detectors)`` 0/1 syndromes one by one with an ldpc decoder.

    Returns the ``(shots, num_observables)`` 0/1 observable flips of the corrections (all 0
    when there is no decoder, see :meth:`BpOsdSettings.make_ldpc`).
    """
    corrections = np.zeros((syndromes.shape[0], matrices.num_errors), dtype=np.uint8)
    if ldpc_decoder is None:
        return matrices.observable_flips(corrections)
    for i in range(syndromes.shape[0]):
        corrections[i] = ldpc_decoder.decode(syndromes[i])
    return matrices.observable_flips(corrections)


class CompiledBpOsd(CompiledDecoder):
    """``bposd`` compiled for one model: an ``ldpc.BpOsdDecoder`` and the DEM's matrices."""

    def __init__(
        self,
        *,
        matrices: DemMatrices,
        settings: BpOsdSettings,
        ldpc_decoder: Any | None,
        model_hash: str,
    ) -> None:
        super().__init__(
            decoder_name=BpOsdDecoder.name,
            num_detectors=matrices.num_detectors,
            num_observables=matrices.num_observables,
            model_hash=model_hash,
        )
        self.matrices = matrices
        self.settings = settings
        self._ldpc = ldpc_decoder

    def _decode_packed(self, dets: PackedBits) -> PackedBits:
        predictions = np.zeros((dets.shape[0], self.num_observables), dtype=np.uint8)
        nontrivial = np.flatnonzero(dets.any(axis=1))
        if nontrivial.size:
            syndromes = unpack_bits(dets[nontrivial], self.num_detectors)
            predictions[nontrivial] = decode_syndromes(self._ldpc, self.matrices, syndromes)
        return pack_bits(predictions)

    def _describe(self) -> str:
        s = self.settings
        return (
            f"errors={self.matrices.num_errors} bp={s.bp_method}x{s.max_bp_iters} "
            f"ms_scaling={s.ms_scaling_factor} osd={s.osd_method}/{s.osd_order_for(self.matrices)}"
        )


class BpOsdDecoder(Decoder):
    """``bposd``: BP+OSD from ldpc v2, one shot at a time on the CPU.

    Args:
        max_bp_iters: BP iterations before OSD.
        bp_method: ``"minimum_sum"`` or ``"product_sum"``.
        ms_scaling_factor: min-sum scale, in ``(0, 1]``.
        osd_method: ``"osd0"``, ``"osd_e"`` or ``"osd_cs"``.
        osd_order: OSD depth (0 for ``osd0``).

    Raises:
        BadOption: a setting is out of range.
    """

    name: ClassVar[str] = "bposd"

    def __init__(
        self,
        *,
        max_bp_iters: int = BpOsdSettings.max_bp_iters,
        bp_method: BpMethod = BpOsdSettings.bp_method,
        ms_scaling_factor: float = BpOsdSettings.ms_scaling_factor,
        osd_method: OsdMethod = BpOsdSettings.osd_method,
        osd_order: int = BpOsdSettings.osd_order,
    ) -> None:
        self.settings = BpOsdSettings(
            max_bp_iters=max_bp_iters,
            bp_method=bp_method,
            ms_scaling_factor=ms_scaling_factor,
            osd_method=osd_method,
            osd_order=osd_order,
        )
        self.settings.check(self.name)

    def _compile(self, dem: stim.DetectorErrorModel, model_hash: str) -> CompiledBpOsd:
        try:
            matrices = DemMatrices.from_detector_error_model(dem)
        except ValueError as exc:
            raise ModelError(self.name, reason=str(exc)) from exc
        return CompiledBpOsd(
            matrices=matrices,
            settings=self.settings,
            ldpc_decoder=self.settings.make_ldpc(matrices),
            model_hash=model_hash,
        )

    def options(self) -> dict[str, object]:
        """The settings, as keyword arguments."""
        return asdict(self.settings)
