"""The ``qpu`` service: the wire face of :class:`~control_sim.qpu.evaluator.QpuEvaluator`.

:class:`QpuService` turns one nearloop request into one reply. Its :meth:`QpuService.handle`
is a :class:`client.worker.Worker` handler; ``python -m control_sim qpu`` serves it. Every
request's header ``body`` is a map with an ``"op"``: ``register``, ``describe``,
``estimate`` or ``sample``. Their bodies, frames and replies are the types of
:mod:`control_sim.qpu.schema`, through which this module reads requests and builds
replies; docs/QPU_SERVICE.md is the reference.

A refusal raises a :class:`~control_sim.qpu.errors.QpuError`, whose ``type`` the
Worker puts on the wire (``bad_request``, ``unknown_circuit``, ``bad_parameters``, ...);
the service keeps serving. Keys a request carries beyond the schema's are ignored.

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

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from client.messages import Message, Payload
from control_sim.qpu.circuits import RegisteredCircuit
from control_sim.qpu.errors import BadRequest
from control_sim.qpu.evaluator import QpuEvaluator
from control_sim.qpu.metrics import INVALID_OP, QpuMetrics
from control_sim.qpu.schema import (
    CircuitInfo,
    Describe,
    Estimate,
    EstimateReply,
    Evaluation,
    EvaluationReply,
    Register,
    Sample,
    SampleReply,
    read_params,
    request_op,
)


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
        self.metrics = QpuMetrics()
        """Time and errors per op, for ``/metrics`` (:mod:`control_sim.qpu.metrics`)."""
        self._ops: dict[str, Callable[[Mapping[str, Any], Message], Payload]] = {
            "register": self._register,
            "describe": self._describe,
            "estimate": self._estimate,
            "sample": self._sample,
        }

    def __repr__(self) -> str:
        return f"QpuService({self.evaluator!r})"

    def handle(self, message: Message) -> Payload:
        """Answer one request: the Worker handler.

        Raises :class:`~control_sim.qpu.errors.QpuError` subclasses for bad input:
        ``BadRequest`` (body not a map, ``op`` missing or unknown, register without a
        source), ``BadParameters`` (not exactly one float64 frame, wrong shape, not finite)
        and whatever the schema's readers, the registry and the evaluator raise.
        """
        try:
            op, body = request_op(message.body)
        except BadRequest:
            self.metrics.errors[INVALID_OP] += 1
            raise
        with self.metrics.timed(op):
            return self._ops[op](body, message)

    def evaluate(self, request: Evaluation, params: NDArray[np.float64]) -> EvaluationReply:
        """Run an ``estimate`` or ``sample`` request that has been read already.

        ``params`` is float64 ``(P,)`` or ``(B, P)``. Checks nothing the evaluator does
        not (shape, finiteness, shots, seed, circuit id), so a caller may run it once per
        shot batch. Returns the reply, an :class:`~control_sim.qpu.schema.EstimateReply`
        or a :class:`~control_sim.qpu.schema.SampleReply`.
        """
        circuit = request.circuit
        if isinstance(request, Estimate):
            est = self.evaluator.estimate(circuit, params, shots=request.shots, seed=request.seed)
            return EstimateReply(circuit, est.shots, est.values, est.std_errors)
        samples = self.evaluator.sample(circuit, params, shots=request.shots, seed=request.seed)
        return SampleReply(circuit, samples.shots, samples.num_bits, samples.bits)

    def describe(self, circuit_id: str) -> CircuitInfo:
        """The summary a ``register`` or ``describe`` reply carries for ``circuit_id``."""
        return _summary(self.evaluator.registry.get(circuit_id))

    def _register(self, body: Mapping[str, Any], message: Message) -> Payload:
        request = Register.from_body(body)
        source = request.source(message.arrays)
        registry = self.evaluator.registry
        before = len(registry)
        if isinstance(source, bytes):
            circuit_id = registry.register_qpy(source, request.observables)
        else:
            circuit_id = registry.register_qasm3(source, request.observables)
        try:
            self.evaluator.prepare(circuit_id)
        except Exception:
            if len(registry) > before:  # a registration that cannot run is not kept
                registry.unregister(circuit_id)
            raise
        return Payload(body=self.describe(circuit_id).to_body())

    def _describe(self, body: Mapping[str, Any], message: Message) -> Payload:
        return Payload(body=self.describe(Describe.from_body(body).circuit).to_body())

    def _estimate(self, body: Mapping[str, Any], message: Message) -> Payload:
        params = read_params(message.arrays)
        return self.evaluate(Estimate.from_body(body), params).to_payload()

    def _sample(self, body: Mapping[str, Any], message: Message) -> Payload:
        params = read_params(message.arrays)
        return self.evaluate(Sample.from_body(body), params).to_payload()


def _summary(reg: RegisteredCircuit) -> CircuitInfo:
    return CircuitInfo(
        circuit=reg.circuit_id,
        num_qubits=reg.num_qubits,
        num_parameters=reg.num_parameters,
        parameters=tuple(reg.parameter_names),
        num_observables=reg.num_observables,
        estimable=reg.estimable,
    )


__all__ = ["QpuService"]
