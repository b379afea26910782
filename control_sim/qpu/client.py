"""The optimizer's side of the ``qpu`` service: register once, then send only parameters.

:class:`QpuClient` wraps a :class:`client.Client` and speaks the ``qpu`` service's wire
format (see ``control_sim.qpu.service``): a request's body is a msgpack map with an
``"op"``; parameters travel as one float64 array frame, results come back as array
frames. A circuit and its observables are registered once
(:meth:`QpuClient.register_qasm3`, :meth:`QpuClient.register_qpy`); after that a call
carries the circuit id, a few scalars and the parameter array, nothing else.

Errors of the service arrive as :class:`client.RemoteError` with ``.type`` set to the
service's kind (``bad_parameters``, ``unknown_circuit``, ``bad_shots``, ...); a reply of
the wrong shape raises :class:`client.ProtocolError`.

This module imports only the client library and numpy, so an optimizer process needs
neither qiskit nor aer.

>>> with Client(endpoint) as c:                                     # doctest: +SKIP
...     qpu = QpuClient(c)
...     info = qpu.register_qasm3(h2.ANSATZ_QASM3, [list(h2.PAULI_TERMS)])
...     values, stds = qpu.estimate(info.circuit, np.zeros(info.num_parameters))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from client import Client, Message, ProtocolError
from control_sim.qpu.schema import SEED_BOUND

DEFAULT_SERVICE: Final = "qpu"

Observable: TypeAlias = Sequence[tuple[str, float]] | Mapping[str, float]
"""One observable: ``[("XX", 0.18), ("ZI", -0.39), ...]`` or ``{"XX": 0.18, ...}``;
qiskit Pauli labels (rightmost character on qubit 0), real coefficients."""
EnergyFn: TypeAlias = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""``energy(X) -> energies``: ``X`` float64 ``(B, P)``, ``energies`` float64 ``(B,)``."""


