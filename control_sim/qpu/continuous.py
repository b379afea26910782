"""Continuous mode of the QPU service: per-session shot loops that stream PARTIAL results.

A client opens a session (the broker pins it to one worker) and sends ``run``: the worker
evaluates the circuit at the run's parameters batch after batch, and streams each result
back as a PARTIAL reply to the ``run`` request, tagged with the **parameter version**
that produced it (0 for the parameters ``run`` carried, then 1, 2, ... per ``update``).
An ``update`` takes effect at the next batch: the batch being computed when it arrives
finishes with the old version, and every PARTIAL the worker sends after the ``update``
reply carries the new one. ``stop`` ends the run with its FINAL.

Batches run from the worker's idle callback, between requests, so updates are read as
soon as a batch ends. Flow control: at most ``window`` batches may be unacknowledged
(``ack``, or ``update`` with ``ack``), so a slow client holds the loop back instead of
filling the broker's queues.

The session ops (``run``, ``update``, ``ack``, ``stop``, ``close``), their bodies and
replies are the types of :mod:`control_sim.qpu.schema`, read and built through it;
docs/QPU_SERVICE.md describes them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from client.messages import Message
from client.worker import DeferredReply
from control_sim.qpu.errors import BadParameters, BadRequest
from control_sim.qpu.metrics import RUN_BATCH
from control_sim.qpu.schema import (
    SEED_BOUND,
    Ack,
    Acked,
    Close,
    Closed,
    EvaluationReply,
    Run,
    RunEnd,
    RunEndReason,
    RunResult,
    Stop,
    Stopped,
    Update,
    Updated,
    read_params,
    session_op,
)
from control_sim.qpu.service import QpuService

MAX_SESSION_STATES: Final = 1024
"""Session states one worker keeps; past it, the least recently used idle one goes."""


@dataclass(slots=True)
class _Run:
    reply: DeferredReply
    request: Run
    params: NDArray[np.float64]
    window: int
    period_ns: int
    max_batches: int | None
    version: int = 0
    batches: int = 0
    acked: int = -1
    next_due_ns: int = 0

    def ready(self) -> bool:
        return self.batches - 1 - self.acked < self.window


@dataclass(slots=True)
class _SessionState:
    run: _Run | None = None


class ContinuousRuns:
    """The session ops on top of a :class:`QpuService`: a Worker's handler and idle
    callback. Requests that are not session ops go to ``service.handle`` unchanged.

    ``defer`` is the worker's :meth:`~client.worker.Worker.defer`; ``max_runs`` bounds
    the runs going at once (each holds a credit slot, so keep it below the worker's
    credit, leaving a slot for updates; 0 refuses every run).
    """

    def __init__(
        self, service: QpuService, defer: Callable[[], DeferredReply], *, max_runs: int
    ) -> None:
        if max_runs < 0:
            raise ValueError("max_runs must be >= 0")
        self.service = service
        self.defer = defer
        self.max_runs = max_runs
        self.sessions: OrderedDict[int, _SessionState] = OrderedDict()
        self._ops: dict[str, Callable[[int, _SessionState, Mapping[str, Any], Message], Any]]
        self._ops = {
            "run": self._run,
            "update": self._update,
            "ack": self._ack,
            "stop": self._stop,
            "close": self._close,
        }

    def __repr__(self) -> str:
        return f"ContinuousRuns({len(self.sessions)} sessions, {len(self._runs())} running)"

    def handle(self, message: Message) -> Any:
        """The Worker handler: session ops here, everything else to the service."""
        body = message.body
        op = session_op(body)
        if op is None:
            return self.service.handle(message)
        sid = message.header.session
        if sid is None:
            raise BadRequest(
                "session",
                expected=f"op {op!r} sent within a session (open one with nl.session.open)",
                got="a request outside any session",
            )
        state = self._state(sid, create=op == "run")
        return self._ops[op](sid, state, body, message)

    def idle(self) -> int | None:
        """Run one batch of each run that is due and within its window; return in how
        many µs to come back (0: at once), or None when no run can go on."""
        runs = self._runs()
        if not runs:
            return None
        now = time.monotonic_ns()
        wake_ns: int | None = None
        for run in runs:
            if not run.ready():
                continue  # waits for an ack, which comes as a request
            if run.next_due_ns > now:
                wake_ns = run.next_due_ns if wake_ns is None else min(wake_ns, run.next_due_ns)
                continue
            self._batch(run)
            now = time.monotonic_ns()
            if run.reply.open and run.ready():
                due = max(now, run.next_due_ns)
                wake_ns = due if wake_ns is None else min(wake_ns, due)
        if wake_ns is None:
            return None
        return max(0, (wake_ns - time.monotonic_ns()) // 1000)

    # --- ops -------------------------------------------------------------------------

    def _run(self, sid: int, state: _SessionState, body: Mapping[str, Any], m: Message) -> Any:
        if state.run is not None and state.run.reply.open:
            raise BadRequest(
                "run", expected="no run going in this session (stop it first)", got="one"
            )
        if len(self._runs()) >= self.max_runs:
            raise BadRequest(
                "run",
                expected=f"fewer than {self.max_runs} runs going on this worker (its "
                "credit - 1: a run holds a credit slot until it stops)",
                got=f"{len(self._runs())}; stop one, or open a session on another worker",
            )
        request = Run.from_body(body)
        params = read_params(m.arrays)
        # bad input fails the run here, before anything streams
        with self.service.metrics.timed(RUN_BATCH):
            first = self.service.evaluate(request.evaluation(request.seed), params)
        reply = self.defer()
        run = _Run(
            reply=reply,
            request=request,
            params=params.copy(),
            window=request.window,
            period_ns=request.period_us * 1000,
            max_batches=request.max_batches,
        )
        state.run = run
        self._send(run, first)
        return reply

    def _update(self, sid: int, state: _SessionState, body: Mapping[str, Any], m: Message) -> Any:
        run = self._live_run(state, "update")
        request = Update.from_body(body)
        params = read_params(m.arrays)
        if params.shape != run.params.shape:
            raise BadParameters(
                expected=f"the run's shape {run.params.shape}", got=f"shape {params.shape}"
            )
        self._take_ack(run, request.ack, "ack")
        run.params = params.copy()
        run.version += 1
        return Updated(version=run.version, batch=run.batches).to_body()

    def _ack(self, sid: int, state: _SessionState, body: Mapping[str, Any], m: Message) -> Any:
        run = self._live_run(state, "ack")
        self._take_ack(run, Ack.from_body(body).batch, "batch")
        return Acked(batch=run.acked).to_body()

    def _stop(self, sid: int, state: _SessionState, body: Mapping[str, Any], m: Message) -> Any:
        run = self._live_run(state, "stop")
        Stop.from_body(body)
        self._end(run, "stopped")
        return Stopped(batches=run.batches, version=run.version).to_body()

    def _close(self, sid: int, state: _SessionState, body: Mapping[str, Any], m: Message) -> Any:
        Close.from_body(body)
        if state.run is not None and state.run.reply.open:
            self._end(state.run, "closed")
        self.sessions.pop(sid, None)
        return Closed().to_body()

    # --- helpers ---------------------------------------------------------------------

    def _batch(self, run: _Run) -> None:
        seed = run.request.seed
        if seed is not None:
            seed = (seed + run.batches) % SEED_BOUND
        try:
            with self.service.metrics.timed(RUN_BATCH):
                result = self.service.evaluate(run.request.evaluation(seed), run.params)
        except Exception as exc:  # a run that worked at batch 0 should not fail; if it does, say so
            run.reply.fail(exc)
            return
        self._send(run, result)

    def _send(self, run: _Run, result: EvaluationReply) -> None:
        run.reply.partial(RunResult(run.version, run.batches, result).to_payload())
        run.batches += 1
        run.next_due_ns = time.monotonic_ns() + run.period_ns
        if run.max_batches is not None and run.batches >= run.max_batches:
            self._end(run, "max_batches")

    @staticmethod
    def _end(run: _Run, reason: RunEndReason) -> None:
        run.reply.finish(RunEnd(batches=run.batches, version=run.version, reason=reason).to_body())

    @staticmethod
    def _take_ack(run: _Run, ack: int | None, key: str) -> None:
        if ack is None:
            return
        if not -1 <= ack < run.batches:
            raise BadRequest(
                key,
                expected=f"an int in [-1, {run.batches - 1}] (a batch sent)",
                got=f"{ack!r:.64}",
            )
        run.acked = max(run.acked, ack)

    @staticmethod
    def _live_run(state: _SessionState, op: str) -> _Run:
        run = state.run
        if run is None or not run.reply.open:
            raise BadRequest(op, expected="a run going in this session", got="none")
        return run

    def _state(self, sid: int, *, create: bool) -> _SessionState:
        state = self.sessions.get(sid)
        if state is not None:
            self.sessions.move_to_end(sid)
            return state
        if not create:
            return _SessionState()  # no run: every op but run and close refuses
        if len(self.sessions) >= MAX_SESSION_STATES:
            for old, st in self.sessions.items():
                if st.run is None or not st.run.reply.open:
                    del self.sessions[old]
                    break
        state = self.sessions[sid] = _SessionState()
        return state

    def _runs(self) -> list[_Run]:
        return [s.run for s in self.sessions.values() if s.run is not None and s.run.reply.open]
