"""Register a parameterized circuit and its observables once; evaluate it many times by id.

A registration takes the circuit as OpenQASM 3 text (:meth:`CircuitRegistry.register_qasm3`)
or qpy bytes (:meth:`CircuitRegistry.register_qpy`) and zero or more observables, each a
list of ``(pauli_label, coefficient)`` pairs (the msgpack-friendly form) or a
``SparsePauliOp``. The registry parses and checks them, transpiles the circuit once for
the AerSimulator's gate set (less the gates whose parameters aer binds wrongly, see
:data:`AER_MISBOUND_GATES`) with a fixed ``seed_transpiler``, maps the observables onto the
transpiled circuit's qubits (``SparsePauliOp.apply_layout``) and keeps the result under
an id: the SHA-256 of the source, the observables and the transpile settings, so
registering the same thing twice returns the same id and costs nothing.

Conventions every caller relies on:

- **Parameter order** is ``circuit.parameters`` of the parsed circuit, which qiskit sorts
  by name as plain strings (``t10`` sorts before ``t2``; a ``ParameterVector``'s elements
  sort by index). A parameter vector ``x`` binds ``x[i]`` to
  ``RegisteredCircuit.parameter_names[i]``. An OpenQASM 3 ``input float[64] name;`` becomes
  a parameter named ``name``; zero-pad numbered names (``t00``, ``t01``, ...) past ten.
- **Pauli labels** are qiskit's: the rightmost character acts on qubit 0, and a label has
  exactly one character (``I``, ``X``, ``Y``, ``Z``) per qubit of the circuit.
- Coefficients are real and finite: observables are Hermitian.
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from qiskit import qasm3, qpy, transpile  # type: ignore[import-untyped, unused-ignore]
from qiskit.circuit import CONTROL_FLOW_OP_NAMES, Parameter, QuantumCircuit  # type: ignore[import-untyped, unused-ignore]
from qiskit.circuit.library import get_standard_gate_name_mapping  # type: ignore[import-untyped, unused-ignore]
from qiskit.quantum_info import SparsePauliOp  # type: ignore[import-untyped, unused-ignore]
from qiskit_aer import AerSimulator

from control_sim.qpu.errors import (
    BadObservable,
    InvalidQasm,
    InvalidQpy,
    TooManyCircuits,
    UnknownCircuit,
    UnsupportedCircuit,
)

DEFAULT_MAX_CIRCUITS: Final = 64
"""How many circuits a registry holds unless told otherwise."""
MAX_QUBITS: Final = 24
"""Widest circuit accepted: a 24-qubit statevector is 256 MiB of complex128."""
MAX_PARAMETERS: Final = 4096
MAX_OBSERVABLES: Final = 64
MAX_TERMS: Final = 4096
"""Most Pauli terms in one observable."""
MAX_SOURCE_BYTES: Final = 4 * 1024 * 1024
"""Largest OpenQASM 3 text (UTF-8) or qpy payload accepted."""
DEFAULT_SEED_TRANSPILER: Final = 20250101
DEFAULT_OPTIMIZATION_LEVEL: Final = 1

PauliTerms: TypeAlias = SparsePauliOp | Sequence[tuple[str, float]] | Mapping[str, float]
"""One observable: ``[("XX", 0.18), ("ZI", -0.39), ...]``, ``{"XX": 0.18}`` or a SparsePauliOp."""

_PAULI_CHARS: Final = frozenset("IXYZ")
# qiskit-aer (0.16 through 0.18 at least) silently ignores the bound value of a parameterized
# controlled rotation or phase (Qiskit/qiskit-aer#2323, #2391, #2403): keep these out of the
# basis, so that transpile decomposes them into gates whose binding aer gets right.
AER_MISBOUND_GATES: Final = frozenset({"cp", "crx", "cry", "crz", "cu", "cu1", "cu3"})
# Left after the final measurements are stripped, these make a circuit sample-only.
_NON_UNITARY_OPS: Final = frozenset({"measure", "reset"}) | frozenset(CONTROL_FLOW_OP_NAMES)


@dataclass(frozen=True, eq=False)
class RegisteredCircuit:
    """A registered circuit, transpiled for aer, with its observables mapped onto its qubits.

    ``transpiled`` is what runs; ``observables[k]`` acts on ``transpiled``'s qubits.
    ``parameters[i]`` is bound to ``x[i]`` of every parameter vector.
    ``estimable`` is False for a circuit measured (or reset) before its end: estimate mode
    needs a pure state, so such a circuit is sample-only (and may not carry observables).
    """

    circuit_id: str
    source_format: Literal["qasm3", "qpy"]
    circuit: QuantumCircuit
    transpiled: QuantumCircuit
    parameters: tuple[Parameter, ...]
    observables: tuple[SparsePauliOp, ...]
    estimable: bool

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the parameters, in binding order."""
        return tuple(p.name for p in self.parameters)

    @property
    def num_parameters(self) -> int:
        """Length of every parameter vector."""
        return len(self.parameters)

    @property
    def num_qubits(self) -> int:
        """Width of the circuit as registered (observable labels have this many characters)."""
        return int(self.circuit.num_qubits)

    @property
    def num_observables(self) -> int:
        """Number of observables: the width of every estimate."""
        return len(self.observables)

    def __repr__(self) -> str:
        return (
            f"RegisteredCircuit(id={self.circuit_id!r}, {self.source_format}, "
            f"qubits={self.num_qubits}, parameters={list(self.parameter_names)}, "
            f"observables={self.num_observables}, depth={self.transpiled.depth()})"
        )


