"""The client side of the QPU service's continuous mode: a session and its running loop.

>>> with QpuSession(client) as session:                               # doctest: +SKIP
...     run = session.run(circuit_id, theta, shots=1000, window=4)
...     result = run.next(timeout=1.0)          # result.version == 0
...     run.update(theta + 0.1)                 # every later result has version 1
...     run.stop()
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from client import Client, Message, PendingReply, RequestTimeout, Session
from control_sim.stack.local_stack import DEFAULT_QPU_SERVICE


@dataclass(frozen=True, slots=True)
class RunResult:
    """One batch of a continuous run, as the worker streamed it."""

    version: int
    """The parameter version that produced it (0: the parameters ``run`` carried)."""
    batch: int
    """Its index in the run, from 0."""
    body: dict[str, Any]
    arrays: tuple[NDArray[Any], ...]

    @property
    def values(self) -> NDArray[np.float64]:
        """Estimate mode: expectation values, float64 (B, K)."""
        return self.arrays[0]


class ContinuousRun:
    """A running shot loop on the session's worker; see :mod:`control_sim.qpu.continuous`.

    Results are consumed in batch order with :meth:`next`; consuming acknowledges them,
    so the worker keeps up to ``window`` batches ahead of the consumer and no further.
    """

    def __init__(self, session: Session, pending: PendingReply, window: int, timeout: float):
        self.session = session
        self.pending = pending
        self.window = window
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
        result was consumed.
        """
        client = self.session.client
        wait_s = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait_s
        while self._next_index >= len(self.pending.partials):
            if self.pending.done:
                self.pending.result()  # raises the run's error, if it ended with one
                raise StopIteration("the run has ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeout(self.session.service, self.pending.id, wait_s)
            client.receive(left)
        partials = self.pending.partials
        m: Message = partials[self._next_index]
        self._next_index += 1
        if self._next_index >= 256:  # drop consumed results now and then, not one by one
            del partials[: self._next_index]
            self._next_index = 0
        body = dict(m.body)
        result = RunResult(int(body["version"]), int(body["batch"]), body, m.arrays)
        self.consumed = result.batch
        if self.consumed - self._acked >= max(1, self.window // 2):
            self._ack()
        return result

    def update(self, params: ArrayLike, *, timeout: float | None = None) -> int:
        """Send new parameters; returns their version. Every result the worker sends after
        it has answered carries this version or a later one."""
        x = np.ascontiguousarray(params, dtype=np.float64)
        body = {"op": "update", "ack": self.consumed}
        reply = self.session.request(body, x, timeout=timeout or self.timeout)
        self._acked = max(self._acked, self.consumed)
        self.version = int(reply.body["version"])
        self._reap()
        return self.version

    def stop(self, *, timeout: float | None = None) -> dict[str, Any]:
        """End the run; returns its FINAL body ``{"batches", "version", "reason"}``."""
        if not self.pending.done:
            self.session.request({"op": "stop"}, timeout=timeout or self.timeout)
        final = self.pending.result()
        for ack in self._acks:
            ack.result()
        self._acks.clear()
        return dict(final.body)

    def _ack(self) -> None:
        self._acks.append(
            self.session.submit({"op": "ack", "batch": self.consumed}, timeout=self.timeout)
        )
        self._acked = self.consumed
        self._reap()

    def _reap(self) -> None:
        done = [a for a in self._acks if a.done]
        for a in done:
            a.result()
            self._acks.remove(a)

    def __repr__(self) -> str:
        return (
            f"ContinuousRun(session={self.session.id}, version={self.version}, "
            f"consumed={self.consumed}, finished={self.finished})"
        )


class QpuSession:
    """A session on the ``qpu`` service, pinned to one worker, for continuous runs."""

    def __init__(
        self, client: Client, service: str = DEFAULT_QPU_SERVICE, *, timeout: float = 10.0
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.session = client.open_session(service, timeout=timeout)

    def run(
        self,
        circuit_id: str,
        params: ArrayLike,
        *,
        mode: str = "estimate",
        shots: int | None = None,
        seed: int | None = None,
        window: int = 8,
        period_us: int = 0,
        max_batches: int | None = None,
    ) -> ContinuousRun:
        """Start a continuous run at ``params`` (version 0); results stream at once."""
        body: dict[str, Any] = {
            "op": "run",
            "mode": mode,
            "circuit": circuit_id,
            "shots": shots,
            "seed": seed,
            "window": window,
            "period_us": period_us,
            "max_batches": max_batches,
        }
        x = np.ascontiguousarray(params, dtype=np.float64)
        # The run's own request stays open while it streams: its timeout only bounds
        # each wait in ContinuousRun.next, not the run.
        pending = self.session.submit(body, x, timeout=10**9)
        return ContinuousRun(self.session, pending, window, self.timeout)

    def close(self) -> None:
        """Forget the session's state on the worker, then in the broker."""
        if self.session.closed:
            return
        try:
            self.session.request({"op": "close"}, timeout=self.timeout)
        finally:
            self.session.close(timeout=self.timeout)

    def __enter__(self) -> QpuSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QpuSession({self.session!r})"
