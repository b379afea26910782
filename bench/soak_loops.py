"""The two loops ``bench soak`` keeps running, each on a thread and a client of its own.

- :class:`ParamLoop`, the parameter loop: a ``qpu`` estimate of H2 (exact, 4 seeded
  random parameters) every ``request_period_ms``, through the broker (no session, so
  the call is a plain request that any ``qpu`` worker may serve). A request that is
  late does not make the next ones come in a burst: the next is sent a period after
  this one was, or at once if that is past.
- :class:`StreamLoop`, the syndrome loop: a :class:`client.Stream` of d x d surface-code
  blocks to the decoder service, one every ``block_period_us`` on a
  :class:`~control_sim.qec.pacing.PacingClock`, receiving results until each tick as
  ``control_sim qec`` does. The blocks are sampled before the run (a pool, sent in
  turn), since a control system's blocks come from hardware, not from its CPU.

Both go through the broker (no lane): the kills hit that path, and ``bench stream`` and
``bench vqe`` measure the lanes. Both clients wait in the kernel (``spin_us=0``): on two
cores the decoders need the CPU that a spin would take. Each loop records, for every
request or block, when it was sent (seconds since the run's start) and its latency,
and counts what failed by error type; it never raises out of its thread (an error that
ends it is kept in :attr:`error`).
"""

from __future__ import annotations

import threading
import time
from array import array
from collections import Counter
from typing import Final

import numpy as np
import numpy.typing as npt

from bench.soak_config import SoakConfig
from client import BlockResult, Client, NearloopError, Stream
from control_sim.qec.codes import CodeSpec
from control_sim.qec.pacing import PacingClock
from control_sim.qec.run import receive_until_tick
from control_sim.qec.source import SyndromeSampler
from control_sim.qpu.client import QpuClient
from control_sim.qpu.names import DEFAULT_SERVICE as QPU_SERVICE
from control_sim.vqe import h2
from control_sim.vqe.driver import h2_registration
from decoders.names import DEFAULT_DECODER_SERVICE

BLOCK_POOL: Final = 32
"""Distinct blocks sampled before the run and sent in turn."""
WARMUP_BLOCKS: Final = 8
"""Blocks sent and drained before the run, so the workers have compiled the model."""
STREAM_WINDOW: Final = 64
DRAIN_TIMEOUT_S: Final = 60.0
SEND_TIMEOUT_S: Final = 60.0
"""How long a send waits for room in a full window: longer than a broker restart takes."""


class LoopSamples:
    """Latencies with the time each was sent, and the failures, of one loop (one
    thread writes, the report reads after the thread has ended).

    The samples are kept as raw 8-byte numbers (:mod:`array`), 16 bytes per request or
    block, not as Python objects (~80): this process's RSS is among those the soak
    watches, and at the default pace a 30-minute run keeps ~216,000 samples, ~3.5 MB.
    """

    def __init__(self) -> None:
        self.sent_s = array("d")
        self.latency_ns = array("q")
        self.failed_s: list[float] = []
        self.failed_after_ns: list[int] = []
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []

    def ok(self, sent_s: float, latency_ns: int) -> None:
        """One answered request or decoded block."""
        self.sent_s.append(sent_s)
        self.latency_ns.append(latency_ns)

    def failed(self, sent_s: float, after_ns: int, error: BaseException) -> None:
        """One request or block that ended with ``error``, ``after_ns`` after it was sent."""
        self.failed_s.append(sent_s)
        self.failed_after_ns.append(after_ns)
        self.errors[type(error).__name__] += 1
        if len(self.first_errors) < 10:
            self.first_errors.append(f"at {sent_s:.1f} s: {type(error).__name__}: {error}")

    @property
    def answered(self) -> int:
        """How many were answered."""
        return len(self.latency_ns)

    def failures(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(sent seconds, ns until the failure) of the failures, as numpy arrays."""
        return np.asarray(self.failed_s, dtype=np.float64), np.asarray(
            self.failed_after_ns, dtype=np.int64
        )

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(sent seconds, latency ns) as numpy arrays (copies)."""
        sent = np.frombuffer(self.sent_s, dtype=np.float64).copy()
        return sent, np.frombuffer(self.latency_ns, dtype=np.int64).copy()


class _Loop:
    """What both loops share: a thread, a stop flag, the run's clock, the error."""

    name = "loop"

    def __init__(self, endpoint: str, config: SoakConfig, stop: threading.Event) -> None:
        self.endpoint = endpoint
        self.config = config
        self.stop = stop
        self.t0_ns = 0
        self.samples = LoopSamples()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)

    def start(self, t0_ns: int) -> None:
        """Start the loop's thread; ``t0_ns`` (``perf_counter_ns``) is the run's start."""
        self.t0_ns = t0_ns
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; True if it has (or never started)."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Close what the loop opened (its client); call it once the thread has ended."""
        raise NotImplementedError

    def _since_start_s(self, ns: int) -> float:
        return (ns - self.t0_ns) / 1e9

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:  # kept for the report; the run goes on and fails there
            self.error = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        raise NotImplementedError


