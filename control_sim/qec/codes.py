"""Memory-experiment circuits and detector error models for the syndrome loop.

One :class:`CodeSpec` names an experiment (code family, distance, rounds, noise strength);
:func:`build_circuit` turns it into stim's generated circuit with uniform circuit-level
noise, and :func:`detector_error_model` gives the noise model that decoders compile once.

>>> spec = CodeSpec("repetition", distance=3, rounds=2, p=0.01)
>>> circuit = spec.circuit()
>>> (circuit.num_detectors, circuit.num_observables)
(6, 1)
>>> detector_error_model(circuit).num_detectors
6
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import stim  # type: ignore[import-untyped, unused-ignore]

from control_sim.qec.integers import check_int
from control_sim.qec.names import CODE_NAMES, CodeName

__all__ = [
    "P_LIMIT",
    "STIM_TASKS",
    "CodeSpec",
    "build_circuit",
    "detector_error_model",
]


#: The stim generator task behind each code name.
STIM_TASKS: Final[dict[str, str]] = {
    "surface": "surface_code:rotated_memory_z",
    "repetition": "repetition_code:memory",
}

#: Noise strengths must stay below this: at p = 0.5 a measurement flip is as likely as
#: not, and the syndrome says nothing about the errors.
P_LIMIT: Final = 0.5


@dataclass(frozen=True)
class CodeSpec:
    """A memory experiment: which code, how big, how many rounds, how noisy.

    ``code`` is ``"surface"`` (rotated surface code, Z-basis memory) or ``"repetition"``
    (bit-flip repetition code). ``distance`` >= 2 (stim accepts even surface-code
    distances too), ``rounds`` >= 1 and ``0 <= p < 0.5``. ``p`` is used for every noise
    channel at once: depolarization after each Clifford and on the data before each round,
    and a flip before each measurement and after each reset.
    """

    code: CodeName
    distance: int
    rounds: int
    p: float

    def __post_init__(self) -> None:
        if self.code not in CODE_NAMES:
            raise ValueError(f"code must be one of {CODE_NAMES}, got {self.code!r}")
        object.__setattr__(self, "distance", check_int("distance", self.distance, 2))
        object.__setattr__(self, "rounds", check_int("rounds", self.rounds, 1))
        if isinstance(self.p, bool) or not isinstance(self.p, int | float):
            raise ValueError(f"p must be a float in [0, {P_LIMIT}), got {self.p!r}")
        # The negated comparison also refuses NaN.
        if not 0.0 <= self.p < P_LIMIT:
            raise ValueError(f"p must be in [0, {P_LIMIT}), got {self.p!r}")
        object.__setattr__(self, "p", float(self.p))

    @property
    def stim_task(self) -> str:
        """The ``stim.Circuit.generated`` task name, e.g. ``"repetition_code:memory"``."""
        return STIM_TASKS[self.code]

    def circuit(self) -> stim.Circuit:
        """stim's generated memory circuit for this spec, with noise of strength ``p``."""
        return stim.Circuit.generated(
            self.stim_task,
            distance=self.distance,
            rounds=self.rounds,
            after_clifford_depolarization=self.p,
            before_round_data_depolarization=self.p,
            before_measure_flip_probability=self.p,
            after_reset_flip_probability=self.p,
        )


def build_circuit(code: CodeName, distance: int, rounds: int, p: float) -> stim.Circuit:
    """Build the noisy memory circuit for ``code``; see :class:`CodeSpec` for the arguments.

    Raises ``ValueError`` on an unknown code, ``distance < 2``, ``rounds < 1`` or ``p``
    outside ``[0, 0.5)``.
    """
    return CodeSpec(code, distance, rounds, p).circuit()


def detector_error_model(circuit: stim.Circuit) -> stim.DetectorErrorModel:
    """The circuit's detector error model, in the form every nearloop decoder accepts.

    Errors are decomposed into graphlike pieces (at most two detectors each, joined by
    ``^``), which pymatching needs to build its matching graph. BP decoders take the same
    text: ldpc's ``detector_error_model_to_check_matrices`` XORs the pieces back into one
    hyperedge per column and itself refuses undecomposed hyperedges by default. ``repeat``
    blocks are kept, since both pymatching and ldpc flatten them while reading, and the text
    that crosses the wire stays smaller. No approximation flags are set, so a circuit with
    a channel stim cannot model exactly fails loudly instead of decoding against the wrong
    noise.
    """
    return circuit.detector_error_model(decompose_errors=True)
