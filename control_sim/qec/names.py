"""The names the QEC runtime takes: its codes and its syndrome samplers.

It imports nothing, so command lines offer them without loading stim or numpy
(:mod:`decoders.names` and :mod:`control_sim.qpu.names` are its twins).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

CodeName = Literal["surface", "repetition"]
CODE_NAMES: Final[tuple[str, ...]] = get_args(CodeName)
"""``"surface"`` (rotated surface code, Z memory) and ``"repetition"`` (bit-flip code)."""

SamplerName = Literal["stim", "aer"]
SAMPLER_NAMES: Final[tuple[str, ...]] = get_args(SamplerName)
"""``"stim"`` (any code) and ``"aer"`` (the repetition code on qiskit-aer)."""