@dataclass(frozen=True, slots=True)
class CircuitInfo:
    """What the service answered to a registration: the id to call, and the shapes.

    ``parameters[i]`` is the name bound to ``x[i]`` of every parameter vector.
    """

    circuit: str
    num_qubits: int
    num_parameters: int
    parameters: tuple[str, ...]
    num_observables: int
    estimable: bool
    """False for a circuit measured mid-circuit: it can be sampled, not estimated."""

    def __post_init__(self) -> None:
        if not self.circuit:
            raise ValueError("circuit id is empty")
        if min(self.num_qubits, self.num_parameters, self.num_observables) < 0:
            raise ValueError(f"negative count in {self!r}")
        if len(self.parameters) != self.num_parameters:
            raise ValueError(
                f"{len(self.parameters)} parameter names for {self.num_parameters} parameters"
            )

    @classmethod
    def from_reply(cls, body: Any) -> CircuitInfo:
        """Build from a register reply's body; raises ProtocolError if it is malformed."""
        try:
            params = body["parameters"]
            if not isinstance(params, (list, tuple)) or not all(isinstance(p, str) for p in params):
                raise TypeError(f"parameters: expected a list of names, got {params!r:.80}")
            return cls(
                circuit=_typed(body["circuit"], str, "circuit"),
                num_qubits=_typed(body["num_qubits"], int, "num_qubits"),
                num_parameters=_typed(body["num_parameters"], int, "num_parameters"),
                parameters=tuple(params),
                num_observables=_typed(body["num_observables"], int, "num_observables"),
                estimable=_typed(body["estimable"], bool, "estimable"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed qpu register reply: {exc!r:.200}") from None


def _typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name}: expected {kind.__name__}, got {value!r:.80}")
    return value


@dataclass(frozen=True, eq=False)
class SampleResult:
    """Measurement outcomes, bit-packed: uint8 ``bits`` of shape ``(B, shots, n_bytes)``.

    ``n_bytes = ceil(num_bits / 8)``; ``bit_order`` is the service's description of where
    classical bit ``i`` sits (qiskit's ``BitArray`` layout: big-endian, bit 0 in the
    lowest bit of the last byte).
    """

    bits: NDArray[np.uint8]
    num_bits: int
    bit_order: str | None = None

    @property
    def shots(self) -> int:
        """Outcomes per parameter vector."""
        return int(self.bits.shape[1])

    def to_ints(self) -> NDArray[np.uint64]:
        """Each outcome as an integer (classical bit ``i`` is bit ``i``), ``(B, shots)``;
        for at most 64 bits."""
        if self.num_bits > 64:
            raise ValueError(f"{self.num_bits} bits do not fit in uint64")
        out = np.zeros(self.bits.shape[:2], dtype=np.uint64)
        for byte in range(self.bits.shape[2]):
            out = (out << np.uint64(8)) | self.bits[:, :, byte].astype(np.uint64)
        return out

    def __repr__(self) -> str:
        b, shots, _ = self.bits.shape
        return f"SampleResult({b}x{shots} shots of {self.num_bits} bits)"


class QpuClient:
    """Calls the ``qpu`` service through a broker, on a :class:`client.Client` it borrows.

    Every call waits at most ``timeout`` seconds (``RequestTimeout`` after that). Not
    thread-safe, like the client under it.
    """

    def __init__(self, client: Client, service: str = DEFAULT_SERVICE, *, timeout: float = 5.0):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        self.client = client
        self.service = service
        self.timeout = timeout

    def __repr__(self) -> str:
        where = self.client.endpoint
        return f"QpuClient({self.service!r} via {where!r}, timeout={self.timeout:g} s)"

    def register_qasm3(self, source: str, observables: Sequence[Observable] = ()) -> CircuitInfo:
        """Register an OpenQASM 3 program (``input float[64]`` parameters) and observables.

        Registering the same thing again returns the same id. Raises RemoteError with
        ``type`` ``invalid_qasm``, ``bad_observable``, ``unsupported_circuit``, ...
        """
        body = {"op": "register", "qasm3": source, "observables": _wire_observables(observables)}
        return CircuitInfo.from_reply(self._call(body).body)

    def register_qpy(self, data: bytes, observables: Sequence[Observable] = ()) -> CircuitInfo:
        """Register a circuit serialized with ``qiskit.qpy.dump`` (exactly one circuit).

        Raises RemoteError with ``type`` ``invalid_qpy``, ``bad_observable``, ...
        """
        body = {"op": "register", "qpy": True, "observables": _wire_observables(observables)}
        frame = np.frombuffer(bytes(data), dtype=np.uint8)
        return CircuitInfo.from_reply(self._call(body, frame).body)

    def estimate(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Expectation values of the circuit's observables at ``params``.

        ``params`` is ``(P,)`` or ``(B, P)``, in :attr:`CircuitInfo.parameters` order.
        Returns ``(values, stds)``, float64 ``(B, K)`` each (``B`` is 1 for a 1-D input):
        exact with zero ``stds`` when ``shots`` is None, else ``shots`` shots per
        measurement basis with standard errors. ``seed`` fixes the simulator's seed;
        None lets the service draw one.
        """
        body = {"op": "estimate", "circuit": circuit_id, "shots": shots, "seed": seed}
        reply = self._call(body, _params(params))
        if len(reply.arrays) != 2:
            raise ProtocolError(f"qpu estimate replied with {len(reply.arrays)} arrays, not 2")
        values, stds = reply.arrays
        if values.ndim != 2 or values.shape != stds.shape:
            raise ProtocolError(
                f"qpu estimate replied with shapes {values.shape} and {stds.shape}, "
                "expected two equal (B, K)"
            )
        return values.astype(np.float64, copy=False), stds.astype(np.float64, copy=False)

    def sample(
        self, circuit_id: str, params: ArrayLike, *, shots: int, seed: int | None = None
    ) -> SampleResult:
        """``shots`` outcomes per parameter vector of the circuit's classical bits (of every
        qubit when it has none), bit-packed; see :class:`SampleResult`."""
        body = {"op": "sample", "circuit": circuit_id, "shots": shots, "seed": seed}
        reply = self._call(body, _params(params))
        if len(reply.arrays) != 1:
            raise ProtocolError(f"qpu sample replied with {len(reply.arrays)} arrays, not 1")
        bits = reply.arrays[0]
        meta = reply.body if isinstance(reply.body, Mapping) else {}
        num_bits = meta.get("num_bits")
        if not isinstance(num_bits, int) or bits.dtype != np.uint8 or bits.ndim != 3:
            raise ProtocolError(
                f"qpu sample replied with {bits.dtype}{list(bits.shape)} and num_bits "
                f"{num_bits!r:.40}, expected uint8 (B, shots, n_bytes) and an int"
            )
        order = meta.get("bit_order")
        return SampleResult(bits, num_bits, order if isinstance(order, str) else None)

    def energy_fn(
        self, circuit_id: str, *, shots: int | None = None, seed: int | None = None
    ) -> EnergyFn:
        """``energy(X) -> values``: observable 0 at each row of ``X`` (``(B, P)`` -> ``(B,)``).

        This is what :func:`control_sim.vqe.driver.run_vqe` minimizes: one request per call.
        With ``shots``, each call gets its own simulator seed, drawn from a generator
        seeded with ``seed`` (the way ``QpuEvaluator(seed=seed)`` draws them in-process),
        so a run is reproducible and its calls are independent; ``seed=None`` leaves the
        seeds to the service.
        """
        rng = np.random.default_rng(seed) if shots is not None and seed is not None else None
        body: dict[str, Any] = {"op": "estimate", "circuit": circuit_id, "shots": shots}
        body["seed"] = None
        request = self.client.request
        service, timeout = self.service, self.timeout

        def energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
            if rng is not None:
                body["seed"] = int(rng.integers(SEED_BOUND))
            reply = request(service, body, _params(xs), timeout=timeout)
            if len(reply.arrays) != 2 or reply.arrays[0].ndim != 2:
                raise ProtocolError(f"qpu estimate replied with {reply!r:.200}")
            return np.asarray(reply.arrays[0][:, 0], dtype=np.float64)

        return energy

    def _call(self, body: dict[str, Any], *arrays: NDArray[Any]) -> Message:
        return self.client.request(self.service, body, *arrays, timeout=self.timeout)


def _params(params: ArrayLike) -> NDArray[np.float64]:
    """The parameter frame: C-contiguous float64 (no copy when it already is one)."""
    return np.ascontiguousarray(params, dtype=np.float64)


def _wire_observables(observables: Sequence[Observable]) -> list[list[list[Any]]]:
    """``[[[label, coeff], ...], ...]`` with plain str and float, as msgpack carries them."""
    out = []
    for obs in observables:
        terms = obs.items() if isinstance(obs, Mapping) else obs
        out.append([[str(label), float(coeff)] for label, coeff in terms])
    return out
