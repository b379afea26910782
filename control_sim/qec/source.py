"""Syndrome sources: seeded producers of bit-packed detection-event blocks.

Every source answers ``sample_block(shots) -> (dets_packed, obs_packed)`` in stim's
bit-packed layout, so that a decoder compiled from the source's detector error model
decodes its blocks whichever simulator made them:

- ``dets_packed``: ``uint8``, shape ``(shots, ceil(num_detectors / 8))``; detector ``k`` of
  a shot is bit ``k % 8`` (little-endian) of byte ``k // 8``. Padding bits are zero.
- ``obs_packed``: ``uint8``, shape ``(shots, ceil(num_observables / 8))``, the same way.

:class:`SyndromeSampler` samples the stim circuit directly; ``AerRepetitionSampler`` (in
``control_sim.qec.aer_repetition``) runs the repetition code on qiskit-aer instead;
:func:`control_sim.qec.samplers.open_source` picks one by name.
:func:`iter_blocks` paces any source with a :class:`~control_sim.qec.pacing.PacingClock`.

>>> source = SyndromeSampler(CodeSpec("repetition", distance=3, rounds=2, p=0.0), seed=7)
>>> dets, obs = source.sample_block(5)
>>> dets.shape, obs.shape, int(dets.sum()), int(obs.sum())
((5, 1), (5, 1), 0, 0)
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Final

import stim  # type: ignore[import-untyped, unused-ignore]

from client.syndrome_block import PackedBits
from control_sim.qec.codes import CodeSpec, detector_error_model
from control_sim.qec.integers import check_int
from control_sim.qec.pacing import PacingClock

__all__ = [
    "SourceBlock",
    "SyndromeSampler",
    "SyndromeSource",
    "iter_blocks",
]


# stim takes 64-bit unsigned seeds.
_SEED_END: Final = 2**64


class SyndromeSource(abc.ABC):
    """A seeded source of syndrome blocks for one :class:`CodeSpec`.

    The detector layout is always that of ``spec.circuit()``, so :attr:`dem` (and
    :attr:`dem_text`, which crosses the wire) describes the noise behind every block.
    """

    def __init__(self, spec: CodeSpec, *, seed: int) -> None:
        self._spec = spec
        self._seed = check_int("seed", seed, 0)
        if self._seed >= _SEED_END:
            raise ValueError(f"seed must be below 2**64, got {seed}")
        self._circuit = spec.circuit()

    @property
    def spec(self) -> CodeSpec:
        """The experiment this source samples."""
        return self._spec

    @property
    def seed(self) -> int:
        """The seed given at construction; the same seed gives the same blocks."""
        return self._seed

    @property
    def circuit(self) -> stim.Circuit:
        """The stim circuit that defines the detectors and observables (a copy)."""
        return self._circuit.copy()

    @property
    def num_detectors(self) -> int:
        """Detectors per shot."""
        return int(self._circuit.num_detectors)

    @property
    def num_observables(self) -> int:
        """Logical observables per shot."""
        return int(self._circuit.num_observables)

    @property
    def detector_bytes(self) -> int:
        """Bytes per shot in ``dets_packed``: ``ceil(num_detectors / 8)``."""
        return -(-self.num_detectors // 8)

    @property
    def observable_bytes(self) -> int:
        """Bytes per shot in ``obs_packed``: ``ceil(num_observables / 8)``."""
        return -(-self.num_observables // 8)

    @cached_property
    def dem(self) -> stim.DetectorErrorModel:
        """The detector error model decoders compile (see ``detector_error_model``)."""
        return detector_error_model(self._circuit)

    @cached_property
    def dem_text(self) -> str:
        """:attr:`dem` as stim's text format, for sending to decoder workers."""
        return str(self.dem)

    def sample_block(self, shots: int) -> tuple[PackedBits, PackedBits]:
        """Sample ``shots`` shots; returns ``(dets_packed, obs_packed)`` (see module doc)."""
        return self._sample(check_int("shots", shots, 1))

    @abc.abstractmethod
    def _sample(self, shots: int) -> tuple[PackedBits, PackedBits]:
        """Sample ``shots`` (already checked to be >= 1) shots in the packed layout."""

    def __repr__(self) -> str:
        s = self._spec
        return (
            f"{type(self).__name__}({s.code!r}, distance={s.distance}, rounds={s.rounds}, "
            f"p={s.p}, seed={self._seed}, detectors={self.num_detectors}, "
            f"observables={self.num_observables})"
        )


class SyndromeSampler(SyndromeSource):
    """Samples ``spec.circuit()`` with stim's detector sampler, seeded.

    Two samplers built with the same spec and seed return the same sequence of blocks
    (for one stim version on one machine; stim's output also depends on its SIMD width).
    """

    def __init__(self, spec: CodeSpec, *, seed: int) -> None:
        super().__init__(spec, seed=seed)
        self._sampler = self._circuit.compile_detector_sampler(seed=self._seed)

    def _sample(self, shots: int) -> tuple[PackedBits, PackedBits]:
        dets, obs = self._sampler.sample(shots, separate_observables=True, bit_packed=True)
        return dets, obs


@dataclass(frozen=True)
class SourceBlock:
    """One paced block: its sequence number, emission time and packed samples."""

    seq: int
    emitted_ns: int
    dets_packed: PackedBits
    obs_packed: PackedBits

    @property
    def shots(self) -> int:
        """Shots in this block."""
        return int(self.dets_packed.shape[0])


def iter_blocks(
    source: SyndromeSource, *, shots: int, block_shots: int, clock: PacingClock
) -> Iterator[SourceBlock]:
    """Yield ``shots`` shots from ``source`` in blocks of ``block_shots``, one per clock tick.

    Each block is sampled *before* its tick and stamped with the tick's release time, as a
    control system would hand over a finished block, so sampling time does not push
    emission off schedule. The last block is short when ``block_shots`` does not divide
    ``shots``. Sequence numbers count from 0.
    """
    left = check_int("shots", shots, 1)
    per_block = check_int("block_shots", block_shots, 1)
    seq = 0
    while left > 0:
        n = min(per_block, left)
        dets, obs = source.sample_block(n)
        emitted_ns = clock.wait_next()
        yield SourceBlock(seq=seq, emitted_ns=emitted_ns, dets_packed=dets, obs_packed=obs)
        left -= n
        seq += 1
