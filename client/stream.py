"""Syndrome streams: blocks of bit-packed detection events to a decoder service, results
back in sequence order, with a bounded window, duplicate dropping and reaction times.

A block is one nearloop request to the decoder service, in the schema of
:mod:`client.syndrome_block`. The model text goes to the broker's model store once
(``nl.model.put``); blocks carry only its hash.

:class:`StreamState` keeps a stream's books (the window, the reorder buffer, retries and
expiry) and never waits. :class:`Stream` runs it on a :class:`~client.Client`, and
:class:`AsyncStream` on an :class:`~client.AsyncClient`; they differ only in how they
wait for replies.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from client import syndrome_block
from client.async_client import AsyncClient
from client.connection import Call
from client.errors import (
    BadBlock,
    BrokerShutdown,
    NearloopError,
    ProtocolError,
    RequestTimeout,
    WindowFull,
    WorkerLost,
)
from client.messages import Message
from client.sync_client import Client

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
    call: Call | None = None


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
    - A block whose worker died is re-dispatched by the broker; one that still gets no
      reply within ``block_timeout`` (or that the broker gives up on) is sent again, up
      to ``max_attempts``. A second reply for a (stream, seq) is dropped and counted.
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
        self._superseded: deque[Call] = deque()
        self._done: dict[int, BlockResult] = {}  # the reorder buffer
        self._ready: deque[BlockResult] = deque()
        self._next_seq = 0
        self._next_out = 0
        self._timeouts: deque[tuple[int, int, int]] = deque()  # (deadline_ns, seq, attempt)

    # --- the model ------------------------------------------------------------------

    def _use_model(self, model: Any, model_hash: str) -> str:
        """Blocks sent from now on carry ``model_hash``, the stored hash of ``model``."""
        self.model_hash = model_hash
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
        self._submit(block)
        return seq

    def _submit(self, block: _Block) -> None:
        block.attempts += 1
        body = syndrome_block.request_body(
            self.id, block.seq, block.model, emitted_ns=block.emitted_ns
        )
        call = self.client.submit(self.service, body, block.detections, timeout=self.block_timeout)
        call.on_done = self._on_reply
        self._attempts[call.id] = block.seq
        if block.call is not None:
            self._supersede(block.call)
        block.call = call
        deadline_ns = clock_ns() + int(self.block_timeout * 1e9)
        self._timeouts.append((deadline_ns, block.seq, block.attempts))

    def _supersede(self, call: Call) -> None:
        # An earlier attempt stays registered, so that its late reply is seen (and
        # dropped as a duplicate) rather than lost track of; the oldest are let go.
        self._superseded.append(call)
        while len(self._superseded) > 4 * self.window:
            old = self._superseded.popleft()
            if self._attempts.pop(old.id, None) is not None:
                old.abandon()

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
        """``wait_ns``, cut short at the next block deadline."""
        if self._timeouts:
            return min(wait_ns, max(0, self._timeouts[0][0] - clock_ns()))
        return wait_ns

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
        seq = self._attempts.pop(call.id, None)
        if seq is None:
            return
        outcome = call.outcome
        block = self._inflight.get(seq)
        if block is None:
            self.stats.duplicates_dropped += 1
            return
        if isinstance(outcome, _RETRIABLE):
            self._retry_or_fail(block, outcome)
        elif isinstance(outcome, Message):
            try:
                predictions, info = syndrome_block.read_reply(
                    outcome, stream=self.id, seq=block.seq, shots=block.detections.shape[0]
                )
            except ProtocolError as exc:
                self._complete(block, None, exc, syndrome_block.reply_info(outcome))
            else:
                self._complete(block, predictions, None, info)
        elif isinstance(outcome, NearloopError):
            self._complete(block, None, outcome, {})
        else:  # no block call has an on_partial that could fail it
            self._complete(block, None, ProtocolError(f"block {seq}: {outcome!r}"), {})

    def _retry_or_fail(self, block: _Block, error: NearloopError) -> None:
        if block.attempts >= self.max_attempts:
            if block.call is not None and block.call.id in self._attempts:
                self._supersede(block.call)
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
            f"{type(self).__name__}({self.id}, service={self.service!r}, "
            f"model={self.model_hash[:12]}, sent={s.sent}, backlog={self.backlog}/{self.window}, "
            f"lost={s.lost})"
        )


class Stream(StreamState):
    """A producer's stream of syndrome blocks to one decoder service, on a
    :class:`~client.Client` (see :class:`StreamState` for what it guarantees).

    - :meth:`send` never waits while the window has room; when it is full it receives
      results until there is room, or raises :class:`WindowFull` after its timeout.
    - :meth:`poll` returns the results that are ready, in sequence order.

    >>> s = Stream(client, "decode", dem, window=32, deadline_us=1000)  # doctest: +SKIP
    >>> seq = s.send(detections)                                         # doctest: +SKIP
    >>> for r in s.poll(timeout=1.0): ...                                # doctest: +SKIP
    """

    client: Client

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
        super().__init__(
            client,
            service,
            window=window,
            deadline_us=deadline_us,
            block_timeout=block_timeout,
            max_attempts=max_attempts,
            stream_id=stream_id,
        )
        self.switch_model(model)

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
        self._expire(clock_ns())


class AsyncStream(StreamState):
    """A producer's stream of syndrome blocks to one decoder service, on an
    :class:`~client.AsyncClient`: :class:`Stream`'s semantics, awaited. Open one with
    :meth:`open`, which stores the model first.

    >>> s = await AsyncStream.open(client, "decode", dem, window=32)    # doctest: +SKIP
    >>> seq = await s.send(detections)                                   # doctest: +SKIP
    >>> for r in await s.poll(timeout=1.0): ...                          # doctest: +SKIP
    """

    client: AsyncClient

    @classmethod
    async def open(
        cls,
        client: AsyncClient,
        service: str,
        model: Any,
        *,
        window: int = DEFAULT_WINDOW,
        deadline_us: int | None = None,
        block_timeout: float = DEFAULT_BLOCK_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        stream_id: str | None = None,
    ) -> AsyncStream:
        """A stream to ``service`` whose blocks use ``model`` (see :meth:`switch_model`)."""
        stream = cls(
            client,
            service,
            window=window,
            deadline_us=deadline_us,
            block_timeout=block_timeout,
            max_attempts=max_attempts,
            stream_id=stream_id,
        )
        await stream.switch_model(model)
        return stream

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
        self._expire(clock_ns())
