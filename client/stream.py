"""Syndrome streams: blocks of bit-packed detection events to a decoder service, results
back in sequence order, with a bounded window, duplicate dropping and reaction times.

A block is one nearloop request to the decoder service. Its header body is
``{"stream": id, "seq": n, "model": hash, "emitted_ns": t}`` and its one array is the
detection events, ``uint8 (shots, ceil(num_detectors / 8))`` in stim's bit-packed layout.
The reply's body echoes ``stream`` and ``seq`` and its one array holds the predicted
observable flips, ``uint8 (shots, ceil(num_observables / 8))``. The model text goes to the
broker's model store once (``nl.model.put``); blocks carry only its hash.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from client.errors import (
    BrokerShutdown,
    NearloopError,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    WindowFull,
    WorkerLost,
)
from client.messages import Message
from client.sync_client import Client, PendingReply

clock_ns: Final = time.perf_counter_ns

DEFAULT_WINDOW: Final = 64
DEFAULT_BLOCK_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_ATTEMPTS: Final = 3
_RETRIABLE: Final = (WorkerLost, BrokerShutdown)


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
    """Counters of one stream; ``lost`` is what was sent and has no outcome yet."""

    sent: int = 0
    decoded: int = 0
    failed: int = 0
    retried: int = 0
    duplicates_dropped: int = 0
    late: int = 0
    backlog_max: int = 0
    model_switches: int = 0

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
    pending: PendingReply | None = None


class Stream:
    """A producer's stream of syndrome blocks to one decoder service.

    - :meth:`send` never waits while the window has room; when it is full it receives
      results until there is room, or raises :class:`WindowFull` after its timeout. It
      never drops a block.
    - :meth:`poll` returns the results that are ready, in sequence order; a block that
      failed comes back with ``error`` set, in its place, and the stream goes on.
    - A block whose worker died is re-dispatched by the broker; one that still gets no
      reply within ``block_timeout`` (or that the broker gives up on) is sent again, up
      to ``max_attempts``. A second reply for a (stream, seq) is dropped and counted.

    >>> s = Stream(client, "decode", dem, window=32, deadline_us=1000)  # doctest: +SKIP
    >>> seq = s.send(detections)                                         # doctest: +SKIP
    >>> for r in s.poll(timeout=1.0): ...                                # doctest: +SKIP
    """

    def __init__(
        self,
        client: Client,
        service: str,
        model: Any,
        *,
        window: int = DEFAULT_WINDOW,
        deadline_us: int | None = None,
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_id: str | None = None,
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
        self.id = stream_id or os.urandom(6).hex()
        self.window = window
        self.deadline_ns = None if deadline_us is None else deadline_us * 1000
        self.block_timeout = block_timeout
        self.max_attempts = max_attempts
        self.stats = StreamStats()
        self.model_hash = ""
        self.num_detectors: int | None = None
        self._inflight: dict[int, _Block] = {}
        self._attempts: dict[int, int] = {}  # request id -> seq, for every attempt sent
        self._superseded: deque[PendingReply] = deque()
        self._done: dict[int, BlockResult] = {}  # the reorder buffer
        self._ready: deque[BlockResult] = deque()
        self._next_seq = 0
        self._next_out = 0
        self._timeouts: deque[tuple[int, int, int]] = deque()  # (deadline_ns, seq, attempt)
        self.switch_model(model)

    # --- the model ------------------------------------------------------------------

    def switch_model(self, model: Any) -> str:
        """Use a new noise model for the blocks sent from now on; returns its hash.

        ``model`` is a stim ``DetectorErrorModel`` (anything whose ``str()`` is the model
        text and that has ``num_detectors``) or the text itself. Blocks already sent keep
        the model they were sent with; no worker restarts.
        """
        text = str(model) if not isinstance(model, (str, bytes)) else model
        raw = text.encode() if isinstance(text, str) else text
        self.model_hash = self.client.put_model(raw)
        n = getattr(model, "num_detectors", None)
        self.num_detectors = int(n) if n is not None else None
        if self._next_seq:
            self.stats.model_switches += 1
        return self.model_hash

    # --- sending --------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Blocks sent whose results are not yet ready in order."""
        return self._next_seq - self._next_out

    def send(
        self,
        detections: npt.NDArray[np.uint8],
        *,
        emitted_ns: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send one block; returns its sequence number.

        ``detections`` is ``uint8 (shots, ceil(num_detectors / 8))``, bit-packed as stim
        packs it. ``emitted_ns`` is when the block was produced
        (``time.perf_counter_ns()``; default: now). With the window full this waits for
        room, up to ``timeout`` seconds (default: ``block_timeout``), then raises
        :class:`WindowFull`. Do not modify a large block until its result arrives.
        """
        self._check_block(detections)
        if self.backlog >= self.window:
            wait_s = self.block_timeout if timeout is None else timeout
            end = clock_ns() + int(wait_s * 1e9)
            while self.backlog >= self.window:
                left = end - clock_ns()
                if left <= 0:
                    raise WindowFull(self.id, self.window, wait_s)
                # Pushed back, the producer sleeps: a spin would take CPU from the
                # decoders it is waiting for.
                self._pump(left, spin=False)
        seq = self._next_seq
        self._next_seq += 1
        emitted = clock_ns() if emitted_ns is None else emitted_ns
        block = _Block(seq, detections, emitted, self.model_hash)
        self._inflight[seq] = block
        self.stats.sent += 1
        self.stats.backlog_max = max(self.stats.backlog_max, self.backlog)
        self._submit(block)
        return seq

    def _check_block(self, detections: npt.NDArray[np.uint8]) -> None:
        if not isinstance(detections, np.ndarray) or detections.dtype != np.uint8:
            got = getattr(detections, "dtype", type(detections).__name__)
            raise TypeError(f"stream {self.id}: a block must be a uint8 ndarray, got {got}")
        if detections.ndim != 2:
            raise ValueError(
                f"stream {self.id}: a block must be 2-d (shots, bytes), got {detections.shape}"
            )
        if self.num_detectors is not None:
            width = -(-self.num_detectors // 8)
            if detections.shape[1] != width:
                raise ValueError(
                    f"stream {self.id}: the model has {self.num_detectors} detectors, so "
                    f"blocks are (shots, {width}) bytes; got {detections.shape}"
                )

    def _submit(self, block: _Block) -> None:
        block.attempts += 1
        body = {"stream": self.id, "seq": block.seq, "model": block.model}
        body["emitted_ns"] = block.emitted_ns
        pending = self.client.submit(
            self.service, body, block.detections, timeout=self.block_timeout
        )
        pending.on_done = self._on_reply
        self._attempts[pending.id] = block.seq
        if block.pending is not None:
            self._supersede(block.pending)
        block.pending = pending
        deadline_ns = clock_ns() + int(self.block_timeout * 1e9)
        self._timeouts.append((deadline_ns, block.seq, block.attempts))

    def _supersede(self, pending: PendingReply) -> None:
        # An earlier attempt stays registered, so that its late reply is seen (and
        # dropped as a duplicate) rather than lost track of; the oldest are let go.
        self._superseded.append(pending)
        while len(self._superseded) > 4 * self.window:
            old = self._superseded.popleft()
            if self._attempts.pop(old.id, None) is not None:
                old.abandon()

    # --- receiving ------------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> list[BlockResult]:
        """The results ready in sequence order, waiting up to ``timeout`` seconds for at
        least one if none is ready."""
        if not self._ready and self.backlog:
            end = clock_ns() + int(timeout * 1e9)
            while not self._ready and self.backlog:
                left = end - clock_ns()
                if not self._pump(max(0, left)) and left <= 0:
                    break
        out = list(self._ready)
        self._ready.clear()
        return out

    def drain(self, timeout: float) -> list[BlockResult]:
        """Wait until every block sent has its result, or ``timeout`` seconds; returns the
        results not yet taken, in order. Check ``stats.lost`` afterwards."""
        end = clock_ns() + int(timeout * 1e9)
        while self.backlog:
            left = end - clock_ns()
            if left <= 0:
                break
            self._pump(left)
        out = list(self._ready)
        self._ready.clear()
        return out

    def _pump(self, wait_ns: int, *, spin: bool = True) -> bool:
        """Receive replies for up to ``wait_ns`` (bounded by the next block deadline);
        retry blocks past their deadline. True if a reply arrived."""
        if self._timeouts:
            wait_ns = min(wait_ns, max(0, self._timeouts[0][0] - clock_ns()))
        got = self.client.receive(wait_ns / 1e9, spin=spin)
        while got and self.client.receive(0):
            pass  # take everything already here before looking at deadlines
        self._expire(clock_ns())
        return got

    def _expire(self, now: int) -> None:
        # Entries of answered (or already re-sent) attempts go as soon as they reach the
        # head, so the deque holds about the window, and the head bounds _pump's wait
        # by a deadline that can still fire.
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

    def _on_reply(self, pending: PendingReply) -> None:
        seq = self._attempts.pop(pending.id, None)
        if seq is None:
            return
        try:
            outcome: Message | NearloopError = pending.result()
        except RemoteError as exc:
            outcome = exc
        block = self._inflight.get(seq)
        if block is None:
            self.stats.duplicates_dropped += 1
            return
        if isinstance(outcome, _RETRIABLE):
            self._retry_or_fail(block, outcome)
            return
        if isinstance(outcome, Message):
            self._complete(block, *self._decoded(block, outcome))
        else:
            self._complete(block, None, outcome, {})

    def _decoded(
        self, block: _Block, reply: Message
    ) -> tuple[npt.NDArray[np.uint8] | None, NearloopError | None, dict[str, Any]]:
        info = reply.body if isinstance(reply.body, dict) else {}
        if info.get("stream") != self.id or info.get("seq") != block.seq:
            why = f"reply names stream/seq {info.get('stream')}/{info.get('seq')}"
            return None, ProtocolError(f"{why}, not {self.id}/{block.seq}"), info
        if len(reply.arrays) != 1 or reply.arrays[0].dtype != np.uint8:
            return None, ProtocolError("a block's reply must carry one uint8 array"), info
        predictions = reply.arrays[0]
        if predictions.ndim != 2 or predictions.shape[0] != block.detections.shape[0]:
            why = f"predictions {predictions.shape} do not match the block's shots"
            return None, ProtocolError(why), info
        return predictions, None, info

    def _retry_or_fail(self, block: _Block, error: NearloopError) -> None:
        if block.attempts >= self.max_attempts:
            if block.pending is not None and block.pending.id in self._attempts:
                self._supersede(block.pending)
            self._complete(block, None, error, {})
            return
        self.stats.retried += 1
        self._submit(block)

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
        else:
            self.stats.failed += 1
        if late:
            self.stats.late += 1
        self._done[block.seq] = result
        while self._next_out in self._done:
            self._ready.append(self._done.pop(self._next_out))
            self._next_out += 1

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"Stream({self.id}, service={self.service!r}, model={self.model_hash[:12]}, "
            f"sent={s.sent}, backlog={self.backlog}/{self.window}, lost={s.lost})"
        )
