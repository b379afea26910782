"""Syndrome streams: blocks of bit-packed detection events to a decoder service, results
back in sequence order, with a bounded window, duplicate dropping and reaction times.

A block is one nearloop request to the decoder service, in the schema of
:mod:`client.syndrome_block`. The model text goes to the broker's model store once
(``nl.model.put``); blocks carry only its hash.

Where the service's decoder workers share this host, a stream opens one session with a
shared-memory lane to each (``lane="auto"``, the default) and sends their blocks over the
lanes; the blocks of workers on other hosts go through the broker, which balances them.
:mod:`client.stream_dispatch` decides, block by block, which way has room.

:class:`StreamState` keeps a stream's books (the window, the reorder buffer, retries and
expiry) and never waits. :class:`Stream` runs it on a :class:`~client.Client`, and
:class:`AsyncStream` on an :class:`~client.AsyncClient`; they differ only in how they
wait for replies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from client import syndrome_block
from client.async_client import AsyncClient
from client.connection import Call
from client.errors import (
    BadBlock,
    BrokerLost,
    BrokerShutdown,
    LaneUnavailable,
    NearloopError,
    ProtocolError,
    RequestTimeout,
    ServiceUnavailable,
    SessionLost,
    UnknownModel,
    WindowFull,
    WorkerLost,
)
from client.messages import Message
from client.session import LanePlan
from client.stream_dispatch import Dispatcher, LaneSessionLike, Route
from client.sync_client import Client
from client.wire.curve import CurveSpec
from client.wire.histogram import NsHistogram
from client.wire.lanes import LaneMode, check_lane_mode

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("nearloop.stream")

clock_ns: Final = time.perf_counter_ns

DEFAULT_WINDOW: Final = 64
DEFAULT_BLOCK_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_ATTEMPTS: Final = 3
_RETRIABLE: Final = (WorkerLost, BrokerShutdown, SessionLost, BrokerLost)


@dataclass(frozen=True, slots=True)
class BlockResult:
    """One block's outcome, delivered in sequence order.

    ``predictions`` is set when the block was decoded, ``error`` when it could not be
    (a bad block, an unknown model, every attempt lost). Times are
    ``time.perf_counter_ns()`` on the producer.
    """

    seq: int
    emitted_ns: int
    done_ns: int
    attempts: int
    late: bool
    predictions: npt.NDArray[np.uint8] | None = None
    error: NearloopError | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What the worker reported: decoder, batch_shots, decode_us."""

    @property
    def reaction_ns(self) -> int:
        """From the block's emission to its result being available here."""
        return self.done_ns - self.emitted_ns

    @property
    def ok(self) -> bool:
        """True when the block was decoded."""
        return self.error is None


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream; ``lost`` is what was sent and has no outcome yet.

    ``retried`` counts blocks sent again (after a timeout, or because their worker was
    lost); ``lane_sent`` and ``broker_sent`` count every attempt by the way it went, and
    ``lane_decoded`` and ``broker_decoded`` the blocks decoded by the way their result
    came; ``lanes_lost`` counts lane workers that died or left mid-stream.

    After a broker restart: ``reconnects`` counts the restarts the stream saw (its
    client found the broker's state gone), ``resent`` the blocks sent again because
    their broker went, or the lane they were on went with its broker's session (these
    are not counted against ``max_attempts``), and
    ``models_restored`` the models stored again in the new broker.
    """

    sent: int = 0
    decoded: int = 0
    failed: int = 0
    retried: int = 0
    duplicates_dropped: int = 0
    late: int = 0
    backlog_max: int = 0
    model_switches: int = 0
    lane_sent: int = 0
    broker_sent: int = 0
    lane_decoded: int = 0
    broker_decoded: int = 0
    lanes_lost: int = 0
    reconnects: int = 0
    resent: int = 0
    models_restored: int = 0

    @property
    def lost(self) -> int:
        """Blocks sent that have neither a result nor an error."""
        return self.sent - self.decoded - self.failed


@dataclass(slots=True)
class _Block:
    seq: int
    detections: npt.NDArray[np.uint8]
    emitted_ns: int
    model: str
    attempts: int = 0
    broker_lost: int = 0  # attempts lost with their broker: not counted against the limit
    call: Call | None = None
    route: Route | None = None


def _model_text(model: Any) -> bytes:
    """A noise model's text: ``model`` is a stim ``DetectorErrorModel`` (anything whose
    ``str()`` is the model text) or the text itself."""
    if isinstance(model, bytes):
        return model
    return (model if isinstance(model, str) else str(model)).encode()


class StreamState:
    """The books of a producer's stream of syndrome blocks to one decoder service.

    - A block is sent at once while the window has room; when it is full, the stream
      receives results until there is room, or raises :class:`WindowFull` after its
      timeout. It never drops a block.
    - Results are handed out in sequence order; a block that failed comes back with
      ``error`` set, in its place, and the stream goes on.
    - Each block goes the way with the most room (:mod:`client.stream_dispatch`): a
      lane to a co-located worker, or the broker; with every way full, it waits here,
      counted in the backlog, until a result frees room.
    - A block whose worker died is re-dispatched by the broker, or, over a lane, sent
      again another way; one that still gets no reply within ``block_timeout`` (or that
      the broker gives up on) is sent again, up to ``max_attempts``. A second reply for
      a (stream, seq) is dropped and counted.
    - A result that comes more than ``deadline_us`` after the block's emission is
      marked late.

    Subclasses wait for replies their own way.
    """

    client: Client | AsyncClient

    def __init__(
        self,
        client: Client | AsyncClient,
        service: str,
        *,
        window: int = DEFAULT_WINDOW,
        deadline_us: int | None = None,
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_id: str | None = None,
        lane: LaneMode = "auto",
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if block_timeout <= 0:
            raise ValueError(f"block_timeout must be > 0 s, got {block_timeout}")
        if deadline_us is not None and deadline_us <= 0:
            raise ValueError(f"deadline_us must be > 0, got {deadline_us}")
        self.client = client
        self.service = service
        self.lane_mode = check_lane_mode(lane)
        self.id = stream_id or os.urandom(6).hex()
        self.window = window
        self.deadline_ns = None if deadline_us is None else deadline_us * 1000
        self.block_timeout = block_timeout
        self.max_attempts = max_attempts
        self.stats = StreamStats()
        self.reaction = NsHistogram()
        """Each decoded block's reaction time (:attr:`BlockResult.reaction_ns`), for
        ``/metrics`` (:meth:`register_metrics`)."""
        self.model_hash = ""
        self.num_detectors: int | None = None
        self._inflight: dict[int, _Block] = {}
        self._attempts: dict[int, int] = {}  # request id -> seq, for every attempt sent
        self._superseded: deque[Call] = deque()
        self._done: dict[int, BlockResult] = {}  # the reorder buffer
        self._ready: deque[BlockResult] = deque()
        self._next_seq = 0
        self._next_out = 0
        self._timeouts: deque[tuple[int, int, int]] = deque()  # (deadline_ns, seq, attempt)
        self._dispatch = Dispatcher([], broker_workers=0, use_broker=True, window=window)
        self._waiting: deque[_Block] = deque()  # sent by the producer, with no route yet
        self._filling = False
        self._to_close: list[LaneSessionLike] = []  # sessions of lost lanes, to close
        self._model_texts: dict[str, bytes] = {}  # every model stored, to store again
        self._restarts_seen = client._conn.restarts

    # --- the routes -----------------------------------------------------------------

    def _lanes_wanted(self) -> bool:
        """Whether to ask for lanes; LaneUnavailable for ``lane="require"`` where this
        process cannot have any."""
        plan = LanePlan.of(self.lane_mode)
        if plan.ask is None and self.lane_mode == "auto":
            log.info("stream %s to %r goes through the broker: %s", self.id, self.service,
                     plan.why_not)  # fmt: skip
        return plan.ask is not None

    def _workers_of(self, stats: dict[str, Any]) -> int:
        """How many workers the broker's ``mmi.stats`` counts for the service."""
        entry = stats.get("services", {}).get(self.service, {})
        n = entry.get("workers", 0) if isinstance(entry, dict) else 0
        return n if isinstance(n, int) and n > 0 else 0

    def _take_sessions(self, sessions: list[Any], workers: int) -> list[Any]:
        """Route the blocks over the lanes of ``sessions`` (one per worker of
        ``workers``), the rest through the broker; returns the sessions to close (those
        without a lane, and a second one to the same worker). LaneUnavailable for
        ``lane="require"`` unless every worker has a lane (the caller closes them all)."""
        lanes: dict[str, Any] = {}
        extra: list[Any] = []
        for s in sessions:
            if s.lane == "shm" and s.worker not in lanes:
                lanes[s.worker] = s
            else:
                extra.append(s)
        if self.lane_mode == "require" and (not workers or len(lanes) < workers):
            why = sorted({str(s.lane_refused) for s in extra if s.lane_refused}) or [
                f"{len(lanes)} of the service's {workers} workers have a lane"
            ]
            raise LaneUnavailable(
                f"stream {self.id} to {self.service!r} with lane='require': {'; '.join(why)}"
            )
        self._dispatch = Dispatcher(
            list(lanes.values()),
            broker_workers=workers - len(lanes),
            use_broker=self.lane_mode != "require",
            window=self.window,
        )
        if lanes:
            log.info("stream %s to %r: %d lane(s), %d worker(s) through the broker",
                     self.id, self.service, len(lanes), workers - len(lanes))  # fmt: skip
        return extra

    @property
    def lanes(self) -> list[str]:
        """The workers (hex ZeroMQ identities) this stream reaches over a lane, still
        there; the other blocks go through the broker."""
        return [r.name for r in self._dispatch.lanes if r.lost is None]

    def _sessions_open(self) -> list[Any]:
        """Every lane session not yet closed, whether its worker is there or not."""
        return [r.session for r in self._dispatch.lanes if r.session and not r.session.closed]

    def _take_lost(self) -> list[Any]:
        """The sessions of lanes lost since the last call, to close (outside a reply's
        callback: closing one is a request to the broker)."""
        lost, self._to_close = self._to_close, []
        return [s for s in lost if not s.closed]

    # --- the model ------------------------------------------------------------------

    def _use_model(self, model: Any, model_hash: str) -> str:
        """Blocks sent from now on carry ``model_hash``, the stored hash of ``model``."""
        self.model_hash = model_hash
        self._model_texts[model_hash] = _model_text(model)
        n = getattr(model, "num_detectors", None)
        self.num_detectors = int(n) if n is not None else None
        if self._next_seq:
            self.stats.model_switches += 1
        return model_hash

    # --- sending --------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Blocks sent whose results are not yet ready in order."""
        return self._next_seq - self._next_out

    def _check(self, detections: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return syndrome_block.check_block(detections, self.num_detectors, self._bad_block)

    def _bad_block(self, *, what: str, expected: object, got: object) -> BadBlock:
        where = f"stream {self.id}"
        if self.num_detectors is not None:
            where += f" (its model has {self.num_detectors} detectors)"
        return BadBlock(f"{where}: {syndrome_block.bad_block_message(what, expected, got)}")

    def _add(self, detections: npt.NDArray[np.uint8], emitted_ns: int | None) -> int:
        """Send a checked block now (the window has room); returns its sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        emitted = clock_ns() if emitted_ns is None else emitted_ns
        block = _Block(seq, detections, emitted, self.model_hash)
        self._inflight[seq] = block
        self.stats.sent += 1
        self.stats.backlog_max = max(self.stats.backlog_max, self.backlog)
        self._waiting.append(block)
        self._fill()
        return seq

    def _fill(self) -> None:
        """Send the waiting blocks, oldest first, while some route has room; fail them
        if no route is left (``lane="require"`` with every lane's worker gone)."""
        if self._filling:
            return  # a send that failed at once re-entered: the outer loop goes on
        self._filling = True
        try:
            waiting = self._waiting
            while waiting:
                route = self._dispatch.pick()
                if route is None:
                    if not self._dispatch.live:
                        self._fail_waiting()
                    return
                block = waiting.popleft()
                if block.seq in self._inflight:
                    self._send_on(route, block)
        finally:
            self._filling = False

    def _fail_waiting(self) -> None:
        error = LaneUnavailable(
            f"stream {self.id} to {self.service!r}: every lane's worker has gone, and "
            "lane='require' keeps blocks off the broker"
        )
        while self._waiting:
            block = self._waiting.popleft()
            if block.seq in self._inflight:
                self._complete(block, None, error, {})

    def _restore_after_restart(self) -> None:
        """If the client found its broker restarted since the last look, store the
        stream's models in the new broker (whose store is empty) before any block goes
        out: the puts go first on the same socket, so the broker holds the models before
        a worker can ask it for one."""
        conn = self.client._conn
        if conn.restarts == self._restarts_seen:
            return
        self.stats.reconnects += conn.restarts - self._restarts_seen
        self._restarts_seen = conn.restarts
        self._put_models_again()

    def _put_models_again(self) -> None:
        conn = self.client._conn
        for text in self._model_texts.values():
            _h, call = conn.submit_model_put(self.client, text, self.block_timeout)
            call.on_done = self._on_model_restored
            self.stats.models_restored += 1

    def _on_model_restored(self, call: Call) -> None:
        if not isinstance(call.outcome, Message):
            log.warning("stream %s: storing a model again failed: %s", self.id, call.outcome)

    def _move_off(self, route: Route) -> None:
        """Send the blocks in flight on a lost lane again, another way, ahead of those
        waiting. Closing the lane's session abandons its calls, so their replies would
        never come: each block would wait out its timeout, and hold the window. Like a
        block lost with its broker, this attempt is not counted against ``max_attempts``."""
        moved = []
        for call_id in list(route.calls):
            seq = self._attempts.get(call_id)
            block = None if seq is None else self._inflight.get(seq)
            if block is not None and block.call is not None and block.call.id == call_id:
                moved.append(block)
        for block in sorted(moved, key=lambda b: b.seq, reverse=True):
            block.broker_lost += 1
            self.stats.resent += 1
            self._waiting.appendleft(block)

    def _send_on(self, route: Route, block: _Block) -> None:
        self._restore_after_restart()
        if route.session is not None and route.session.lost:
            # The lane's session went with the broker: the block goes another way.
            if self._dispatch.lose(route, "its session went with a restarted broker"):
                self.stats.lanes_lost += 1
                self._to_close.append(route.session)
            self._waiting.appendleft(block)
            self._move_off(route)
            return
        block.attempts += 1
        body = syndrome_block.request_body(
            self.id, block.seq, block.model, emitted_ns=block.emitted_ns
        )
        timeout = self.block_timeout
        if route.session is None:
            call = self.client.submit(self.service, body, block.detections, timeout=timeout)
            self.stats.broker_sent += 1
        else:
            call = route.session.submit(body, block.detections, timeout=timeout)
            self.stats.lane_sent += 1
        self._attempts[call.id] = block.seq
        self._dispatch.sent(route, call.id)
        if block.call is not None:
            self._supersede(block.call)
        block.call = call
        block.route = route
        deadline_ns = clock_ns() + int(timeout * 1e9)
        self._timeouts.append((deadline_ns, block.seq, block.attempts))
        call.on_done = self._on_reply
        if call.done:  # failed at once: its lane's worker had gone
            self._on_reply(call)

    def _supersede(self, call: Call) -> None:
        # An earlier attempt stays registered, so that its late reply is seen (and
        # dropped as a duplicate) rather than lost track of; the oldest are let go.
        self._superseded.append(call)
        while len(self._superseded) > 4 * self.window:
            old = self._superseded.popleft()
            if self._attempts.pop(old.id, None) is not None:
                old.abandon()
                self._dispatch.done(old.id)

    # --- receiving ------------------------------------------------------------------

    def _take_ready(self) -> list[BlockResult]:
        out = list(self._ready)
        self._ready.clear()
        return out

    # --- waiting, planned once: each plan yields how long to receive next (ns), and
    # Stream and AsyncStream receive for that long, each its own way.

    def _room_plan(self, timeout: float | None) -> Iterator[int]:
        """Until the window has room; raises WindowFull after ``timeout`` s (default:
        ``block_timeout``)."""
        wait_s = self.block_timeout if timeout is None else timeout
        end_ns = clock_ns() + int(wait_s * 1e9)
        while self.backlog >= self.window:
            left_ns = end_ns - clock_ns()
            if left_ns <= 0:
                raise WindowFull(self.id, self.window, wait_s)
            yield left_ns

    def _poll_plan(self, timeout: float) -> Iterator[int]:
        """Until a result is ready in order, or ``timeout`` s; past it, one last look (a
        receive takes every reply already here)."""
        end_ns = clock_ns() + int(timeout * 1e9)
        while not self._ready and self.backlog:
            left_ns = end_ns - clock_ns()
            yield max(0, left_ns)
            if left_ns <= 0:
                return

    def _drain_plan(self, timeout: float) -> Iterator[int]:
        """Until every block sent has its result, or ``timeout`` s."""
        end_ns = clock_ns() + int(timeout * 1e9)
        while self.backlog:
            left_ns = end_ns - clock_ns()
            if left_ns <= 0:
                return
            yield left_ns

    def _bounded_wait_ns(self, wait_ns: int) -> int:
        """``wait_ns``, cut short at the next block deadline, and at the next look at the
        lanes' workers."""
        if self._timeouts:
            wait_ns = min(wait_ns, max(0, self._timeouts[0][0] - clock_ns()))
        check_ns = self._dispatch.next_check_ns()
        if check_ns is not None:
            wait_ns = min(wait_ns, max(0, check_ns - time.monotonic_ns()))
        return wait_ns

    def _after_receive(self) -> None:
        """After a receive: look at the lanes' workers, then retry the blocks past their
        deadline."""
        self._dispatch.check_lanes(time.monotonic_ns())
        self._expire(clock_ns())

    def _expire(self, now: int) -> None:
        """Retry (or fail) every block past its deadline."""
        # Entries of answered (or already re-sent) attempts go as soon as they reach the
        # head, so the deque holds about the window, and the head bounds a wait by a
        # deadline that can still fire.
        timeouts = self._timeouts
        while timeouts:
            deadline, seq, attempt = timeouts[0]
            block = self._inflight.get(seq)
            if block is not None and block.attempts == attempt:
                if deadline > now:
                    return
                timeouts.popleft()
                self._retry_or_fail(block, RequestTimeout(self.service, seq, self.block_timeout))
            else:
                timeouts.popleft()

    def _on_reply(self, call: Call) -> None:
        route = self._dispatch.done(call.id)
        try:
            self._take_reply(call, route)
        finally:
            self._fill()  # the reply freed room

    def _take_reply(self, call: Call, route: Route | None) -> None:
        seq = self._attempts.pop(call.id, None)
        if seq is None:
            return
        outcome = call.outcome
        if (
            route is not None
            and route.session is not None
            and isinstance(outcome, SessionLost)
            and self._dispatch.lose(route, str(outcome))
        ):
            self.stats.lanes_lost += 1
            self._to_close.append(route.session)
            log.warning("stream %s: lane to worker %s lost: %s", self.id, route.name, outcome)
        block = self._inflight.get(seq)
        if block is None:
            self.stats.duplicates_dropped += 1
            return
        if call is not block.call and not isinstance(outcome, Message):
            return  # an attempt already superseded failed; the block's latest goes on
        if isinstance(outcome, BrokerLost):
            block.broker_lost += 1
            self.stats.resent += 1
            self._retry_or_fail(block, outcome)
        elif isinstance(outcome, UnknownModel) and block.model in self._model_texts:
            # A new broker's store is empty: store the models again, then the block.
            self._put_models_again()
            self._retry_or_fail(block, outcome)
        elif isinstance(outcome, _RETRIABLE):
            self._retry_or_fail(block, outcome)
        elif isinstance(outcome, Message):
            try:
                predictions, info = syndrome_block.read_reply(
                    outcome, stream=self.id, seq=block.seq, shots=block.detections.shape[0]
                )
            except ProtocolError as exc:
                self._complete(block, None, exc, syndrome_block.reply_info(outcome))
            else:
                if route is not None and route.session is not None:
                    self.stats.lane_decoded += 1
                else:
                    self.stats.broker_decoded += 1
                self._complete(block, predictions, None, info)
        elif isinstance(outcome, NearloopError):
            self._complete(block, None, outcome, {})
        else:  # no block call has an on_partial that could fail it
            self._complete(block, None, ProtocolError(f"block {seq}: {outcome!r}"), {})

    def _retry_or_fail(self, block: _Block, error: NearloopError) -> None:
        if block.attempts - block.broker_lost >= self.max_attempts:
            if block.call is not None and block.call.id in self._attempts:
                self._supersede(block.call)
            self._complete(block, None, error, {})
            return
        self.stats.retried += 1
        self._waiting.appendleft(block)  # before the blocks not yet sent at all
        self._fill()

    def _complete(
        self,
        block: _Block,
        predictions: npt.NDArray[np.uint8] | None,
        error: NearloopError | None,
        info: dict[str, Any],
    ) -> None:
        del self._inflight[block.seq]
        done = clock_ns()
        late = self.deadline_ns is not None and done - block.emitted_ns > self.deadline_ns
        result = BlockResult(
            block.seq, block.emitted_ns, done, block.attempts, late, predictions, error, info
        )
        if error is None:
            self.stats.decoded += 1
            self.reaction.observe(done - block.emitted_ns)
        else:
            self.stats.failed += 1
        if late:
            self.stats.late += 1
        self._done[block.seq] = result
        while self._next_out in self._done:
            self._ready.append(self._done.pop(self._next_out))
            self._next_out += 1

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Export this stream's reaction time and backlog from ``registry``
        (``nearloop_stream_reaction_seconds`` and ``nearloop_stream_backlog``, labelled
        by service, summed with the other streams registered there): see
        :mod:`client.stream_metrics`. Recording costs the stream nothing more."""
        from client.stream_metrics import stream_metrics

        stream_metrics(registry).add(self)

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"{type(self).__name__}({self.id}, service={self.service!r}, "
            f"model={self.model_hash[:12]}, sent={s.sent}, backlog={self.backlog}/{self.window}, "
            f"lanes={len(self.lanes)}, lost={s.lost})"
        )


class Stream(StreamState):
    """A producer's stream of syndrome blocks to one decoder service, on a
    :class:`~client.Client` (see :class:`StreamState` for what it guarantees).

    - :meth:`send` never waits while the window has room; when it is full it receives
      results until there is room, or raises :class:`WindowFull` after its timeout.
    - :meth:`poll` returns the results that are ready, in sequence order.
    - ``lane``: ``"auto"`` (the default) sends the blocks of co-located workers over one
      shared-memory lane each and the rest through the broker; ``"off"`` sends them all
      through the broker; ``"require"`` raises :class:`~client.errors.LaneUnavailable`
      unless every worker of the service has a lane, and never uses the broker for
      blocks. :attr:`lanes` names the workers reached over a lane. :meth:`close` (or a
      ``with`` block) closes the lanes.
    - ``client`` may be a broker's endpoint instead of a :class:`~client.Client`: the
      stream then makes its own client, with ``curve=(client_cert, broker_public_key)``
      for a CURVE broker, and closes it with the stream. A ``Client`` brings its own
      keys, so ``curve=`` beside one is an error.

    >>> s = Stream(client, "decode", dem, window=32, deadline_us=1000)  # doctest: +SKIP
    >>> s = Stream("tcp://qpu-node:5555", "decode", dem, curve=keys)     # doctest: +SKIP
    >>> seq = s.send(detections)                                         # doctest: +SKIP
    >>> for r in s.poll(timeout=1.0): ...                                # doctest: +SKIP
    """

    client: Client

    def __init__(
        self,
        client: Client | str,
        service: str,
        model: Any,
        *,
        window: int = DEFAULT_WINDOW,
        deadline_us: int | None = None,
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_id: str | None = None,
        lane: LaneMode = "auto",
        curve: CurveSpec | None = None,
    ) -> None:
        client, own = _client_of(Client, client, curve)
        try:
            super().__init__(
                client,
                service,
                window=window,
                deadline_us=deadline_us,
                block_timeout=block_timeout,
                max_attempts=max_attempts,
                stream_id=stream_id,
                lane=lane,
            )
            self.switch_model(model)
            self._open_routes()
        except BaseException:
            if own is not None:
                own.close()
            raise
        self._own: Client | None = own

    def _open_routes(self) -> None:
        """One lane session per co-located worker of the service (see the module)."""
        if not self._lanes_wanted():
            return
        workers = self._workers_of(self.client.broker_stats())
        sessions: list[Any] = []
        try:
            for _ in range(workers):
                try:
                    sessions.append(self.client.open_session(self.service, lane="auto"))
                except ServiceUnavailable:
                    break  # a worker left meanwhile
            extra = self._take_sessions(sessions, workers)
        except BaseException:
            _close_quietly(sessions)
            raise
        _close_quietly(extra)

    def close(self) -> None:
        """Close the stream's lane sessions (their workers free the lanes). Results not
        yet taken are dropped; the client stays open, unless the stream made it from an
        endpoint. Idempotent."""
        _close_quietly(self._sessions_open())
        if self._own is not None:
            self._own.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def switch_model(self, model: Any) -> str:
        """Use a new noise model for the blocks sent from now on; returns its hash.

        ``model`` is a stim ``DetectorErrorModel`` (anything whose ``str()`` is the model
        text and that has ``num_detectors``) or the text itself. Blocks already sent keep
        the model they were sent with; no worker restarts.
        """
        return self._use_model(model, self.client.put_model(_model_text(model)))

    def send(
        self,
        detections: npt.NDArray[np.uint8],
        *,
        emitted_ns: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send one block; returns its sequence number.

        ``detections`` is ``uint8 (shots, ceil(num_detectors / 8))``, bit-packed as stim
        packs it (else :class:`~client.errors.BadBlock`, and nothing is sent).
        ``emitted_ns`` is when the block was produced (``time.perf_counter_ns()``;
        default: now). With the window full this waits for room, up to ``timeout``
        seconds (default: ``block_timeout``), then raises :class:`WindowFull`. Do not
        modify a large block until its result arrives.
        """
        detections = self._check(detections)
        if self.backlog >= self.window:
            # Pushed back, the producer sleeps: a spin would take CPU from the decoders
            # it is waiting for.
            for wait_ns in self._room_plan(timeout):
                self._pump(wait_ns, spin=False)
        return self._add(detections, emitted_ns)

    def poll(self, timeout: float = 0.0) -> list[BlockResult]:
        """The results ready in sequence order, waiting up to ``timeout`` seconds for at
        least one if none is ready."""
        if not self._ready and self.backlog:
            for wait_ns in self._poll_plan(timeout):
                self._pump(wait_ns)
        return self._take_ready()

    def drain(self, timeout: float) -> list[BlockResult]:
        """Wait until every block sent has its result, or ``timeout`` seconds; returns the
        results not yet taken, in order. Check ``stats.lost`` afterwards."""
        for wait_ns in self._drain_plan(timeout):
            self._pump(wait_ns)
        return self._take_ready()

    def _pump(self, wait_ns: int, *, spin: bool = True) -> None:
        """Receive replies for up to ``wait_ns`` (cut short at the next block deadline),
        then retry the blocks past their deadline."""
        receive = self.client.receive
        if receive(self._bounded_wait_ns(wait_ns) / 1e9, spin=spin):
            while receive(0):
                pass  # take everything already here before looking at deadlines
        self._after_receive()
        if self._to_close:
            _close_quietly(self._take_lost())


class AsyncStream(StreamState):
    """A producer's stream of syndrome blocks to one decoder service, on an
    :class:`~client.AsyncClient`: :class:`Stream`'s semantics, awaited. Open one with
    :meth:`open`, which stores the model first.

    >>> s = await AsyncStream.open(client, "decode", dem, window=32)    # doctest: +SKIP
    >>> seq = await s.send(detections)                                   # doctest: +SKIP
    >>> for r in await s.poll(timeout=1.0): ...                          # doctest: +SKIP
    """

    _own: AsyncClient | None = None
    """The client :meth:`open` made from an endpoint, which :meth:`close` closes."""

    client: AsyncClient

    @classmethod
    async def open(
        cls,
        client: AsyncClient | str,
        service: str,
        model: Any,
        *,
        window: int = DEFAULT_WINDOW,
        deadline_us: int | None = None,
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_id: str | None = None,
        lane: LaneMode = "auto",
        curve: CurveSpec | None = None,
    ) -> AsyncStream:
        """A stream to ``service`` whose blocks use ``model`` (see :meth:`switch_model`),
        over lanes where it can (``lane``), on ``client`` or on its own client of an
        endpoint (``curve``): see :class:`Stream`."""
        client, own = _client_of(AsyncClient, client, curve)
        try:
            stream = cls(
                client,
                service,
                window=window,
                deadline_us=deadline_us,
                block_timeout=block_timeout,
                max_attempts=max_attempts,
                stream_id=stream_id,
                lane=lane,
            )
            stream._own = own
            await stream.switch_model(model)
            await stream._open_routes()
        except BaseException:
            if own is not None:
                await own.close()
            raise
        return stream

    async def _open_routes(self) -> None:
        """One lane session per co-located worker of the service; see :class:`Stream`."""
        if not self._lanes_wanted():
            return
        workers = self._workers_of(await self.client.broker_stats())
        sessions: list[Any] = []
        try:
            for _ in range(workers):
                try:
                    sessions.append(await self.client.open_session(self.service, lane="auto"))
                except ServiceUnavailable:
                    break
            extra = self._take_sessions(sessions, workers)
        except BaseException:
            await _aclose_quietly(sessions)
            raise
        await _aclose_quietly(extra)

    async def close(self) -> None:
        """Close the stream's lane sessions (and its own client); see :meth:`Stream.close`."""
        await _aclose_quietly(self._sessions_open())
        if self._own is not None:
            await self._own.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def switch_model(self, model: Any) -> str:
        """Use a new noise model for the blocks sent from now on; returns its hash. See
        :meth:`Stream.switch_model`."""
        return self._use_model(model, await self.client.put_model(_model_text(model)))

    async def send(
        self,
        detections: npt.NDArray[np.uint8],
        *,
        emitted_ns: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send one block; returns its sequence number. See :meth:`Stream.send`."""
        if not self.model_hash:
            raise RuntimeError(f"stream {self.id} has no model: open it with AsyncStream.open")
        detections = self._check(detections)
        if self.backlog >= self.window:
            for wait_ns in self._room_plan(timeout):
                await self._pump(wait_ns, spin=False)  # pushed back: sleep, as Stream.send
        return self._add(detections, emitted_ns)

    async def poll(self, timeout: float = 0.0) -> list[BlockResult]:
        """The results ready in sequence order, waiting up to ``timeout`` seconds for at
        least one if none is ready."""
        if not self._ready and self.backlog:
            for wait_ns in self._poll_plan(timeout):
                await self._pump(wait_ns)
        return self._take_ready()

    async def drain(self, timeout: float) -> list[BlockResult]:
        """Wait until every block sent has its result, or ``timeout`` seconds; returns the
        results not yet taken, in order. Check ``stats.lost`` afterwards."""
        for wait_ns in self._drain_plan(timeout):
            await self._pump(wait_ns)
        return self._take_ready()

    async def _pump(self, wait_ns: int, *, spin: bool = True) -> None:
        """Receive replies for up to ``wait_ns`` (cut short at the next block deadline),
        then retry the blocks past their deadline. A receive takes every reply already
        here: the client's reader drains the socket."""
        await self.client.receive(self._bounded_wait_ns(wait_ns) / 1e9, spin=spin)
        self._after_receive()
        if self._to_close:
            await _aclose_quietly(self._take_lost())


ClientT = TypeVar("ClientT", Client, AsyncClient)


def _client_of(
    kind: type[ClientT], client: ClientT | str, curve: CurveSpec | None
) -> tuple[ClientT, ClientT | None]:
    """The client a stream uses, and the same again if the stream made it for itself
    from an endpoint (else None); ``curve`` goes only with an endpoint."""
    if isinstance(client, str):
        own = kind(client, curve=curve)
        return own, own
    if curve is not None:
        raise ValueError(
            "curve= goes with an endpoint: a client brings its own keys (Client(ep, curve=...))"
        )
    return client, None


def _close_quietly(sessions: list[Any]) -> None:
    """Close sessions; one the broker has forgotten already (its worker died) says so,
    and that is fine."""
    for s in sessions:
        with contextlib.suppress(NearloopError):
            s.close()


async def _aclose_quietly(sessions: list[Any]) -> None:
    """:func:`_close_quietly`, for an :class:`~client.AsyncClient`'s sessions."""
    for s in sessions:
        with contextlib.suppress(NearloopError):
            await s.close()
