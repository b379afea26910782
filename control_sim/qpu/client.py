"""The optimizer's side of the ``qpu`` service: register once, then send only parameters.

:class:`QpuClient` wraps a :class:`client.Client` and calls the ``qpu`` service, building
every request and reading every reply with the types of :mod:`control_sim.qpu.schema`.
Made with :meth:`QpuClient.open`, it calls through a :class:`client.Session` pinned to one
worker, over a shared-memory lane when that worker shares this host (``lane="auto"``,
the default) and through the broker otherwise; made directly, each call goes through the
broker to whichever worker is free. A circuit and its observables are registered once
(:meth:`QpuClient.register_qasm3`, :meth:`QpuClient.register_qpy`); after that a call
carries the circuit id, a few scalars and the parameter array, nothing else.

Errors of the service arrive typed: a refusal raises the class of
:mod:`control_sim.qpu.errors` for its ``type`` (``BadParameters`` for ``bad_parameters``,
``UnknownCircuit``, ``BadShots``, ...), each a :class:`client.RemoteError` with
``.type``, ``.message`` and ``.service``. A reply of the wrong shape raises
:class:`client.ProtocolError`.

This module imports only the client library and numpy, so an optimizer process needs
neither qiskit nor aer.

>>> with Client(endpoint) as c, QpuClient.open(c) as qpu:           # doctest: +SKIP
...     qpu.lane                                  # "shm" when co-located, else "zmq"
...     info = qpu.register_qasm3(h2.ANSATZ_QASM3, [list(h2.PAULI_TERMS)])
...     values, stds = qpu.estimate(info.circuit, np.zeros(info.num_parameters))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

import control_sim.qpu.errors  # noqa: F401  (defines the QPU error types, so replies raise them)
from client import Client, Message, Session
from client.wire.lanes import LaneMode
from control_sim.qpu.names import DEFAULT_SERVICE
from control_sim.qpu.schema import (
    SEED_BOUND,
    CircuitInfo,
    Describe,
    Estimate,
    EstimateReply,
    Observable,
    Register,
    Sample,
    SampleReply,
    params_frame,
    qpy_frame,
    wire_observables,
)

if TYPE_CHECKING:
    from control_sim.vqe.driver import EnergyFn

__all__ = ["CircuitInfo", "Observable", "QpuClient", "SampleReply"]


class QpuClient:
    """Calls the ``qpu`` service on a :class:`client.Client` it borrows: through the
    broker, or through ``session`` (a :class:`client.Session` on the service, pinned to
    one worker, which :meth:`open` makes).

    Every call waits at most ``timeout`` seconds (``RequestTimeout`` after that). Not
    thread-safe, like the client under it.
    """

    def __init__(
        self,
        client: Client,
        service: str = DEFAULT_SERVICE,
        *,
        timeout: float = 5.0,
        session: Session | None = None,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout}")
        if session is not None and (session.client is not client or session.service != service):
            raise ValueError(
                f"the session ({session.service!r}) must be one of this client's, on {service!r}"
            )
        self.client = client
        self.service = service
        self.timeout = timeout
        self.session = session

    @classmethod
    def open(
        cls,
        client: Client,
        service: str = DEFAULT_SERVICE,
        *,
        lane: LaneMode = "auto",
        timeout: float = 5.0,
    ) -> QpuClient:
        """A :class:`QpuClient` calling through a new session on ``service``, which
        :meth:`close` (or the ``with`` block's end) closes.

        ``lane`` is :meth:`client.Client.open_session`'s: ``"auto"`` takes a shared-memory
        lane where the pinned worker shares this host and goes through the broker
        otherwise; ``"require"`` raises :class:`client.errors.LaneUnavailable` without
        one; ``"off"`` goes through the broker. :attr:`lane` says which it got.
        """
        session = client.open_session(service, lane=lane, timeout=timeout)
        return cls(client, service, timeout=timeout, session=session)

    @property
    def lane(self) -> str:
        """``"shm"`` (a session over a shared-memory lane) or ``"zmq"`` (the broker)."""
        return "zmq" if self.session is None else self.session.lane

    @property
    def lane_refused(self) -> str | None:
        """Why the calls go through the broker, when they do (None over a lane)."""
        if self.session is None:
            return "no session: each call goes to any worker through the broker"
        return self.session.lane_refused

    def close(self) -> None:
        """Close the session, if this client has one (idempotent); the client stays open."""
        if self.session is not None:
            self.session.close(timeout=self.timeout)

    def __enter__(self) -> QpuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = self.client.endpoint
        how = "" if self.session is None else f", session {self.session.id} over {self.lane}"
        return f"QpuClient({self.service!r} via {where!r}{how}, timeout={self.timeout:g} s)"

    def register_qasm3(self, source: str, observables: Sequence[Observable] = ()) -> CircuitInfo:
        """Register an OpenQASM 3 program (``input float[64]`` parameters) and observables.

        Registering the same thing again returns the same id. Raises ``InvalidQasm``,
        ``BadObservable``, ``UnsupportedCircuit``, ... (:mod:`control_sim.qpu.errors`).
        """
        request = Register(qasm3=source, observables=wire_observables(observables))
        return CircuitInfo.from_body(self._call(request.to_body()).body)

    def register_qpy(self, data: bytes, observables: Sequence[Observable] = ()) -> CircuitInfo:
        """Register a circuit serialized with ``qiskit.qpy.dump`` (exactly one circuit).

        Raises ``InvalidQpy``, ``BadObservable``, ... (:mod:`control_sim.qpu.errors`).
        """
        request = Register(qpy=True, observables=wire_observables(observables))
        return CircuitInfo.from_body(self._call(request.to_body(), qpy_frame(data)).body)

    def describe(self, circuit_id: str) -> CircuitInfo:
        """What the service holds under ``circuit_id``; raises ``UnknownCircuit``."""
        return CircuitInfo.from_body(self._call(Describe(circuit_id).to_body()).body)

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
        body = Estimate(circuit_id, shots, seed).to_body()
        reply = EstimateReply.from_message(self._call(body, params_frame(params)))
        return reply.values, reply.stds

    def sample(
        self, circuit_id: str, params: ArrayLike, *, shots: int, seed: int | None = None
    ) -> SampleReply:
        """``shots`` outcomes per parameter vector of the circuit's classical bits (of every
        qubit when it has none), bit-packed; see :class:`~control_sim.qpu.schema.SampleReply`."""
        body = Sample(circuit_id, shots, seed).to_body()
        return SampleReply.from_message(self._call(body, params_frame(params)))

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
        # Built once: a call changes only the seed in it, and sends the parameters.
        body = Estimate(circuit_id, shots, None).to_body()
        timeout = self.timeout
        read = EstimateReply.frames_of
        if self.session is not None:
            session_request = self.session.request

            def energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
                if rng is not None:
                    body["seed"] = int(rng.integers(SEED_BOUND))
                values, _ = read(session_request(body, params_frame(xs), timeout=timeout))
                return values[:, 0]

            return energy
        request, service = self.client.request, self.service

        def brokered_energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
            if rng is not None:
                body["seed"] = int(rng.integers(SEED_BOUND))
            values, _ = read(request(service, body, params_frame(xs), timeout=timeout))
            return values[:, 0]

        return brokered_energy

    def _call(self, body: dict[str, Any], *arrays: NDArray[Any]) -> Message:
        if self.session is not None:
            return self.session.request(body, *arrays, timeout=self.timeout)
        return self.client.request(self.service, body, *arrays, timeout=self.timeout)
