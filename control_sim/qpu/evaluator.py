"""Evaluate registered circuits on qiskit-aer: expectation values (exact or from shots), samples.

:class:`QpuEvaluator` is the transport-free core of the ``qpu`` service. A worker hands it
what a request carried (a circuit id, a parameter array, a mode, shots, a seed); an
in-process optimizer calls it directly. Nothing here knows about sockets.

Modes (``evaluate(..., mode=...)``, or the ``estimate`` and ``sample`` methods):

- ``"estimate"``, ``shots=None``: exact expectation values of every observable, from the
  statevector (aer's ``save_expectation_value``, the mechanism aer's ``EstimatorV2`` uses).
  Standard errors are 0.
- ``"estimate"``, ``shots=n``: what a QPU does. The observables' Pauli terms are split into
  qubit-wise commuting groups; each group's basis is measured ``n`` times (so a call costs
  ``n`` shots per group), and each value is the shot average. Standard errors are the
  shot-to-shot standard deviation over ``sqrt(n)``, summed over groups in quadrature.
  (aer's ``EstimatorV2`` has no shots: its ``precision`` adds Gaussian noise of a fixed
  width to the exact value, whatever the state.)
- ``"sample"``, ``shots=n``: ``n`` measurement outcomes per parameter vector of the
  circuit's own classical bits, or of every qubit (``measure_all``) if it has none.

Shapes: ``params`` is ``(n_params,)`` or ``(batch, n_params)``, in the registry's parameter
order; results always have the batch axis first (``batch`` is 1 for a 1-D input).

Speed. Each registered circuit is compiled once for aer (transpiled by the registry; here
turned into aer programs with the save instructions or basis changes in place), so a call
only binds parameters and runs the C++ simulator. By default (``engine="direct"``) that
run bypasses ``AerSimulator.run``'s per-call assembly and job thread through aer's
private internals, all of which live in :mod:`control_sim.qpu.aer_direct`. Every program
is checked against the public ``AerSimulator.run`` once when it is compiled, and uses the
public path from then on (with a warning logged) if the internals are missing, raise, or
disagree with it. ``engine="backend"`` always uses ``AerSimulator.run``. A 2-qubit exact
estimate costs about 0.1 ms direct, 0.35 ms through ``AerSimulator.run`` and 1.2 ms
through ``EstimatorV2``.

An evaluator is not thread-safe: give each thread its own.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray
from qiskit.circuit import ClassicalRegister, Parameter, QuantumCircuit  # type: ignore[import-untyped, unused-ignore]
from qiskit.primitives import BitArray  # type: ignore[import-untyped, unused-ignore]
from qiskit.quantum_info import PauliList, Statevector  # type: ignore[import-untyped, unused-ignore]
from qiskit_aer import AerSimulator

from control_sim.qpu.aer_direct import DirectRun, same_data
from control_sim.qpu.circuits import CircuitRegistry, RegisteredCircuit
from control_sim.qpu.errors import (
    BadObservable,
    BadParameters,
    BadRequest,
    BadShots,
    SimulationFailed,
    UnsupportedCircuit,
)
from control_sim.qpu.schema import (
    MAX_BATCH,
    MAX_SAMPLE_BYTES,
    SEED_BOUND,
    bytes_per_shot,
    check_seed,
    check_shots,
    to_ints,
)

log = logging.getLogger(__name__)

Mode = Literal["estimate", "sample"]
Engine = Literal["direct", "backend"]

_OBS_LABEL: Final = "nl_obs{}"
_STATEVECTOR_CHECK_MAX_QUBITS: Final = 12


@dataclass(frozen=True, eq=False)
class ExpectationValues:
    """Expectation values: ``values[b, k]`` is observable ``k`` at parameter vector ``b``.

    ``values`` and ``std_errors`` are float64 ``(batch, n_observables)``; ``std_errors`` is
    all zeros when ``shots`` is None (exact). ``shots`` is per measurement basis.
    """

    values: NDArray[np.float64]
    std_errors: NDArray[np.float64]
    shots: int | None

    def __post_init__(self) -> None:
        if self.values.shape != self.std_errors.shape or self.values.ndim != 2:
            raise ValueError(
                f"values {self.values.shape} and std_errors {self.std_errors.shape} "
                "must both be (batch, n_observables)"
            )

    def __repr__(self) -> str:
        how = "exact" if self.shots is None else f"{self.shots} shots per basis"
        return f"ExpectationValues({self.values.shape[0]}x{self.values.shape[1]}, {how})"


@dataclass(frozen=True, eq=False)
class Samples:
    """Measurement outcomes, bit-packed: uint8 ``bits`` of shape ``(batch, shots, n_bytes)``.

    ``n_bytes = ceil(num_bits / 8)``. Each shot is a big-endian integer: classical bit ``i``
    is bit ``i % 8`` of byte ``n_bytes - 1 - i // 8``, the layout of qiskit's ``BitArray``
    (so ``BitArray(bits, num_bits)`` wraps it without a copy) and of qiskit's counts
    strings (bit 0 rightmost). With ``measure_all``, classical bit ``i`` is qubit ``i``.
    """

    bits: NDArray[np.uint8]
    num_bits: int
    shots: int

    def __post_init__(self) -> None:
        n_bytes = bytes_per_shot(self.num_bits)
        if self.bits.ndim != 3 or self.bits.shape[1:] != (self.shots, n_bytes):
            raise ValueError(
                f"bits of shape {self.bits.shape} do not hold {self.shots} shots "
                f"of {self.num_bits} bits as (batch, shots, {n_bytes})"
            )

    def to_ints(self) -> NDArray[np.uint64]:
        """Outcomes as integers, ``(batch, shots)`` uint64; only for ``num_bits <= 64``
        (:func:`control_sim.qpu.schema.to_ints`)."""
        return to_ints(self.bits, self.num_bits)

    def bit_array(self, index: int) -> BitArray:
        """Parameter vector ``index``'s shots as a qiskit ``BitArray`` (``get_counts()``...)."""
        return BitArray(self.bits[index], self.num_bits)

    def __repr__(self) -> str:
        return f"Samples(batch={self.bits.shape[0]}, shots={self.shots}, bits={self.num_bits})"