class CircuitRegistry:
    """A bounded map from circuit id to :class:`RegisteredCircuit`; see the module docstring.

    ``max_circuits`` bounds the registrations (a new one past it raises
    :class:`TooManyCircuits`); ``seed_transpiler`` and ``optimization_level`` go to
    ``qiskit.transpile``; ``backend`` (an AerSimulator) gives the gate set. Not thread-safe.

    >>> reg = CircuitRegistry(max_circuits=2)
    >>> src = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'
    >>> cid = reg.register_qasm3(src, [[("Z", 1.0)], {"X": 0.5}])
    >>> reg.register_qasm3(src, [[("Z", 1.0)], {"X": 0.5}]) == cid, len(reg)
    (True, 1)
    >>> reg.get(cid).parameter_names
    ('a',)
    """

    def __init__(
        self,
        *,
        max_circuits: int = DEFAULT_MAX_CIRCUITS,
        seed_transpiler: int = DEFAULT_SEED_TRANSPILER,
        optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
        backend: AerSimulator | None = None,
    ) -> None:
        if max_circuits < 1:
            raise ValueError(f"max_circuits must be >= 1, got {max_circuits}")
        self._max_circuits = max_circuits
        self._seed_transpiler = seed_transpiler
        self._optimization_level = optimization_level
        self._basis_gates = transpile_basis(
            backend if backend is not None else AerSimulator(method="statevector")
        )
        self._circuits: dict[str, RegisteredCircuit] = {}

    @property
    def max_circuits(self) -> int:
        """How many registrations the registry holds at most."""
        return self._max_circuits

    def __len__(self) -> int:
        return len(self._circuits)

    def __contains__(self, circuit_id: object) -> bool:
        return circuit_id in self._circuits

    def ids(self) -> list[str]:
        """Registered ids, oldest first."""
        return list(self._circuits)

    def __repr__(self) -> str:
        return (
            f"CircuitRegistry({len(self)}/{self._max_circuits} circuits, "
            f"seed_transpiler={self._seed_transpiler}, "
            f"optimization_level={self._optimization_level})"
        )

    def get(self, circuit_id: str) -> RegisteredCircuit:
        """The registration under ``circuit_id``; raises :class:`UnknownCircuit`."""
        try:
            return self._circuits[circuit_id]
        except (KeyError, TypeError):
            raise UnknownCircuit(circuit_id, registered=len(self._circuits)) from None

    def unregister(self, circuit_id: str) -> None:
        """Forget a circuit; raises :class:`UnknownCircuit` if it is not registered."""
        self.get(circuit_id)
        del self._circuits[circuit_id]

    def register_qasm3(self, source: str, observables: Sequence[PauliTerms] = ()) -> str:
        """Register an OpenQASM 3 program (``input float[64] name;`` declares a parameter).

        Returns the circuit id. Raises :class:`InvalidQasm` (with the parser's text),
        :class:`BadObservable`, :class:`UnsupportedCircuit` or :class:`TooManyCircuits`.
        """
        if not isinstance(source, str):
            raise InvalidQasm.not_text(source)
        encoded = source.encode("utf-8", errors="surrogatepass")
        if len(encoded) > MAX_SOURCE_BYTES:
            raise InvalidQasm(f"got {len(encoded)} bytes, more than {MAX_SOURCE_BYTES}")
        key = self._key(b"qasm3", encoded, observables)
        if key in self._circuits:
            return key
        self._check_room()
        if not source.strip():
            raise InvalidQasm("got an empty text")
        try:
            circuit = qasm3.loads(source)
        except Exception as exc:  # the importer raises many kinds on bad input; all mean "bad"
            raise InvalidQasm(f"the parser said: {_describe_parse_error(exc)}") from exc
        return self._add(key, "qasm3", circuit, observables)

    def register_qpy(self, data: bytes, observables: Sequence[PauliTerms] = ()) -> str:
        """Register the single circuit held in qpy bytes (``qiskit.qpy.dump``).

        Returns the circuit id. Raises :class:`InvalidQpy`, :class:`BadObservable`,
        :class:`UnsupportedCircuit` or :class:`TooManyCircuits`.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidQpy(f"got {type(data).__name__}, not bytes")
        raw = bytes(data)
        if len(raw) > MAX_SOURCE_BYTES:
            raise InvalidQpy(f"got {len(raw)} bytes, more than {MAX_SOURCE_BYTES}")
        key = self._key(b"qpy", raw, observables)
        if key in self._circuits:
            return key
        self._check_room()
        try:
            loaded = qpy.load(io.BytesIO(raw))
        except Exception as exc:  # qpy.load raises struct.error, QiskitError, ... on bad bytes
            raise InvalidQpy(f"qpy.load said {type(exc).__name__}: {exc}") from exc
        if len(loaded) != 1 or not isinstance(loaded[0], QuantumCircuit):
            kinds = ", ".join(type(c).__name__ for c in loaded) or "nothing"
            raise InvalidQpy(f"got {len(loaded)} programs ({kinds})")
        return self._add(key, "qpy", loaded[0], observables)

    def _check_room(self) -> None:
        if len(self._circuits) >= self._max_circuits:
            raise TooManyCircuits(self._max_circuits)

    def _key(self, tag: bytes, source: bytes, observables: Sequence[PauliTerms]) -> str:
        h = hashlib.sha256()
        settings = f"{self._seed_transpiler}/{self._optimization_level}/".encode()
        h.update(tag + b"\0" + settings + source + b"\0")
        try:
            h.update(repr(_canonical_observables(observables)).encode())
        except Exception:  # malformed observables are reported by _parse_observables below
            h.update(b"?" + repr(observables).encode(errors="replace"))
        return h.hexdigest()[:32]

    def _add(
        self,
        key: str,
        source_format: Literal["qasm3", "qpy"],
        circuit: QuantumCircuit,
        observables: Sequence[PauliTerms],
    ) -> str:
        if circuit.num_qubits > MAX_QUBITS:
            raise UnsupportedCircuit(
                expected=f"at most {MAX_QUBITS} qubits", got=f"{circuit.num_qubits}"
            )
        if circuit.num_parameters > MAX_PARAMETERS:
            raise UnsupportedCircuit(
                expected=f"at most {MAX_PARAMETERS} parameters", got=f"{circuit.num_parameters}"
            )
        ops = _parse_observables(observables, circuit.num_qubits)
        estimable = _only_final_measurements(circuit)
        if ops and not estimable:
            raise UnsupportedCircuit(
                expected="no measurement, reset or classical control before the end "
                "(a circuit with observables is run in estimate mode)",
                got="a circuit that measures, resets or branches mid-circuit",
            )
        transpiled = transpile(
            circuit,
            basis_gates=self._basis_gates,
            optimization_level=self._optimization_level,
            seed_transpiler=self._seed_transpiler,
        )
        laid_out = tuple(op.apply_layout(transpiled.layout) for op in ops)
        self._circuits[key] = RegisteredCircuit(
            circuit_id=key,
            source_format=source_format,
            circuit=circuit,
            transpiled=transpiled,
            parameters=tuple(circuit.parameters),
            observables=laid_out,
            estimable=estimable,
        )
        return key


def transpile_basis(backend: AerSimulator) -> list[str]:
    """The gates circuits are transpiled to: aer's native standard gates minus
    :data:`AER_MISBOUND_GATES`, plus measure, reset, delay and control flow."""
    standard = get_standard_gate_name_mapping()
    gates = [
        name
        for name in backend.configuration().basis_gates
        if name in standard and name not in AER_MISBOUND_GATES
    ]
    return [*gates, "measure", "reset", "delay", *sorted(CONTROL_FLOW_OP_NAMES)]


def _canonical_observables(observables: Sequence[PauliTerms]) -> list[list[tuple[str, str]]]:
    out = []
    for obs in observables:
        terms = _terms(obs)
        out.append([(repr(label), _coefficient_key(coeff)) for label, coeff in terms])
    return out


def _coefficient_key(coeff: object) -> str:
    return repr(complex(coeff)) if isinstance(coeff, numbers.Complex) else repr(coeff)


def _terms(obs: PauliTerms) -> list[tuple[object, ...]]:
    if isinstance(obs, SparsePauliOp):
        return list(zip(obs.paulis.to_labels(), obs.coeffs.tolist(), strict=True))
    if isinstance(obs, Mapping):
        return list(obs.items())
    return [tuple(term) for term in obs]


def _parse_observables(observables: Sequence[PauliTerms], num_qubits: int) -> list[SparsePauliOp]:
    if isinstance(observables, str | bytes | Mapping | SparsePauliOp):
        raise BadObservable(
            expected="a list of observables, each a list of (label, coefficient) pairs",
            got=type(observables).__name__,
        )
    try:
        listed = list(observables)
    except TypeError:
        raise BadObservable(
            expected="a list of observables", got=type(observables).__name__
        ) from None
    if len(listed) > MAX_OBSERVABLES:
        raise BadObservable(expected=f"at most {MAX_OBSERVABLES} observables", got=f"{len(listed)}")
    return [_parse_observable(obs, k, num_qubits) for k, obs in enumerate(listed)]


def _parse_observable(obs: PauliTerms, index: int, num_qubits: int) -> SparsePauliOp:
    if isinstance(obs, str | bytes):
        raise BadObservable(
            expected="a list of (label, coefficient) pairs, a {label: coefficient} map "
            "or a SparsePauliOp",
            got=f"{type(obs).__name__} {obs!r:.60}",
            index=index,
        )
    try:
        terms = _terms(obs)
    except TypeError:
        raise BadObservable(
            expected="a list of (label, coefficient) pairs", got=type(obs).__name__, index=index
        ) from None
    if not 1 <= len(terms) <= MAX_TERMS:
        raise BadObservable(
            expected=f"between 1 and {MAX_TERMS} terms", got=f"{len(terms)}", index=index
        )
    labels: list[str] = []
    coeffs: list[float] = []
    for t, term in enumerate(terms):
        if len(term) != 2:
            raise BadObservable(
                expected="(label, coefficient) pairs", got=f"term {t} = {term!r:.60}", index=index
            )
        label, coeff = term
        if not isinstance(label, str) or not set(label) <= _PAULI_CHARS:
            raise BadObservable(
                expected="labels made of I, X, Y, Z",
                got=f"term {t} label {label!r:.60}",
                index=index,
            )
        if len(label) != num_qubits:
            raise BadObservable(
                expected=f"labels of length {num_qubits}, one character per circuit qubit",
                got=f"term {t} label {label!r:.60} of length {len(label)}",
                index=index,
            )
        labels.append(label)
        coeffs.append(_real_coefficient(coeff, index, t))
    return SparsePauliOp(labels, coeffs)


def _real_coefficient(coeff: object, index: int, t: int) -> float:
    if isinstance(coeff, bool) or not isinstance(coeff, numbers.Complex):
        raise BadObservable(
            expected="real finite coefficients",
            got=f"term {t} coefficient {coeff!r:.60}",
            index=index,
        )
    value = complex(coeff)
    if value.imag != 0.0 or not math.isfinite(value.real):
        raise BadObservable(
            expected="real finite coefficients (a Hermitian observable)",
            got=f"term {t} coefficient {coeff!r:.60}",
            index=index,
        )
    return float(value.real)


def _only_final_measurements(circuit: QuantumCircuit) -> bool:
    """True if nothing but measurements (and barriers) follows the unitary part on each qubit."""
    stripped = circuit.remove_final_measurements(inplace=False)
    return not any(inst.operation.name in _NON_UNITARY_OPS or inst.clbits for inst in stripped.data)


def _describe_parse_error(exc: BaseException) -> str:
    """Find the offending token in an OpenQASM 3 parse failure (ANTLR buries it in the chain)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        token = getattr(e, "offendingToken", None)
        if token is not None:
            return (
                f"syntax error at line {token.line}, column {token.column + 1}, "
                f"near {token.text!r} ({type(e).__name__})"
            )
        stack.extend([e.__cause__, e.__context__])
        stack.extend(a for a in e.args if isinstance(a, BaseException))
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
