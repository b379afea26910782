"""``bp-gpu``: batched min-sum belief propagation, with ldpc's OSD for the shots BP fails.

The decoder is written once against the array API (``array_api_compat.array_namespace``)
and runs on CuPy when a GPU is there (``device="cuda"``, or ``"auto"``), else on numpy.
Everything is vectorised over shots and over the Tanner graph's edges; no Python loop runs
per shot or per edge, only per BP iteration.

**Layout.** Checks (detectors) are grouped by degree into a few groups (:func:`group_degrees`
picks the split that wastes the fewest slots). In a group every check owns a row of
``degree`` *slots*, one per edge, padded; messages live in ``(checks, degree, shots)``
arrays, shots last, so that gathers move whole contiguous rows of shots and reductions over
a check's slots run across contiguous shots (coalesced on a GPU, SIMD on a CPU). A bit
(error mechanism) finds its edges through a ``(bits + 1, max_bit_degree)`` table of flat
slot indices, with a validity mask; the extra bit ``n`` is what padding slots point at, and
its prior is positive and it has no edges, so it never flips. Check-side updates are
reductions along the slot axis and bit-side updates a gather (``xp.take``) and a sum: no
scatter-add is needed (see :mod:`decoders.array_backend`).

**The algorithm is ldpc's parallel min-sum** (``BpDecoder`` with ``bp_method="minimum_sum"``,
``schedule="parallel"``), so that ``bp-gpu`` and ``bposd`` agree:

1. bit-to-check messages start at the prior log-likelihood ratios ``ln((1 - p) / p)``;
2. check ``c`` sends bit ``b`` the message ``alpha * s * min |m(b' -> c)|`` over its other
   bits ``b'``, where ``s = (-1)^(syndrome_c + #{b' != b : m(b' -> c) <= 0})``;
3. the posterior is the prior plus all incoming check messages; bit ``b`` is flipped when
   its posterior is ``<= 0``;
4. a shot *converges* once its hard decision reproduces its syndrome; its decision is then
   kept and the shot leaves the batch (the arrays are compacted);
5. otherwise each bit sends every check its posterior minus that check's message, and the
   next iteration starts, up to ``max_bp_iters``.

One deliberate difference: a check of degree 1 has no "other" bits, and ldpc then sends
``alpha * DBL_MAX``, whose sums overflow or absorb the prior; bp-gpu caps that message at a
finite bound instead (stim models rarely have such detectors).

**Fallback.** Shots still unconverged after ``max_bp_iters`` go to the CPU, to ldpc's
``BpOsdDecoder`` with the same priors and settings. ldpc v2's Python API runs OSD only
behind its own BP, so the CPU repeats BP for those shots before OSD; in exchange they are
decoded exactly as ``bposd`` would decode them. On circuit-level noise this fallback, not
BP, dominates the time (see ``python -m bench decoders``). Shots with no detection event
never leave the host: their prediction is 0.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse
import stim

from client.syndrome_block import PackedBits, unpack_bits
from client.syndrome_block import pack_bits as np_pack_bits
from decoders.array_backend import Array, Backend, DeviceName, resolve_backend, xp_unpack_bits
from decoders.bposd_decoder import BpOsdSettings, OsdMethod, decode_syndromes
from decoders.contract import CompiledDecoder, Decoder
from decoders.dem_matrices import DemMatrices
from decoders.errors import BadOption, ModelError

FloatName = Literal["float64", "float32"]
FLOAT_DTYPES: Final[tuple[str, ...]] = ("float64", "float32")

DEFAULT_CHUNK_SHOTS: Final[dict[str, int]] = {"numpy": 256, "cupy": 16384}
"""Shots per device pass when ``chunk_shots`` is not given. numpy wants its working set
(a few arrays of ``chunk * slots`` floats) near the CPU's caches; a GPU wants enough shots
to fill its multiprocessors, and 16384 shots of a d=5 model are ~0.8 GB of float64 per
message array."""


def group_degrees(degrees: npt.NDArray[np.int64], max_groups: int) -> list[int]:
    """Split check degrees into at most ``max_groups`` ranges that waste the fewest slots.

    Checks are grouped by degree and each group is padded to its largest degree; this picks
    the group boundaries (by dynamic programming over the distinct degrees) that minimise the
    total number of slots. Returns each group's largest degree, ascending.

    >>> group_degrees(np.array([3, 3, 4, 40, 41, 80]), 3)
    [4, 41, 80]
    """
    values, counts = np.unique(degrees, return_counts=True)
    k = values.size
    if k == 0:
        return []
    before = np.concatenate(([0], np.cumsum(counts)))
    # best[g][j]: fewest slots covering the first j distinct degrees with g groups.
    inf = np.iinfo(np.int64).max
    best = np.full((max_groups + 1, k + 1), inf, dtype=np.int64)
    cut = np.zeros((max_groups + 1, k + 1), dtype=np.int64)
    best[0, 0] = 0
    for g in range(1, max_groups + 1):
        for j in range(1, k + 1):
            for i in range(j):
                if best[g - 1, i] == inf:
                    continue
                cost = best[g - 1, i] + int(before[j] - before[i]) * int(values[j - 1])
                if cost < best[g, j]:
                    best[g, j], cut[g, j] = cost, i
    g = int(np.argmin(best[:, k]))
    tops: list[int] = []
    j = k
    while j > 0:
        tops.append(int(values[j - 1]))
        j = int(cut[g, j])
        g -= 1
    return tops[::-1]


@dataclass(frozen=True, eq=False)
class CheckGroup:
    """Checks of similar degree, laid out as a ``(len(checks), degree)`` block of slots.

    Attributes:
        checks: ``(m_g,)`` int64, the rows of ``H`` in this group, ascending.
        slot_bit: ``(m_g, dc_g)`` int64, the bit of each slot; padding slots hold ``n``.
        slot_valid: ``(m_g, dc_g)`` bool, whether a slot is a real edge.
        offset: the flat index of this group's first slot among all groups' slots.
    """

    checks: npt.NDArray[np.int64]
    slot_bit: npt.NDArray[np.int64]
    slot_valid: npt.NDArray[np.bool_]
    offset: int

    @property
    def degree(self) -> int:
        """Slots per check (the group's largest degree)."""
        return int(self.slot_bit.shape[1])

    @property
    def num_slots(self) -> int:
        """Slots in the group, padding included."""
        return int(self.slot_bit.size)


@dataclass(frozen=True, eq=False)
class TannerLayout:
    """The padded slot layout of a check matrix (host numpy arrays; see module docstring).

    Attributes:
        num_checks: rows of ``H`` (``m``).
        num_bits: columns of ``H`` (``n``); bit ``n`` is an extra, edgeless padding bit.
        groups: the checks, grouped by degree, each a padded block of slots.
        bit_slot: ``(n + 1, dv)`` int64, flat slot index of each edge of each bit.
        bit_valid: ``(n + 1, dv)`` bool, whether an entry of ``bit_slot`` is a real edge.
    """

    num_checks: int
    num_bits: int
    groups: tuple[CheckGroup, ...]
    bit_slot: npt.NDArray[np.int64]
    bit_valid: npt.NDArray[np.bool_]

    @classmethod
    def from_check_matrix(
        cls, check_matrix: scipy.sparse.csr_matrix, *, max_groups: int = 4
    ) -> TannerLayout:
        """Lay out the edges of a 0/1 CSR check matrix in at most ``max_groups`` groups."""
        h = scipy.sparse.csr_matrix(check_matrix)
        h.sort_indices()
        m, n = (int(x) for x in h.shape)
        row_deg = np.diff(h.indptr).astype(np.int64)
        rows = np.repeat(np.arange(m, dtype=np.int64), row_deg)
        cols = h.indices.astype(np.int64)
        pos_in_row = np.arange(rows.size, dtype=np.int64) - h.indptr[rows]

        groups: list[CheckGroup] = []
        slot_of_row_start = np.zeros(m, dtype=np.int64)
        offset, low = 0, -1
        for top in group_degrees(row_deg, max_groups):
            checks = np.flatnonzero((row_deg > low) & (row_deg <= top)).astype(np.int64)
            low = top
            dc = max(top, 1)
            slot_of_row_start[checks] = offset + np.arange(checks.size, dtype=np.int64) * dc
            local = np.full(m, -1, dtype=np.int64)
            local[checks] = np.arange(checks.size)
            in_group = local[rows] >= 0
            slot_bit = np.full((checks.size, dc), n, dtype=np.int64)
            slot_bit[local[rows[in_group]], pos_in_row[in_group]] = cols[in_group]
            slot_valid = np.zeros((checks.size, dc), dtype=np.bool_)
            slot_valid[local[rows[in_group]], pos_in_row[in_group]] = True
            groups.append(CheckGroup(checks, slot_bit, slot_valid, offset))
            offset += checks.size * dc
        slot = slot_of_row_start[rows] + pos_in_row

        col_deg = np.bincount(cols, minlength=n)
        dv = max(int(col_deg.max(initial=0)), 1)
        order = np.argsort(cols, kind="stable")
        col_ptr = np.concatenate(([0], np.cumsum(col_deg)))
        sorted_cols = cols[order]
        pos_in_col = np.arange(cols.size, dtype=np.int64) - col_ptr[sorted_cols]
        bit_slot = np.zeros((n + 1, dv), dtype=np.int64)
        bit_slot[sorted_cols, pos_in_col] = slot[order]
        bit_valid = np.zeros((n + 1, dv), dtype=np.bool_)
        bit_valid[sorted_cols, pos_in_col] = True
        return cls(
            num_checks=m, num_bits=n, groups=tuple(groups), bit_slot=bit_slot, bit_valid=bit_valid
        )

    @property
    def max_bit_degree(self) -> int:
        """Entries per row of :attr:`bit_slot` (``dv``)."""
        return int(self.bit_slot.shape[1])

    @property
    def num_edges(self) -> int:
        """Nonzeros of ``H``."""
        return int(self.bit_valid.sum())

    @property
    def num_slots(self) -> int:
        """Slots in all groups, padding included."""
        return sum(g.num_slots for g in self.groups)

    @property
    def padding_ratio(self) -> float:
        """Slots per real edge (1.0 means no padding)."""
        return self.num_slots / max(self.num_edges, 1)


@dataclass(frozen=True)
class BpGpuStats:
    """What ``bp-gpu`` did since it was compiled (or since :meth:`CompiledBpGpu.reset_stats`).

    ``shots == trivial_shots + bp_converged + osd_fallbacks`` always holds.

    Attributes:
        shots: shots decoded.
        trivial_shots: shots with no detection event (predicted 0 without BP).
        bp_converged: shots whose BP hard decision reproduced the syndrome.
        osd_fallbacks: shots sent to ldpc's BP+OSD on the CPU.
        bp_iterations: BP iterations summed over the nontrivial shots.
        fallback_ns: wall time spent in the CPU fallback (``time.perf_counter_ns``).
    """

    shots: int = 0
    trivial_shots: int = 0
    bp_converged: int = 0
    osd_fallbacks: int = 0
    bp_iterations: int = 0
    fallback_ns: int = 0

    def __post_init__(self) -> None:
        if self.shots != self.trivial_shots + self.bp_converged + self.osd_fallbacks:
            raise ValueError(f"inconsistent stats: {self}")

    def __add__(self, other: BpGpuStats) -> BpGpuStats:
        return BpGpuStats(
            shots=self.shots + other.shots,
            trivial_shots=self.trivial_shots + other.trivial_shots,
            bp_converged=self.bp_converged + other.bp_converged,
            osd_fallbacks=self.osd_fallbacks + other.osd_fallbacks,
            bp_iterations=self.bp_iterations + other.bp_iterations,
            fallback_ns=self.fallback_ns + other.fallback_ns,
        )


@dataclass(frozen=True, eq=False)
class BpResult:
    """The raw outcome of batched min-sum BP on host syndromes (see :meth:`CompiledBpGpu.bp`).

    Attributes:
        decisions: ``(shots, num_errors)`` uint8, the final hard decision of each shot (at
            convergence, or after the last iteration).
        converged: ``(shots,)`` bool.
        iterations: ``(shots,)`` int64, iterations run for each shot.
    """

    decisions: npt.NDArray[np.uint8]
    converged: npt.NDArray[np.bool_]
    iterations: npt.NDArray[np.int64]


@dataclass(frozen=True)
class _DeviceGroup:
    """One :class:`CheckGroup`, uploaded."""

    checks: Array  # (m_g,)
    slot_bit: Array  # (m_g * dc_g,) flat
    slot_valid: Array  # (m_g, dc_g, 1)
    slot_pos: Array  # (dc_g, 1)
    v2c_init: Array  # (m_g, dc_g): priors on edges, +big on padding
    shape: tuple[int, int]  # (m_g, dc_g)


@dataclass(frozen=True)
class _Device:
    """The layout, priors and observables matrix, uploaded to the backend once."""

    groups: tuple[_DeviceGroup, ...]
    bit_slot: Array  # ((n + 1) * dv,) flat
    bit_valid: Array  # (n + 1, dv, 1)
    prior_llr: Array  # (n + 1, 1); the padding bit n has +1 and no edges: it never flips
    obs: Array  # (k, n + 1) float, L with a zero column for the padding bit
    one: Array  # scalar 1 of the float dtype
    minus_one: Array  # scalar -1 of the float dtype
    big: float  # padding value of bit-to-check messages: larger than any real one
    cap: float  # bound on check-to-bit magnitudes, so that sums of them cannot overflow


class CompiledBpGpu(CompiledDecoder):
    """``bp-gpu`` compiled for one model: the padded Tanner layout on the device, and an
    ldpc ``BpOsdDecoder`` with the same settings for the fallback."""

    def __init__(
        self,
        *,
        matrices: DemMatrices,
        settings: BpOsdSettings,
        backend: Backend,
        float_dtype: FloatName,
        chunk_shots: int,
        max_groups: int,
        model_hash: str,
    ) -> None:
        super().__init__(
            decoder_name=BpGpuDecoder.name,
            num_detectors=matrices.num_detectors,
            num_observables=matrices.num_observables,
            model_hash=model_hash,
        )
        self.matrices = matrices
        self.settings = settings
        self.backend = backend
        self.float_dtype = float_dtype
        self.chunk_shots = chunk_shots
        self.layout = TannerLayout.from_check_matrix(matrices.check_matrix, max_groups=max_groups)
        self._fallback = settings.make_ldpc(matrices)
        # With no detectors or no error mechanisms there is nothing for BP to do: every
        # prediction is 0 (and an empty layout has no groups to run over).
        self._dev = None if self._fallback is None else self._upload()
        self._stats = BpGpuStats()

    def _upload(self) -> _Device:
        xp = self.backend.xp
        lay = self.layout
        np_float = np.dtype(self.float_dtype)
        big = float(np.finfo(np_float).max)
        # The padding bit n only needs a positive posterior (it must never flip); a modest
        # value keeps ``post - c2v`` on padding slots (masked out anyway) from overflowing.
        prior_llr = np.ones(lay.num_bits + 1, dtype=np_float)
        p = self.matrices.priors
        prior_llr[:-1] = np.log((1.0 - p) / p)
        groups = tuple(
            _DeviceGroup(
                checks=xp.asarray(g.checks),
                slot_bit=xp.asarray(g.slot_bit.reshape(-1)),
                slot_valid=xp.asarray(g.slot_valid[:, :, None]),
                slot_pos=xp.asarray(np.arange(g.degree, dtype=np.int64)[:, None]),
                v2c_init=xp.asarray(
                    np.where(g.slot_valid, prior_llr[g.slot_bit], np_float.type(big))
                ),
                shape=(int(g.checks.size), g.degree),
            )
            for g in lay.groups
        )
        obs = np.zeros((self.num_observables, lay.num_bits + 1), dtype=np_float)
        obs[:, :-1] = self.matrices.observables_matrix.toarray()
        return _Device(
            groups=groups,
            bit_slot=xp.asarray(lay.bit_slot.reshape(-1)),
            bit_valid=xp.asarray(lay.bit_valid[:, :, None]),
            prior_llr=xp.asarray(prior_llr[:, None]),
            obs=xp.asarray(obs),
            one=xp.asarray(1, dtype=getattr(xp, self.float_dtype)),
            minus_one=xp.asarray(-1, dtype=getattr(xp, self.float_dtype)),
            big=big,
            cap=big / (4 * (lay.max_bit_degree + 1)),
        )

    @property
    def stats(self) -> BpGpuStats:
        """Counts since compile or the last :meth:`reset_stats`."""
        return self._stats

    def reset_stats(self) -> BpGpuStats:
        """Zero the counts; return what they were."""
        old, self._stats = self._stats, BpGpuStats()
        return old

    def _min_sum(
        self, dev: _Device, syndromes: Array
    ) -> tuple[list[Array], list[Array], list[int], Array, Array]:
        """Run BP on ``(shots, m)`` bool device syndromes.

        Arrays are kept shots-last (``(checks, slots, shots)``, ``(bits, shots)``): gathers
        then move whole contiguous rows of shots, and reductions over a check's slots run
        across contiguous shots (coalesced on a GPU, SIMD on a CPU).

        Returns ``(converged_rows, converged_decisions, converged_iteration, failed_rows,
        failed_decisions)``: for each iteration that converged some shots, their row indices
        and ``(n + 1, rows)`` bool hard decisions; then the rows that never converged, and
        their last hard decisions.
        """
        xp = self.backend.xp
        n1, dv = self.layout.num_bits + 1, self.layout.max_bit_degree
        alpha = float(self.settings.ms_scaling_factor)
        shots = syndromes.shape[0]
        rows = xp.arange(shots, dtype=xp.int64)
        float_dtype = dev.prior_llr.dtype

        syn_t = xp.astype(xp.permute_dims(syndromes, (1, 0)), xp.int32)
        syn = [xp.take(syn_t, g.checks, axis=0) for g in dev.groups]
        # alpha * (-1)^syndrome, per check: the syndrome's part of each message's sign.
        syn_scale = [xp.astype((1 - 2 * x)[:, None, :], float_dtype) * alpha for x in syn]
        v2c = [xp.broadcast_to(g.v2c_init[:, :, None], (*g.shape, shots)) for g in dev.groups]
        c2v: list[Array] = []
        conv_rows: list[Array] = []
        conv_hard: list[Array] = []
        conv_iter: list[int] = []
        for it in range(1, self.settings.max_bp_iters + 1):
            s = rows.shape[0]
            # Check to bit: alpha * sign * (smallest |message| among the check's other bits).
            c2v = []
            for g, v, scale in zip(dev.groups, v2c, syn_scale, strict=True):
                mag = xp.abs(v)
                is_arg = g.slot_pos == xp.argmin(mag, axis=1, keepdims=True)
                min1 = xp.min(mag, axis=1, keepdims=True)
                min2 = xp.min(xp.where(is_arg, dev.big, mag), axis=1, keepdims=True)
                # A degree-1 check has no "other" bit: min2 is the padding value. ldpc sends
                # alpha * DBL_MAX there, which overflows once summed; cap it instead.
                min2 = xp.where(min2 > dev.cap, dev.cap, min2)
                sign = xp.where(v <= 0, dev.minus_one, dev.one)
                scale = scale * xp.prod(sign, axis=1, keepdims=True)
                c2v.append(xp.where(is_arg, min2 * scale, min1 * scale) * sign)
            flat = xp.concat([xp.reshape(c, (-1, s)) for c in c2v], axis=0)
            # Bit side: posterior = prior + incoming check messages, gathered per bit.
            incoming = xp.reshape(xp.take(flat, dev.bit_slot, axis=0), (n1, dv, s))
            incoming = xp.where(dev.bit_valid, incoming, 0)
            post = dev.prior_llr + xp.sum(incoming, axis=1)
            hard = post <= 0
            hard_int = xp.astype(hard, xp.int32)
            done = xp.ones(s, dtype=xp.bool)
            for g, sg in zip(dev.groups, syn, strict=True):
                got = xp.reshape(xp.take(hard_int, g.slot_bit, axis=0), (*g.shape, s))
                got = xp.sum(got, axis=1) % 2
                done = xp.logical_and(done, xp.all(got == sg, axis=0))
            done_idx = xp.nonzero(done)[0]
            n_done = int(done_idx.shape[0])
            if n_done:
                conv_rows.append(xp.take(rows, done_idx, axis=0))
                conv_hard.append(xp.take(hard, done_idx, axis=1))
                conv_iter.append(it)
                if n_done == s:
                    return conv_rows, conv_hard, conv_iter, rows[:0], hard[:, :0]
                keep = xp.nonzero(xp.logical_not(done))[0]
                rows = xp.take(rows, keep, axis=0)
                post, hard = (xp.take(x, keep, axis=-1) for x in (post, hard))
                syn = [xp.take(x, keep, axis=-1) for x in syn]
                syn_scale = [xp.take(x, keep, axis=-1) for x in syn_scale]
                c2v = [xp.take(x, keep, axis=-1) for x in c2v]
                s -= n_done
            if it == self.settings.max_bp_iters:
                break
            # Bit to check: the posterior minus what that check sent (extrinsic information).
            v2c = [
                xp.where(
                    g.slot_valid,
                    xp.reshape(xp.take(post, g.slot_bit, axis=0), (*g.shape, s)) - c,
                    dev.big,
                )
                for g, c in zip(dev.groups, c2v, strict=True)
            ]
        return conv_rows, conv_hard, conv_iter, rows, hard

    def bp(self, syndromes: npt.NDArray[np.uint8]) -> BpResult:
        """Batched min-sum BP alone (no fallback, no stats, no chunking): for tests and
        diagnostics.

        Args:
            syndromes: ``(shots, num_detectors)`` 0/1 host array, unpacked.
        """
        xp = self.backend.xp
        shots = syndromes.shape[0]
        n = self.layout.num_bits
        decisions = np.zeros((shots, n), dtype=np.uint8)
        converged = np.zeros(shots, dtype=np.bool_)
        iterations = np.full(shots, self.settings.max_bp_iters, dtype=np.int64)
        if shots == 0 or self._dev is None:  # nothing to run: only silent shots are explained
            converged[:] = ~np.any(syndromes, axis=1)
            iterations[:] = 0
            return BpResult(decisions, converged, iterations)
        syn = self.backend.asarray(np.asarray(syndromes, dtype=np.bool_))
        conv_rows, conv_hard, conv_iter, fail_rows, fail_hard = self._min_sum(self._dev, syn)
        for r, h, it in zip(conv_rows, conv_hard, conv_iter, strict=True):
            idx = self.backend.to_host(r)
            decisions[idx] = self.backend.to_host(xp.astype(h[:n, :], xp.uint8)).T
            converged[idx] = True
            iterations[idx] = it
        idx = self.backend.to_host(fail_rows)
        decisions[idx] = self.backend.to_host(xp.astype(fail_hard[:n, :], xp.uint8)).T
        return BpResult(decisions, converged, iterations)

    def _decode_packed(self, dets: PackedBits) -> PackedBits:
        shots = dets.shape[0]
        predictions = np.zeros((shots, self.num_observables), dtype=np.uint8)
        dev = self._dev
        if dev is None:
            # An empty model (no detectors or no error mechanisms) predicts 0 for every shot.
            self._stats = self._stats + BpGpuStats(shots=shots, trivial_shots=shots)
            return np_pack_bits(predictions)
        nontrivial = np.flatnonzero(dets.any(axis=1))
        stats = BpGpuStats(shots=shots - nontrivial.size, trivial_shots=shots - nontrivial.size)
        for start in range(0, nontrivial.size, self.chunk_shots):
            chunk = nontrivial[start : start + self.chunk_shots]
            stats = stats + self._decode_chunk(dev, dets, chunk, predictions)
        self._stats = self._stats + stats
        return np_pack_bits(predictions)

    def _decode_chunk(
        self,
        dev: _Device,
        dets: PackedBits,
        chunk: npt.NDArray[np.intp],
        predictions: npt.NDArray[np.uint8],
    ) -> BpGpuStats:
        """Decode the rows ``chunk`` of ``dets`` into ``predictions``; return their counts."""
        xp = self.backend.xp
        syn = xp_unpack_bits(xp, self.backend.asarray(dets[chunk]), self.num_detectors)
        conv_rows, conv_hard, conv_iter, fail_rows, _ = self._min_sum(dev, syn)
        converged = iterations = 0
        if conv_rows:
            hard = xp.concat(conv_hard, axis=1)
            flips = xp.matmul(dev.obs, xp.astype(hard, dev.obs.dtype))
            flips = xp.astype(xp.round(flips), xp.int64) % 2
            rows = self.backend.to_host(xp.concat(conv_rows, axis=0))
            predictions[chunk[rows]] = self.backend.to_host(flips).T.astype(np.uint8)
            converged = int(rows.size)
            per_iteration = zip(conv_rows, conv_iter, strict=True)
            iterations = sum(it * int(r.shape[0]) for r, it in per_iteration)
        failed = chunk[self.backend.to_host(fail_rows)]
        fallback_ns = 0
        if failed.size:
            t0 = time.perf_counter_ns()
            syndromes = unpack_bits(dets[failed], self.num_detectors)
            predictions[failed] = decode_syndromes(self._fallback, self.matrices, syndromes)
            fallback_ns = time.perf_counter_ns() - t0
            iterations += int(failed.size) * self.settings.max_bp_iters
        return BpGpuStats(
            shots=converged + int(failed.size),
            bp_converged=converged,
            osd_fallbacks=int(failed.size),
            bp_iterations=iterations,
            fallback_ns=fallback_ns,
        )

    def _describe(self) -> str:
        s, lay = self.settings, self.layout
        return (
            f"backend={self.backend.name}({self.backend.description}) {self.float_dtype} "
            f"errors={lay.num_bits} edges={lay.num_edges} slots={lay.num_slots} "
            f"groups={'/'.join(str(g.degree) for g in lay.groups)} "
            f"min_sum x{s.max_bp_iters} ms_scaling={s.ms_scaling_factor} "
            f"fallback=ldpc {s.osd_method}/{s.osd_order_for(self.matrices)} "
            f"chunk={self.chunk_shots}"
        )


class BpGpuDecoder(Decoder):
    """``bp-gpu``: batched min-sum BP on numpy or CuPy, with ldpc's BP+OSD as fallback.

    Args:
        max_bp_iters: BP iterations before the fallback.
        ms_scaling_factor: min-sum scale, in ``(0, 1]`` (ldpc's ``ms_scaling_factor``).
        osd_method: the fallback's OSD method: ``"osd0"``, ``"osd_e"`` or ``"osd_cs"``.
        osd_order: the fallback's OSD order (0 for ``osd0``).
        device: ``"cpu"`` (numpy), ``"cuda"`` (CuPy), or ``"auto"`` (CuPy if a GPU is usable).
        float_dtype: ``"float64"`` (as ldpc computes) or ``"float32"`` (half the memory
            traffic; messages are clipped at float32's range).
        chunk_shots: shots per device pass; ``None`` picks :data:`DEFAULT_CHUNK_SHOTS`.
        max_groups: at most this many blocks of checks, grouped by degree, each padded to
            its largest degree (more groups: less padding, more kernel launches).

    Raises:
        BadOption: a setting is out of range.
        BackendUnavailable: ``device="cuda"`` without CuPy or a GPU.
    """

    name: ClassVar[str] = "bp-gpu"

    def __init__(
        self,
        *,
        max_bp_iters: int = BpOsdSettings.max_bp_iters,
        ms_scaling_factor: float = BpOsdSettings.ms_scaling_factor,
        osd_method: OsdMethod = BpOsdSettings.osd_method,
        osd_order: int = BpOsdSettings.osd_order,
        device: DeviceName = "auto",
        float_dtype: FloatName = "float64",
        chunk_shots: int | None = None,
        max_groups: int = 4,
    ) -> None:
        self.settings = BpOsdSettings(
            max_bp_iters=max_bp_iters,
            bp_method="minimum_sum",
            ms_scaling_factor=ms_scaling_factor,
            osd_method=osd_method,
            osd_order=osd_order,
        )
        self.settings.check(self.name)
        if float_dtype not in FLOAT_DTYPES:
            raise BadOption(
                self.name, option="float_dtype", value=float_dtype, reason=f"one of {FLOAT_DTYPES}"
            )
        if chunk_shots is not None and (
            isinstance(chunk_shots, bool) or not isinstance(chunk_shots, int) or chunk_shots < 1
        ):
            raise BadOption(
                self.name, option="chunk_shots", value=chunk_shots, reason="an int >= 1 or None"
            )
        if isinstance(max_groups, bool) or not isinstance(max_groups, int) or max_groups < 1:
            raise BadOption(self.name, option="max_groups", value=max_groups, reason="an int >= 1")
        self.max_groups = max_groups
        self.device = device
        self.backend = resolve_backend(device, decoder=self.name)
        self.float_dtype: FloatName = float_dtype
        self.chunk_shots = chunk_shots or DEFAULT_CHUNK_SHOTS[self.backend.name]

    def _compile(self, dem: stim.DetectorErrorModel, model_hash: str) -> CompiledBpGpu:
        try:
            matrices = DemMatrices.from_detector_error_model(dem)
        except ValueError as exc:
            raise ModelError(self.name, reason=str(exc)) from exc
        return CompiledBpGpu(
            matrices=matrices,
            settings=self.settings,
            backend=self.backend,
            float_dtype=self.float_dtype,
            chunk_shots=self.chunk_shots,
            max_groups=self.max_groups,
            model_hash=model_hash,
        )

    def options(self) -> dict[str, object]:
        """The settings, as keyword arguments."""
        opts: dict[str, Any] = asdict(self.settings)
        del opts["bp_method"]
        opts.update(
            device=self.device,
            float_dtype=self.float_dtype,
            chunk_shots=self.chunk_shots,
            max_groups=self.max_groups,
        )
        return opts
