"""The bit-flip repetition-code memory experiment on qiskit-aer, in stim's detector layout.

The qiskit circuit mirrors stim's ``repetition_code:memory`` generator gate for gate:

- qubit ``2j`` is data qubit ``j`` (``j < d``); qubit ``2i + 1`` is the ancilla between
  data ``i`` and ``i + 1`` (``i < d - 1``);
- every qubit is reset at the start; each round is an ``id`` on every data qubit (the
  carrier of the before-round data noise), ``CX(2i, 2i+1)``, ``CX(2i+2, 2i+1)``, then a
  measurement and reset of every ancilla; the data qubits are measured at the end;
- one classical register holds the measurements in stim's record order: round ``r``,
  ancilla ``i`` is clbit ``r * (d - 1) + i``, and data ``j`` is clbit ``rounds * (d - 1) + j``.

With the noise model of :func:`repetition_noise_model` the error channels match stim's
at the same ``p`` too, so stim's detector error model is the right one to decode with.
Measurement records become detection events through stim's own measurements-to-detections
converter for the matching stim circuit, so the detector order and the observable cannot
drift from stim's.

>>> from control_sim.qec.codes import CodeSpec
>>> source = AerRepetitionSampler(CodeSpec("repetition", 3, rounds=2, p=0.0), seed=1,
...                               x_flips=[(1, 0)])
>>> dets, obs = source.sample_block(2)
>>> dets.tolist(), obs.tolist()  # data 0 flipped before round 1: detector 2 (ancilla 0)
([[4], [4]], [[0], [0]])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister  # type: ignore[import-untyped, unused-ignore]
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, pauli_error

from client.syndrome_block import PackedBits
from control_sim.qec.codes import P_LIMIT, CodeSpec
from control_sim.qec.source import SyndromeSource

__all__ = [
    "AerRepetitionSampler",
    "memory_to_measurements",
    "repetition_memory_circuit",
    "repetition_noise_model",
]

#: Per-block simulator seeds are drawn below this, which any Aer build accepts.
_SEED_LIMIT: Final = 2**31 - 1


def _pauli_depolarizing(p: float, num_qubits: int) -> Any:
    # stim's DEPOLARIZE1/2(p) apply each non-identity Pauli with probability p / (4^n - 1).
    # qiskit's depolarizing_error(lam) is parametrised differently (lam / 4^n per Pauli,
    # identity included), so spell the channel out instead of converting parameters.
    labels = ["".join(t) for t in itertools.product("IXYZ", repeat=num_qubits)][1:]
    terms = [(label, p / len(labels)) for label in labels]
    return pauli_error([("I" * num_qubits, 1.0 - p), *terms])


def repetition_noise_model(p: float) -> Any:
    """A qiskit-aer ``NoiseModel`` equal to stim's uniform circuit noise of strength ``p``.

    - ``id`` (before-round data noise) and ``cx``: depolarizing, one- and two-qubit, where
      ``p`` is the total probability of a non-identity Pauli, as in stim's ``DEPOLARIZE``;
    - ``measure``: a symmetric readout flip with probability ``p`` (stim's flip before
      measurement: nothing acts on the qubit before it is reset or the experiment ends);
    - ``reset``: an X flip with probability ``p`` after it.
    """
    if not 0.0 <= p < P_LIMIT:
        raise ValueError(f"p must be in [0, {P_LIMIT}), got {p!r}")
    model = NoiseModel()
    model.add_all_qubit_quantum_error(_pauli_depolarizing(p, 1), ["id"])
    model.add_all_qubit_quantum_error(_pauli_depolarizing(p, 2), ["cx"])
    model.add_all_qubit_readout_error(ReadoutError([[1.0 - p, p], [p, 1.0 - p]]))
    model.add_all_qubit_quantum_error(pauli_error([("X", p), ("I", 1.0 - p)]), ["reset"])
    return model


def repetition_memory_circuit(
    distance: int, rounds: int, *, x_flips: Iterable[tuple[int, int]] = ()
) -> QuantumCircuit:
    """The ``distance``/``rounds`` repetition-code memory circuit (layout in the module doc).

    ``x_flips`` injects deterministic X gates, as ``(round, data_index)`` pairs, on data
    qubits at the start of a round (where the before-round noise acts), for checking
    which detectors fire.
    """
    spec = CodeSpec("repetition", distance, rounds, 0.0)
    d, rounds, n_anc = spec.distance, spec.rounds, spec.distance - 1
    flips: dict[int, list[int]] = {}
    for r, j in x_flips:
        if not (0 <= r < rounds and 0 <= j < d):
            raise ValueError(f"x flip (round, data) = {(r, j)} is outside {rounds} rounds x {d}")
        flips.setdefault(r, []).append(j)

    qubits = QuantumRegister(2 * d - 1, "q")
    clbits = ClassicalRegister(rounds * n_anc + d, "meas")
    qc = QuantumCircuit(qubits, clbits, name=f"repetition_d{d}_r{rounds}")
    data = [2 * j for j in range(d)]
    ancillas = [2 * i + 1 for i in range(n_anc)]
    qc.reset(qubits)
    for r in range(rounds):
        for j in flips.get(r, ()):
            qc.x(data[j])
        for q in data:
            qc.id(q)
        for a in ancillas:
            qc.cx(a - 1, a)
        for a in ancillas:
            qc.cx(a + 1, a)
        for i, a in enumerate(ancillas):
            qc.measure(a, clbits[r * n_anc + i])
        for a in ancillas:
            qc.reset(a)
    for j, q in enumerate(data):
        qc.measure(q, clbits[rounds * n_anc + j])
    return qc


def memory_to_measurements(memory: Sequence[str], num_clbits: int) -> npt.NDArray[np.bool_]:
    """Aer's per-shot memory strings of one register as a ``(shots, num_clbits)`` bool array.

    Column ``k`` is clbit ``k``. Aer writes each string most significant clbit first
    (clbit 0 is the last character), so the columns are reversed here.
    """
    shots = len(memory)
    raw = np.frombuffer("".join(memory).encode("ascii"), dtype=np.uint8)
    if raw.size != shots * num_clbits:
        raise ValueError(
            f"expected {shots} memory strings of {num_clbits} bits (one register), "
            f"got {raw.size} characters; first: {memory[0] if shots else None!r}"
        )
    bits: npt.NDArray[np.bool_] = raw.reshape(shots, num_clbits)[:, ::-1] == ord("1")
    return bits


class AerRepetitionSampler(SyndromeSource):
    """Samples the repetition-code memory experiment on qiskit-aer's stabilizer simulator.

    Blocks come out in exactly the layout of :class:`~control_sim.qec.source.
    SyndromeSampler` for the same spec, and :attr:`dem` is stim's model of the same noise.
    Meant for small codes: Aer simulates shot by shot, orders of magnitude slower than
    stim. Each block gets its own simulator seed drawn from ``seed``, so the same seed
    gives the same blocks. ``x_flips`` is passed to :func:`repetition_memory_circuit`.
    """

    def __init__(
        self, spec: CodeSpec, *, seed: int, x_flips: Iterable[tuple[int, int]] = ()
    ) -> None:
        if spec.code != "repetition":
            raise ValueError(f"the aer backend runs only the repetition code, not {spec.code!r}")
        super().__init__(spec, seed=seed)
        self._qc = repetition_memory_circuit(spec.distance, spec.rounds, x_flips=x_flips)
        if self._qc.num_clbits != self._circuit.num_measurements:
            raise RuntimeError(
                f"qiskit circuit has {self._qc.num_clbits} measurements, stim's "
                f"{self._circuit.num_measurements}: the layouts disagree"
            )
        self._noise = repetition_noise_model(spec.p) if spec.p > 0 else None
        self._simulator = AerSimulator(method="stabilizer")
        self._m2d = self._circuit.compile_m2d_converter()
        self._seeds = np.random.default_rng(self._seed)

    @property
    def qiskit_circuit(self) -> QuantumCircuit:
        """The qiskit circuit that is simulated (a copy)."""
        return self._qc.copy()

    def _sample(self, shots: int) -> tuple[PackedBits, PackedBits]:
        result = self._simulator.run(
            self._qc,
            shots=shots,
            memory=True,
            noise_model=self._noise,
            seed_simulator=int(self._seeds.integers(_SEED_LIMIT)),
        ).result()
        measurements = memory_to_measurements(result.get_memory(0), self._qc.num_clbits)
        dets, obs = self._m2d.convert(
            measurements=measurements, separate_observables=True, bit_packed=True
        )
        return dets, obs