class ParamLoop(_Loop):
    """The parameter loop (see the module); :meth:`prepare` registers H2 first."""

    name = "param-loop"

    def __init__(self, endpoint: str, config: SoakConfig, stop: threading.Event) -> None:
        super().__init__(endpoint, config, stop)
        self.sent = 0
        self._client = Client(endpoint, timeout=config.request_timeout_s, spin_us=0)
        self._qpu = QpuClient(self._client, QPU_SERVICE, timeout=config.request_timeout_s)
        self._circuit = ""

    def prepare(self) -> None:
        """Register the circuit and make one untimed call."""
        source, observables = h2_registration()
        self._circuit = self._qpu.register_qasm3(source, observables).circuit
        self._qpu.estimate(self._circuit, np.zeros(h2.NUM_PARAMETERS))

    def close(self) -> None:
        """Close the loop's client."""
        self._client.close()

    def link_counts(self) -> dict[str, int]:
        """What the client saw of its broker: drops, restarts, requests re-sent and
        failed with BrokerLost (:meth:`client.Client.link_counts`)."""
        return self._client.link_counts()

    def _run(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        period_ns = int(self.config.request_period_ms * 1e6)
        next_ns = time.perf_counter_ns()
        while not self.stop.is_set():
            params = rng.uniform(-np.pi, np.pi, h2.NUM_PARAMETERS)
            t1 = time.perf_counter_ns()
            self.sent += 1
            try:
                self._qpu.estimate(self._circuit, params)
            except NearloopError as exc:
                self.samples.failed(self._since_start_s(t1), time.perf_counter_ns() - t1, exc)
            else:
                self.samples.ok(self._since_start_s(t1), time.perf_counter_ns() - t1)
            next_ns = max(next_ns + period_ns, time.perf_counter_ns())
            self.stop.wait(max(next_ns - time.perf_counter_ns(), 0) / 1e9)


class StreamLoop(_Loop):
    """The syndrome loop (see the module); :meth:`prepare` samples and warms up."""

    name = "stream-loop"

    def __init__(self, endpoint: str, config: SoakConfig, stop: threading.Event) -> None:
        super().__init__(endpoint, config, stop)
        spec = CodeSpec("surface", config.distance, config.distance, config.p)
        self._sampler = SyndromeSampler(spec, seed=config.seed)
        self._client = Client(endpoint, timeout=config.request_timeout_s, spin_us=0)
        self._blocks = [
            self._sampler.sample_block(config.block_shots)[0] for _ in range(BLOCK_POOL)
        ]
        self.stream: Stream | None = None
        self.clock = PacingClock(config.block_period_us)
        self.drained = True

    def prepare(self) -> None:
        """Open the stream and decode a few blocks on it before the run (so the workers
        compile the model); the counts the report gives are the run's alone."""
        self.stream = Stream(
            self._client,
            DEFAULT_DECODER_SERVICE,
            self._sampler.dem,
            window=STREAM_WINDOW,
            block_timeout=self.config.request_timeout_s,
            lane="off",
        )
        for i in range(WARMUP_BLOCKS):
            self.stream.send(self._blocks[i % BLOCK_POOL], timeout=SEND_TIMEOUT_S)
        self.stream.drain(DRAIN_TIMEOUT_S)
        if self.stream.stats.decoded != WARMUP_BLOCKS:
            raise NearloopError(
                f"warm-up: {self.stream.stats.decoded} of {WARMUP_BLOCKS} blocks decoded"
            )
        self.warmup = self._counts()

    def close(self) -> None:
        """Close the stream and its client."""
        if self.stream is not None:
            self.stream.close()
        self._client.close()

    def _counts(self) -> dict[str, int]:
        assert self.stream is not None
        s = self.stream.stats
        return {
            "sent": s.sent,
            "decoded": s.decoded,
            "failed": s.failed,
            "lost": s.lost,
            "retried": s.retried,
            "duplicates_dropped": s.duplicates_dropped,
            "late": s.late,
            "resent": s.resent,
            "reconnects": s.reconnects,
            "models_restored": s.models_restored,
        }

    def counts(self) -> dict[str, int]:
        """The stream's counters over the run (the warm-up's taken off), and its
        largest backlog and the clock's late ticks (released behind schedule: the
        window was full)."""
        now, warm = self._counts(), self.warmup
        out = {k: now[k] - warm[k] for k in now}
        assert self.stream is not None
        out["backlog_max"] = self.stream.stats.backlog_max
        out["late_ticks"] = self.clock.late_ticks
        return out

    @property
    def slip_max_ms(self) -> float:
        """How far behind its schedule the clock released a tick at worst, in ms."""
        return self.clock.slip_us_max / 1000.0

    def _take(self, results: list[BlockResult]) -> None:
        for r in results:
            sent_s = self._since_start_s(r.emitted_ns)
            if r.error is None:
                self.samples.ok(sent_s, r.reaction_ns)
            else:
                self.samples.failed(sent_s, r.reaction_ns, r.error)

    def _run(self) -> None:
        stream = self.stream
        if stream is None:
            raise RuntimeError("prepare() first")
        i = 0
        self.drained = False
        try:
            while not self.stop.is_set():
                receive_until_tick(stream, self.clock, self._take)
                emitted = self.clock.wait_next()
                stream.send(
                    self._blocks[i % BLOCK_POOL], emitted_ns=emitted, timeout=SEND_TIMEOUT_S
                )
                i += 1
                self._take(stream.poll(0))
        finally:
            self._take(stream.drain(DRAIN_TIMEOUT_S))
            self.drained = stream.backlog == 0