class QpuEvaluator:
    """Evaluates circuits of a :class:`CircuitRegistry` on one reused AerSimulator.

    ``seed`` seeds the stream that gives each shot-based call its own simulator seed when
    the call passes none, so a run of calls is reproducible and its calls independent.

    >>> ev = QpuEvaluator(seed=1)
    >>> src = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'
    >>> cid = ev.registry.register_qasm3(src, [[("Z", 1.0)]])
    >>> ev.estimate(cid, [np.pi / 3]).values
    array([[0.5]])
    >>> ev.sample(cid, [[0.0], [np.pi]], shots=3).to_ints()
    array([[0, 0, 0],
           [1, 1, 1]], dtype=uint64)
    """

    def __init__(
        self,
        registry: CircuitRegistry | None = None,
        *,
        seed: int | None = None,
        engine: Engine = "direct",
        max_parallel_threads: int = 1,
    ) -> None:
        if engine not in ("direct", "backend"):
            raise ValueError(f"engine must be 'direct' or 'backend', got {engine!r}")
        self._registry = registry if registry is not None else CircuitRegistry()
        self._rng = np.random.default_rng(seed)
        self._engine: Engine = engine
        # One simulator for every call; one thread by default because a QPU worker shares
        # its cores with the broker and aer only parallelises statevectors of 14+ qubits.
        # (aer's runtime_parameter_bind_enable would make a batch of 2 ~25% cheaper, but in
        # 0.18 it fails on batches whose circuit has a parameterized global phase.)
        self._sim = AerSimulator(method="statevector", max_parallel_threads=max_parallel_threads)
        self._compiled: dict[str, _Compiled] = {}

    @property
    def registry(self) -> CircuitRegistry:
        """The registry whose circuits this evaluator runs."""
        return self._registry

    @property
    def engine(self) -> Engine:
        """``"direct"`` (aer internals, verified) or ``"backend"`` (``AerSimulator.run``)."""
        return self._engine

    def __repr__(self) -> str:
        return (
            f"QpuEvaluator(engine={self._engine!r}, {len(self._compiled)} compiled, "
            f"{self._registry!r})"
        )

    def prepare(self, circuit_id: str) -> None:
        """Compile ``circuit_id`` for every mode now, so that no later call pays for it."""
        c = self._get(circuit_id)
        if c.reg.estimable and c.reg.observables:
            c.exact_program()
            c.shots_program()
        c.sample_program()

    @overload
    def evaluate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: Literal["estimate"] = ...,
        shots: int | None = None,
        seed: int | None = None,
    ) -> ExpectationValues: ...

    @overload
    def evaluate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: Literal["sample"],
        shots: int | None = None,
        seed: int | None = None,
    ) -> Samples: ...

    @overload
    def evaluate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: str,
        shots: int | None = None,
        seed: int | None = None,
    ) -> ExpectationValues | Samples: ...

    def evaluate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: str = "estimate",
        shots: int | None = None,
        seed: int | None = None,
    ) -> ExpectationValues | Samples:
        """Run ``mode`` (``"estimate"`` or ``"sample"``) at ``params``; see the module doc.

        Raises :class:`~control_sim.qpu.errors.QpuError` subclasses: ``UnknownCircuit``,
        ``BadParameters``, ``BadShots``, ``BadRequest`` (mode, seed), ``BadObservable``
        (estimate on a circuit registered without observables), ``UnsupportedCircuit``
        (estimate on a circuit measured mid-circuit), ``SimulationFailed``.
        """
        if mode == "estimate":
            return self.estimate(circuit_id, params, shots=shots, seed=seed)
        if mode == "sample":
            return self.sample(circuit_id, params, shots=shots, seed=seed)
        raise BadRequest("mode", expected="'estimate' or 'sample'", got=f"{mode!r:.64}")

    def estimate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
    ) -> ExpectationValues:
        """Expectation values of the registered observables; exact when ``shots`` is None."""
        c = self._get(circuit_id)
        x = _as_batch(params, c.reg)
        check_seed(seed)
        if not c.reg.estimable:
            raise UnsupportedCircuit(
                expected="a circuit without mid-circuit measurement (estimate mode)",
                got="one that measures, resets or branches before its end; use sample mode",
            )
        if not c.reg.observables:
            raise BadObservable(
                expected="a circuit registered with at least one observable (estimate mode)",
                got="none",
            )
        if shots is None:
            values = c.exact_program().run_exact(x)
            return ExpectationValues(values, np.zeros_like(values), None)
        n = check_shots(shots, minimum=2)
        return c.shots_program().run_estimate(x, n, self._seed(seed))

    def sample(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        shots: int | None,
        seed: int | None = None,
    ) -> Samples:
        """``shots`` outcomes per parameter vector, bit-packed (see :class:`Samples`)."""
        c = self._get(circuit_id)
        x = _as_batch(params, c.reg)
        check_seed(seed)
        n = check_shots(shots, minimum=1)
        program = c.sample_program()
        n_bytes = bytes_per_shot(program.num_bits)
        size = x.shape[0] * n * n_bytes
        if size > MAX_SAMPLE_BYTES:
            raise BadShots(
                expected=f"batch x shots x {n_bytes} bytes <= {MAX_SAMPLE_BYTES}",
                got=f"{x.shape[0]} x {n} x {n_bytes} = {size}",
            )
        return program.run_samples(x, n, self._seed(seed))

    def _seed(self, seed: int | None) -> int:
        """The simulator seed of a shot-based call: ``seed``, or the next from the stream."""
        if seed is None:
            return int(self._rng.integers(SEED_BOUND))
        return int(seed) % SEED_BOUND

    def _get(self, circuit_id: str) -> _Compiled:
        reg = self._registry.get(circuit_id)
        compiled = self._compiled.get(circuit_id)
        if compiled is None or compiled.reg is not reg:
            if len(self._compiled) >= self._registry.max_circuits:
                for stale in [k for k in self._compiled if k not in self._registry]:
                    del self._compiled[stale]
            compiled = _Compiled(reg, self._sim, direct=self._engine == "direct")
            self._compiled[circuit_id] = compiled
        return compiled


