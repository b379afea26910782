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

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

import control_sim.qpu.errors  # noqa: F401  (defines the QPU error types, so replies raise them)
from client import Client, Message, Session
from client.errors import (
    BrokerLost,
    NearloopError,
    RequestTimeout,
    ServiceUnavailable,
    SessionLost,
    UnknownSession,
)
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

log = logging.getLogger("nearloop.qpu.client")

_SESSION_GONE: Final = (SessionLost, BrokerLost, UnknownSession)
"""What a session's call raises when the session is gone with its worker or its broker."""
REOPEN_PAUSE_S: Final = 0.05
"""Between two tries to reopen a session while the service has no worker yet (a restarted
broker, before the worker's READY): a bounded pause, within the client's timeout."""


class QpuClient:
    """Calls the ``qpu`` service on a :class:`client.Client` it borrows: through the
    broker, or through ``session`` (a :class:`client.Session` on the service, pinned to
    one worker, which :meth:`open` makes).

    Every call waits at most ``timeout`` seconds (``RequestTimeout`` after that). Not
    thread-safe, like the client under it.

    A session that is lost (its worker died or was cut off, or the broker restarted:
    ``SessionLost``, ``BrokerLost``, ``UnknownSession``) is reopened, for up to
    ``timeout`` seconds while the service has no worker yet, and the circuits this client
    registered are registered again; then the call is made again, once. Every op is
    idempotent (an evaluation at given parameters, a registration), so this is safe.
    :attr:`reopens` counts it. Calls through the broker are sent ``idempotent=True``.
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
        self.reopens = 0
        """Sessions reopened after the one before was lost."""
        self._lane_mode: LaneMode = "auto" if session is None else _mode_of(session)
        self._registrations: list[tuple[dict[str, Any], tuple[NDArray[Any], ...]]] = []

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
        qpu = cls(client, service, timeout=timeout, session=session)
        qpu._lane_mode = lane
        return qpu

    def reopen(self) -> None:
        """Open a new session on the service in place of the lost one, trying for up to
        ``timeout`` seconds while it has no worker (a restarted broker waits for the
        worker's READY), and register again the circuits registered through this client.
        Raises the last error if no session could be opened in time."""
        old = self.session
        if old is None:
            return
        old.close(timeout=self.timeout)  # a lost session only frees its lane
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                self.session = self.client.open_session(
                    self.service, lane=self._lane_mode, timeout=max(left, 0.01)
                )
                break
            except (ServiceUnavailable, RequestTimeout, BrokerLost):
                if time.monotonic() + REOPEN_PAUSE_S >= deadline:
                    raise
                time.sleep(REOPEN_PAUSE_S)  # bounded: until the worker's READY, or timeout
        self.reopens += 1
        log.warning(
            "%s: session %d lost; reopened as session %d", self.service, old.id, self.session.id
        )
        for body, arrays in self._registrations:
            self.session.request(body, *arrays, timeout=self.timeout)

    def _session_request(self, body: dict[str, Any], *arrays: NDArray[Any]) -> Message:
        """A call through the session, reopened once if it was lost."""
        assert self.session is not None  # only called with a session
        try:
            return self.session.request(body, *arrays, timeout=self.timeout)
        except _SESSION_GONE:
            self.reopen()
            return self.session.request(body, *arrays, timeout=self.timeout)

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
        """Close the session, if this client has one (idempotent); the client stays open.
        A session the broker no longer knows (it went with a restarted broker) is gone
        already: that is not an error here."""
        if self.session is not None:
            try:
                self.session.close(timeout=self.timeout)
            except _SESSION_GONE as exc:
                log.info("%s: session %d was gone already: %s", self.service, self.session.id, exc)

    def __enter__(self) -> QpuClient:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except NearloopError as failure:  # the block's own error is the one to see
            log.warning(
                "%s: session not closed while leaving on %r: %s", self.service, exc, failure
            )

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
        body = request.to_body()
        info = CircuitInfo.from_body(self._call(body).body)
        self._registrations.append((body, ()))
        return info

    def register_qpy(self, data: bytes, observables: Sequence[Observable] = ()) -> CircuitInfo:
        """Register a circuit serialized with ``qiskit.qpy.dump`` (exactly one circuit).

        Raises ``InvalidQpy``, ``BadObservable``, ... (:mod:`control_sim.qpu.errors`).
        """
        request = Register(qpy=True, observables=wire_observables(observables))
        body, frame = request.to_body(), qpy_frame(data)
        info = CircuitInfo.from_body(self._call(body, frame).body)
        self._registrations.append((body, (frame,)))
        return info

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
            session_request = self._session_request

            def energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
                if rng is not None:
                    body["seed"] = int(rng.integers(SEED_BOUND))
                values, _ = read(session_request(body, params_frame(xs)))
                return values[:, 0]

            return energy
        request, service = self.client.request, self.service

        def brokered_energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
            if rng is not None:
                body["seed"] = int(rng.integers(SEED_BOUND))
            frame = params_frame(xs)
            values, _ = read(request(service, body, frame, timeout=timeout, idempotent=True))
            return values[:, 0]

        return brokered_energy

    def _call(self, body: dict[str, Any], *arrays: NDArray[Any]) -> Message:
        if self.session is not None:
            return self._session_request(body, *arrays)
        return self.client.request(
            self.service, body, *arrays, timeout=self.timeout, idempotent=True
        )


def _mode_of(session: Session) -> LaneMode:
    """The lane mode that gets ``session``'s transport again."""
    return "auto" if session.lane == "shm" else "off"
