"""The optimizer's side of continuous mode: :class:`QpuSession`, and its running loop.

A :class:`QpuSession` is one session on the ``qpu`` service: it opens a
:class:`client.Session` (the broker pins it to one worker; over a shared-memory lane
when that worker shares this host, unless ``lane="off"``), speaks the session ops of
:mod:`control_sim.qpu.continuous` through it, and closes it. :meth:`QpuSession.run`
starts a shot loop on that worker and returns its :class:`ContinuousRun`, whose results
stream back as PARTIAL replies. Requests are built and replies read with the types of
:mod:`control_sim.qpu.schema`; like :mod:`control_sim.qpu.client`, this module needs
neither qiskit nor aer.

>>> with QpuSession(client) as session:                               # doctest: +SKIP
...     run = session.run(circuit_id, theta, shots=1000, window=4)
...     result = run.next(timeout=1.0)          # result.version == 0
...     run.update(theta + 0.1)                 # every later result has version 1
...     run.stop()
"""

from __future__ import annotations

import time
from typing import Any

from numpy.typing import ArrayLike

import control_sim.qpu.errors  # noqa: F401  (defines the QPU error types, so replies raise them)
from client import Client, Message, PendingReply, RequestTimeout, Session
from client.wire.lanes import LaneMode
from control_sim.qpu.names import DEFAULT_SERVICE
from control_sim.qpu.schema import (
    DEFAULT_WINDOW,
    Ack,
    Acked,
    Close,
    Closed,
    Mode,
    Run,
    RunEnd,
    RunResult,
    Stop,
    Stopped,
    Update,
    Updated,
    params_frame,
)

__all__ = ["ContinuousRun", "QpuSession", "RunResult"]


class ContinuousRun:
    """A running shot loop on the session's worker; see :mod:`control_sim.qpu.continuous`.

    Results are consumed in batch order with :meth:`next`; consuming acknowledges them,
    so the worker keeps up to ``window`` batches ahead of the consumer and no further.
    """

    def __init__(
        self, session: Session, pending: PendingReply, request: Run, timeout: float
    ) -> None:
        self.session = session
        self.pending = pending
        self.mode: Mode = request.mode
        self.window = request.window
        self.timeout = timeout
        self.version = 0
        self.consumed = -1
        self._acked = -1
        self._acks: list[PendingReply] = []
        self._next_index = 0

    @property
    def finished(self) -> bool:
        """True once the run's FINAL (or error) has arrived."""
        return self.pending.done

    def next(self, timeout: float | None = None) -> RunResult:
        """The next batch's result, waiting up to ``timeout`` s (default: the run's).

        Raises the run's error (``SessionLost`` if the worker died, for example) or
        ``RequestTimeout``; raises ``StopIteration`` when the run has ended and every
        result was consumed; ``ProtocolError`` for a malformed result.
        """
        client = self.session.client
        wait_s = self.timeout if timeout is None else timeout
        deadline_ns = time.monotonic_ns() + int(wait_s * 1e9)
        while self._next_index >= len(self.pending.partials):
            if self.pending.done:
                self.pending.result()  # raises the run's error, if it ended with one
                raise StopIteration("the run has ended")
            left_ns = deadline_ns - time.monotonic_ns()
            if left_ns <= 0:
                raise RequestTimeout(self.session.service, self.pending.id, wait_s)
            client.receive(left_ns / 1e9)
        partials = self.pending.partials
        m: Message = partials[self._next_index]
        self._next_index += 1
        if self._next_index >= 256:  # drop consumed results now and then, not one by one
            del partials[: self._next_index]
            self._next_index = 0
        result = RunResult.from_message(m, self.mode)
        self.consumed = result.batch
        if self.consumed - self._acked >= max(1, self.window // 2):
            self._ack()
        return result

    def update(self, params: ArrayLike, *, timeout: float | None = None) -> int:
        """Send new parameters; returns their version. Every result the worker sends after
        it has answered carries this version or a later one."""
        body = Update(ack=self.consumed).to_body()
        reply = self.session.request(body, params_frame(params), timeout=timeout or self.timeout)
        self._acked = max(self._acked, self.consumed)
        self.version = Updated.from_body(reply.body).version
        self._reap()
        return self.version

    def stop(self, *, timeout: float | None = None) -> dict[str, Any]:
        """End the run; returns its FINAL body ``{"batches", "version", "reason"}``
        (:class:`~control_sim.qpu.schema.RunEnd`)."""
        if not self.pending.done:
            reply = self.session.request(Stop().to_body(), timeout=timeout or self.timeout)
            Stopped.from_body(reply.body)
        final = RunEnd.from_body(self.pending.result().body)
        for ack in self._acks:
            Acked.from_body(ack.result().body)
        self._acks.clear()
        return final.to_body()

    def _ack(self) -> None:
        body = Ack(batch=self.consumed).to_body()
        self._acks.append(self.session.submit(body, timeout=self.timeout))
        self._acked = self.consumed
        self._reap()

    def _reap(self) -> None:
        done = [a for a in self._acks if a.done]
        for a in done:
            Acked.from_body(a.result().body)
            self._acks.remove(a)

    def __repr__(self) -> str:
        return (
            f"ContinuousRun(session={self.session.id}, version={self.version}, "
            f"consumed={self.consumed}, finished={self.finished})"
        )


class QpuSession:
    """A session on the ``qpu`` service, pinned to one worker, for continuous runs.

    It opens its :class:`client.Session` (``session``) at once, with ``lane`` as
    :meth:`client.Client.open_session` takes it (``session.lane`` says which transport it
    got); :meth:`close` (or the ``with`` block's end) forgets the session's state on the
    worker, then in the broker.
    """

    def __init__(
        self,
        client: Client,
        service: str = DEFAULT_SERVICE,
        *,
        timeout: float = 10.0,
        lane: LaneMode = "auto",
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.session = client.open_session(service, lane=lane, timeout=timeout)

    def run(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: Mode = "estimate",
        shots: int | None = None,
        seed: int | None = None,
        window: int = DEFAULT_WINDOW,
        period_us: int = 0,
        max_batches: int | None = None,
    ) -> ContinuousRun:
        """Start a continuous run at ``params`` (version 0); results stream at once."""
        request = Run(
            circuit=circuit_id,
            mode=mode,
            shots=shots,
            seed=seed,
            window=window,
            period_us=period_us,
            max_batches=max_batches,
        )
        # The run's own request stays open while it streams: its timeout only bounds
        # each wait in ContinuousRun.next, not the run.
        pending = self.session.submit(request.to_body(), params_frame(params), timeout=10**9)
        return ContinuousRun(self.session, pending, request, self.timeout)

    def close(self) -> None:
        """Forget the session's state on the worker, then in the broker."""
        if self.session.closed:
            return
        try:
            Closed.from_body(self.session.request(Close().to_body(), timeout=self.timeout).body)
        finally:
            self.session.close(timeout=self.timeout)

    def __enter__(self) -> QpuSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QpuSession({self.session!r})"