def _as_batch(params: ArrayLike, reg: RegisteredCircuit) -> NDArray[np.float64]:
    """Check ``params`` and return it as a C-contiguous float64 ``(batch, n_params)`` array."""
    n = reg.num_parameters
    expected_shape = f"({n},) or (batch, {n}) with 1 <= batch <= {MAX_BATCH}"
    try:
        arr = params if isinstance(params, np.ndarray) else np.asarray(params)
    except (ValueError, TypeError) as exc:
        raise BadParameters(expected=f"an array of shape {expected_shape}", got=str(exc)) from None
    if arr.dtype.kind not in "fiu":
        raise BadParameters(expected="real numbers (float64)", got=f"dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n or not 1 <= arr.shape[0] <= MAX_BATCH:
        names = ", ".join(reg.parameter_names[:8]) + (", ..." if n > 8 else "")
        raise BadParameters(
            expected=f"shape {expected_shape} (parameters {names})",
            got=f"shape {tuple(np.shape(params))}",
        )
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        where = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise BadParameters(expected="finite values", got=f"{arr[where]} at index {where}")
    return arr


class _Program:
    """Circuits compiled once for aer; a run binds a parameter batch and returns aer's data.

    Runs return one data dict per experiment, circuit-major: experiment ``i * batch + b``
    is circuit ``i`` at parameter vector ``b`` (aer's order).
    """

    def __init__(
        self,
        sim: AerSimulator,
        circuits: list[QuantumCircuit],
        parameters: Sequence[Parameter],
        *,
        shots: int,
        memory: bool,
        direct: bool,
    ) -> None:
        self._sim = sim
        self._circuits = circuits
        self._parameters = tuple(parameters)
        self._memory = memory
        # aer runs a circuit with no parameterized instruction once, whatever the bindings
        # (an input no gate uses is a parameter of the registration, not of any gate).
        self._binds_rows = any(
            inst.operation.is_parameterized() for c in circuits for inst in c.data
        )
        self.num_bits = circuits[0].num_clbits
        self._direct: DirectRun | None = None
        if direct:
            try:
                self._direct = DirectRun(sim, circuits, parameters, shots=shots, memory=memory)
            except Exception:  # aer internals moved: the public path still works
                log.warning("aer internals unavailable; using AerSimulator.run", exc_info=True)

    @property
    def direct(self) -> bool:
        """Whether runs take the direct path (:mod:`control_sim.qpu.aer_direct`)."""
        return self._direct is not None

    def run(self, x: NDArray[np.float64], *, shots: int, seed: int) -> list[dict[str, Any]]:
        if not self._binds_rows and x.shape[0] > 1:
            rows = [
                self.run(x[b : b + 1], shots=shots, seed=(seed + b) % SEED_BOUND)
                for b in range(len(x))
            ]
            per_circuit = [[r[i] for r in rows] for i in range(len(self._circuits))]
            return [d for circuit_rows in per_circuit for d in circuit_rows]
        if self._direct is not None:
            try:
                return self._direct.run(x, shots=shots, seed=seed)
            except SimulationFailed:
                raise  # aer ran, and said why it failed: the public path would too
            except Exception:  # the internals broke after verify: the public path still works
                log.warning("aer direct path failed; using AerSimulator.run", exc_info=True)
                self._direct = None
        return self._run_public(x, shots=shots, seed=seed)

    def _run_public(self, x: NDArray[np.float64], *, shots: int, seed: int) -> list[dict[str, Any]]:
        binds = {p: x[:, j] for j, p in enumerate(self._parameters)}
        result = self._sim.run(
            self._circuits,
            parameter_binds=[binds] * len(self._circuits) if self._binds_rows else None,
            shots=shots,
            seed_simulator=seed,
            memory=self._memory,
        ).result()
        if not result.success:
            raise SimulationFailed(str(result.status))
        return [result.data(i) for i in range(len(result.results))]

    def verify(self, x: NDArray[np.float64], *, shots: int, seed: int) -> None:
        """Compare the direct path with ``AerSimulator.run`` once; fall back if they differ."""
        if self._direct is None:
            return
        try:
            ok = same_data(
                self._direct.run(x, shots=shots, seed=seed),
                self._run_public(x, shots=shots, seed=seed),
            )
        except Exception:
            log.warning("aer direct path failed; using AerSimulator.run", exc_info=True)
            self._direct = None
            return
        if not ok:
            log.warning("aer direct path disagrees with AerSimulator.run; using the latter")
            self._direct = None


class _ExactProgram(_Program):
    def __init__(
        self, reg: RegisteredCircuit, base: QuantumCircuit, sim: AerSimulator, *, direct: bool
    ) -> None:
        circuit = base.copy()
        for k, obs in enumerate(reg.observables):
            circuit.save_expectation_value(
                obs, qubits=list(range(circuit.num_qubits)), label=_OBS_LABEL.format(k)
            )
        super().__init__(sim, [circuit], reg.parameters, shots=1, memory=False, direct=direct)
        self._labels = [_OBS_LABEL.format(k) for k in range(reg.num_observables)]

    def run_exact(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        data = self.run(x, shots=1, seed=0)
        labels = self._labels
        return np.array([[d[label] for label in labels] for d in data], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class _Group:
    """One measurement basis: which outcome bits each Pauli term reads, and its weights."""

    masks: NDArray[np.uint64]  # (terms,): outcome bits whose parity is the term's sign
    coeffs: NDArray[np.float64]  # (terms, n_observables)


class _ShotsProgram(_Program):
    def __init__(
        self, reg: RegisteredCircuit, base: QuantumCircuit, sim: AerSimulator, *, direct: bool
    ) -> None:
        n_obs = reg.num_observables
        self.constant = np.zeros(n_obs)
        labels: list[str] = []
        index: dict[str, int] = {}
        terms: list[tuple[int, int, float]] = []
        for k, obs in enumerate(reg.observables):
            for label, coeff in zip(obs.paulis.to_labels(), obs.coeffs.real, strict=True):
                if label.count("I") == len(label):
                    self.constant[k] += coeff
                    continue
                if label not in index:
                    index[label] = len(labels)
                    labels.append(label)
                terms.append((index[label], k, float(coeff)))
        weights = np.zeros((len(labels), n_obs))
        for i, k, coeff in terms:
            weights[i, k] += coeff
        offset = base.num_clbits
        circuits: list[QuantumCircuit] = []
        self.groups: list[_Group] = []
        if labels:
            for group in PauliList(labels).group_qubit_wise_commuting():
                members = [index[label] for label in group.to_labels()]
                circuits.append(_basis_circuit(base, group))
                masks = [
                    sum(
                        1 << (offset + q)
                        for q in range(base.num_qubits)
                        if labels[i][-1 - q] != "I"
                    )
                    for i in members
                ]
                self.groups.append(_Group(np.array(masks, dtype=np.uint64), weights[members]))
        else:  # only identity terms: nothing to measure
            circuits.append(base)
        super().__init__(sim, circuits, reg.parameters, shots=2, memory=False, direct=direct)

    def run_estimate(self, x: NDArray[np.float64], shots: int, seed: int) -> ExpectationValues:
        batch = x.shape[0]
        values = np.tile(self.constant, (batch, 1))
        variance = np.zeros_like(values)
        if self.groups:
            data = self.run(x, shots=shots, seed=seed)
            for g, group in enumerate(self.groups):
                for b in range(batch):
                    counts: dict[str, int] = data[g * batch + b]["counts"]
                    outcomes = np.fromiter((int(k, 16) for k in counts), np.uint64, len(counts))
                    weight = np.fromiter(counts.values(), np.float64, len(counts))
                    parity = np.bitwise_count(outcomes[:, None] & group.masks[None, :]) & 1
                    per_outcome = (1.0 - 2.0 * parity) @ group.coeffs  # (outcomes, n_obs)
                    mean = weight @ per_outcome / shots
                    spread = weight @ (per_outcome - mean) ** 2 / (shots - 1)
                    values[b] += mean
                    variance[b] += spread / shots
        return ExpectationValues(values, np.sqrt(variance), shots)


class _SampleProgram(_Program):
    def __init__(self, reg: RegisteredCircuit, sim: AerSimulator, *, direct: bool) -> None:
        circuit = _without_global_phase(reg.transpiled)
        if reg.circuit.num_clbits == 0:
            layout = circuit.layout
            physical = (
                layout.final_index_layout() if layout is not None else list(range(reg.num_qubits))
            )
            creg = ClassicalRegister(reg.num_qubits, "meas")
            circuit.add_register(creg)
            circuit.measure(physical, creg)
        super().__init__(sim, [circuit], reg.parameters, shots=1, memory=True, direct=direct)

    def run_samples(self, x: NDArray[np.float64], shots: int, seed: int) -> Samples:
        data = self.run(x, shots=shots, seed=seed)
        n_bytes = bytes_per_shot(self.num_bits)
        bits = np.empty((x.shape[0], shots, n_bytes), dtype=np.uint8)
        for b, d in enumerate(data):
            bits[b] = _pack_memory(d.get("memory") or ["0x0"] * shots, n_bytes)
        return Samples(bits, self.num_bits, shots)


def _without_global_phase(circuit: QuantumCircuit) -> QuantumCircuit:
    """A copy with global phase 0: no expectation value or sample can see it, and a
    parameterized one (transpiling makes them) would cost aer a bind per row."""
    copy = circuit.copy()
    copy.global_phase = 0
    return copy


def _pack_memory(memory: list[str], n_bytes: int) -> NDArray[np.uint8]:
    """aer's hex strings (``"0x5"``) to big-endian bytes, ``(shots, n_bytes)``."""
    if n_bytes <= 8:
        ints = np.fromiter((int(h, 16) for h in memory), np.uint64, len(memory))
        return ints.astype(">u8").view(np.uint8).reshape(len(memory), 8)[:, 8 - n_bytes :]
    raw = b"".join(int(h, 16).to_bytes(n_bytes, "big") for h in memory)
    return np.frombuffer(raw, dtype=np.uint8).reshape(len(memory), n_bytes)


def _basis_circuit(base: QuantumCircuit, group: PauliList) -> QuantumCircuit:
    """``base`` rotated so that every Pauli of ``group`` is diagonal, then fully measured."""
    circuit = base.copy()
    n = circuit.num_qubits
    for q in range(n):
        axis = next((label[-1 - q] for label in group.to_labels() if label[-1 - q] != "I"), "Z")
        if axis == "X":
            circuit.h(q)
        elif axis == "Y":
            circuit.sdg(q)
            circuit.h(q)
    creg = ClassicalRegister(n, "nl_basis")
    circuit.add_register(creg)
    circuit.measure(range(n), creg)
    return circuit


class _Compiled:
    """A registration's aer programs, each built on first use and kept."""

    def __init__(self, reg: RegisteredCircuit, sim: AerSimulator, *, direct: bool) -> None:
        self.reg = reg
        self._sim = sim
        self._direct = direct
        self._base: QuantumCircuit | None = None
        self._exact: _ExactProgram | None = None
        self._shots: _ShotsProgram | None = None
        self._sample: _SampleProgram | None = None
        # A fixed point to check the direct path against AerSimulator.run.
        self._probe = np.random.default_rng(0).uniform(-np.pi, np.pi, (2, reg.num_parameters))

    def base(self) -> QuantumCircuit:
        """The transpiled circuit without final measurements or global phase."""
        if self._base is None:
            self._base = _without_global_phase(
                self.reg.transpiled.remove_final_measurements(inplace=False)
            )
        return self._base

    def exact_program(self) -> _ExactProgram:
        if self._exact is None:
            program = _ExactProgram(self.reg, self.base(), self._sim, direct=self._direct)
            program.verify(self._probe, shots=1, seed=0)
            self._check_binding(program)
            self._exact = program
        return self._exact

    def _check_binding(self, program: _ExactProgram) -> None:
        """Compare aer with qiskit's Statevector once: aer has bound parameters wrongly before."""
        base = self.base()
        if base.num_qubits > _STATEVECTOR_CHECK_MAX_QUBITS:
            return
        got = program.run_exact(self._probe)
        present = set(base.parameters)
        for b, row in enumerate(self._probe):
            bound = base.assign_parameters(
                {p: v for p, v in zip(self.reg.parameters, row, strict=True) if p in present}
            )
            state = Statevector(bound)
            for k, obs in enumerate(self.reg.observables):
                want = float(np.real(state.expectation_value(obs)))
                tolerance = 1e-8 * (1.0 + float(np.abs(obs.coeffs).sum()))
                if abs(got[b, k] - want) > tolerance:
                    raise SimulationFailed(
                        f"aer gives {got[b, k]!r} for observable {k} where qiskit's "
                        f"Statevector gives {want!r}: aer binds a gate of this circuit wrongly "
                        f"(gates: {dict(base.count_ops())})"
                    )

    def shots_program(self) -> _ShotsProgram:
        if self._shots is None:
            self._shots = _ShotsProgram(self.reg, self.base(), self._sim, direct=self._direct)
            self._shots.verify(self._probe, shots=16, seed=1)
        return self._shots

    def sample_program(self) -> _SampleProgram:
        if self._sample is None:
            self._sample = _SampleProgram(self.reg, self._sim, direct=self._direct)
            self._sample.verify(self._probe, shots=16, seed=1)
        return self._sample
