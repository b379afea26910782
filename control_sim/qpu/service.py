"""The ``qpu`` service: the wire face of :class:`~control_sim.qpu.evaluator.QpuEvaluator`.

:class:`QpuService` turns one nearloop request into one reply. Its :meth:`QpuService.handle`
is a :class:`client.worker.Worker` handler; ``python -m control_sim qpu`` serves it. Every
request's header ``body`` is a map with an ``"op"``; docs/QPU_SERVICE.md is the reference:

============  ==========================================================  ==================
op            body (and array frames)                                     reply
============  ==========================================================  ==================
register      ``qasm3: str`` or ``qpy: true`` (+ one uint8 frame),        circuit summary
              ``observables: [[[label, coeff], ...], ...]``
describe      ``circuit: id``                                             circuit summary
estimate      ``circuit``, ``shots: null|int``, ``seed: null|int``        ``values``, ``stds``
              (+ one float64 frame, ``(P,)`` or ``(B, P)``)               float64 ``(B, K)``
sample        ``circuit``, ``shots: int``, ``seed: null|int`` (+ params)  packed uint8 bits
============  ==========================================================  ==================

A refusal raises a :class:`~control_sim.qpu.errors.QpuError`, whose ``type`` the
Worker puts on the wire (``bad_request``, ``unknown_circuit``, ``bad_parameters``, ...);
the service keeps serving. Keys a request carries beyond these are ignored.

>>> import numpy as np
>>> from client.messages import Message
>>> from client.wire import Header
>>> def request(body, *arrays):  # what the Worker hands a handler (here without the wire)
...     return Message(Header(id=1, kind="request", body=body), arrays)
>>> qpu = QpuService(seed=0)
>>> src = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'
>>> reg = qpu.handle(request({"op": "register", "qasm3": src, "observables": [[["Z", 1.0]]]}))
>>> reg.body["parameters"], reg.body["num_observables"], reg.body["estimable"]
(['a'], 1, True)
>>> estimate = {"op": "estimate", "circuit": reg.body["circuit"], "shots": None}
>>> values, stds = qpu.handle(request(estimate, np.array([np.pi / 3]))).arrays
>>> values.round(12), stds
(array([[0.5]]), array([[0.]]))
>>> qpu.handle(request(estimate, np.zeros(2)))
Traceback (most recent call last):
...
control_sim.qpu.errors.BadParameters: [bad_parameters] parameters: expected shape (1,) ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from client.messages import Message, Payload
from control_sim.qpu.circuits import RegisteredCircuit
from control_sim.qpu.errors import BadParameters, BadRequest
from control_sim.qpu.evaluator import QpuEvaluator

OPS: Final[tuple[str, ...]] = ("register", "describe", "estimate", "sample")
"""Every ``op`` the service answers."""
BIT_ORDER: Final = "big"
"""How a sample reply packs each shot: one big-endian integer of ``ceil(num_bits / 8)``
bytes, classical bit ``i`` being bit ``i % 8`` of byte ``n_bytes - 1 - i // 8`` (qiskit's
``BitArray`` layout). ``np.unpackbits(bits, axis=-1, bitorder="big")[..., ::-1]`` puts
bit ``i`` at index ``i``."""

_PARAMS_FRAME: Final = "exactly one float64 array frame of shape (P,) or (B, P)"
_OPS_TEXT: Final = ", ".join(repr(op) for op in OPS)


class QpuService:
    """Serve registered circuits over nearloop; see the module docstring for the wire ops.

    ``evaluator`` runs the circuits (a new :class:`QpuEvaluator` seeded with ``seed`` if
    None; give one or the other). Registration transpiles and compiles every program
    (``QpuEvaluator.prepare``), so an evaluation only binds parameters and simulates.
    Not thread-safe, like the evaluator: one service per worker thread.
    """

    def __init__(self, evaluator: QpuEvaluator | None = None, *, seed: int | None = None) -> None:
        if evaluator is not None and seed is not None:
            raise ValueError("give QpuService an evaluator or a seed, not both")
        self.evaluator = evaluator if evaluator is not None else QpuEvaluator(seed=seed)
        self._ops: dict[str, Callable[[Mapping[str, Any], Message], Payload]] = {
            "register": self._register,
            "describe": self._describe,
            "estimate": self._evaluate_request,
            "sample": self._evaluate_request,
        }

    def __repr__(self) -> str:
        return f"QpuService({self.evaluator!r})"

    def handle(self, message: Message) -> Payload:
        """Answer one request: the Worker handler.

        Raises :class:`~control_sim.qpu.errors.QpuError` subclasses for bad input:
        ``BadRequest`` (body not a map, ``op`` missing or unknown, register without a
        source), ``BadParameters`` (not exactly one float64 frame, wrong shape, not finite)
        and whatever the registry and evaluator raise.
        """
        body = message.body
        if not isinstance(body, Mapping):
            raise BadRequest(
                "body",
                expected=f"a map with an 'op' key (one of {_OPS_TEXT})",
                got=_describe_value(body),
            )
        op = body.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            got = "no 'op' key" if op is None else _describe_value(op)
            raise BadRequest("op", expected=f"one of {_OPS_TEXT}", got=got)
        return handler(body, message)

    def evaluate(self, body: Mapping[str, Any], params: NDArray[np.float64]) -> Payload:
        """Run an ``estimate`` or ``sample`` op whose ``body`` has been parsed already.

        ``params`` is float64 ``(P,)`` or ``(B, P)``. Checks nothing the evaluator does
        not (shape, finiteness, shots, seed, circuit id), so a caller may run it once per
        shot batch. Returns the reply: for ``estimate``, body ``{"circuit", "shots"}`` and
        arrays ``(values, stds)``, float64 ``(B, K)``; for ``sample``, body ``{"circuit",
        "shots", "num_bits", "bit_order"}`` and arrays ``(bits,)``, uint8
        ``(B, shots, ceil(num_bits / 8))`` (see :data:`BIT_ORDER`).
        """
        circuit: Any = body.get("circuit")
        op = body.get("op")
        if op == "estimate":
            est = self.evaluator.estimate(
                circuit, params, shots=body.get("shots"), seed=body.get("seed")
            )
            return Payload(
                body={"circuit": circuit, "shots": est.shots}, arrays=(est.values, est.std_errors)
            )
        if op == "sample":
            samples = self.evaluator.sample(
                circuit, params, shots=body.get("shots"), seed=body.get("seed")
            )
            return Payload(
                body={
                    "circuit": circuit,
                    "shots": samples.shots,
                    "num_bits": samples.num_bits,
                    "bit_order": BIT_ORDER,
                },
                arrays=(samples.bits,),
            )
        raise BadRequest("op", expected="'estimate' or 'sample'", got=_describe_value(op))

    def describe(self, circuit_id: str) -> dict[str, Any]:
        """The summary a ``register`` or ``describe`` reply carries for ``circuit_id``."""
        return _summary(self.evaluator.registry.get(circuit_id))

    def _register(self, body: Mapping[str, Any], message: Message) -> Payload:
        registry = self.evaluator.registry
        observables = body.get("observables")
        if observables is None:
            observables = []
        qasm3 = body.get("qasm3")
        qpy = body.get("qpy")
        before = len(registry)
        if qasm3 is not None and not qpy:
            _expect_frames(message.arrays, 0, "register with 'qasm3'")
            circuit_id = registry.register_qasm3(qasm3, observables)
        elif qpy and qasm3 is None:
            data = _qpy_frame(message.arrays)
            circuit_id = registry.register_qpy(data, observables)
        else:
            got = "both" if qasm3 is not None else "neither"
            raise BadRequest(
                "register",
                expected="one of 'qasm3' (OpenQASM 3 text) and 'qpy': true (with one uint8 "
                "array frame holding the qpy bytes)",
                got=got,
            )
        try:
            self.evaluator.prepare(circuit_id)
        except Exception:
            if len(registry) > before:  # a registration that cannot run is not kept
                registry.unregister(circuit_id)
            raise
        return Payload(body=self.describe(circuit_id))

    def _describe(self, body: Mapping[str, Any], message: Message) -> Payload:
        circuit: Any = body.get("circuit")
        return Payload(body=self.describe(circuit))

    def parameters(self, message: Message) -> NDArray[np.float64]:
        """The request's parameter array: exactly one float64 frame, (P,) or (B, P).

        Raises :class:`~control_sim.qpu.errors.BadParameters` otherwise; the evaluator
        checks the length against the circuit.
        """
        arrays = message.arrays
        if len(arrays) != 1:
            raise BadParameters(expected=_PARAMS_FRAME, got=f"{len(arrays)} array frames")
        params = arrays[0]
        if params.dtype.kind != "f" or params.dtype.itemsize != 8:
            raise BadParameters(
                expected=_PARAMS_FRAME, got=f"dtype {params.dtype} shape {params.shape}"
            )
        if not params.flags.aligned:  # a frame's memory need not be 8-byte aligned
            params = params.copy()
        return params

    def _evaluate_request(self, body: Mapping[str, Any], message: Message) -> Payload:
        return self.evaluate(body, self.parameters(message))


def _summary(reg: RegisteredCircuit) -> dict[str, Any]:
    return {
        "circuit": reg.circuit_id,
        "num_qubits": reg.num_qubits,
        "num_parameters": reg.num_parameters,
        "parameters": list(reg.parameter_names),
        "num_observables": reg.num_observables,
        "estimable": reg.estimable,
    }


def _expect_frames(arrays: Sequence[NDArray[Any]], n: int, what: str) -> None:
    if len(arrays) != n:
        raise BadRequest(what, expected=f"{n} array frames", got=f"{len(arrays)}")


def _qpy_frame(arrays: Sequence[NDArray[Any]]) -> bytes:
    """The qpy bytes of a ``register`` with ``qpy: true``: its one uint8 array frame."""
    _expect_frames(arrays, 1, "register with 'qpy'")
    data = arrays[0]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise BadRequest(
            "register with 'qpy'",
            expected="one uint8 array frame of shape (n,) holding the qpy bytes",
            got=f"dtype {data.dtype} shape {data.shape}",
        )
    return data.tobytes()


def _describe_value(value: object) -> str:
    """A bounded description of a wire value for an error message."""
    if value is None:
        return "nothing (nil)"
    return f"{type(value).__name__} {value!r:.60}"


__all__ = ["BIT_ORDER", "OPS", "QpuService"]
