"""The syndrome samplers by name (:data:`~control_sim.qec.names.SAMPLER_NAMES`):
:func:`open_source`.

The base class (:mod:`control_sim.qec.source`) knows none of its subclasses; this module
knows them all. It imports a simulator only when :func:`open_source` is called, and
qiskit-aer only when ``"aer"`` is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from control_sim.qec.names import SAMPLER_NAMES, SamplerName

if TYPE_CHECKING:
    from control_sim.qec.codes import CodeSpec
    from control_sim.qec.source import SyndromeSource


def open_source(spec: CodeSpec, *, backend: SamplerName = "stim", seed: int) -> SyndromeSource:
    """Build the source for ``spec`` on sampler ``backend`` (``"stim"`` or ``"aer"``).

    ``"aer"`` supports only the repetition code and imports qiskit, which takes a while,
    so it is imported only when asked for.
    """
    if backend == "stim":
        from control_sim.qec.source import SyndromeSampler

        return SyndromeSampler(spec, seed=seed)
    if backend == "aer":
        from control_sim.qec.aer_repetition import AerRepetitionSampler

        return AerRepetitionSampler(spec, seed=seed)
    raise ValueError(f"backend must be one of {SAMPLER_NAMES}, got {backend!r}")
