"""``python -m control_sim qec``: a syndrome stream, end to end, measured.

Sample memory-experiment blocks (stim, or qiskit-aer for small repetition codes), emit
one every ``period_us`` on a pacing clock (or as fast as the window allows), stream them
to a decoder service, apply the predictions to a logical Pauli frame, and count logical
errors against the true observables. While it waits for the next tick the producer sits
in the stream's receive, up to the tick itself, so a result's reaction time is taken when
it arrives.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from client import BlockResult, Client, Stream
from client.latency import LatencySummary
from client.wire.curve import CurveSpec
from client.wire.lanes import LaneMode
from control_sim.errors import ControlSimError
from control_sim.qec.codes import CodeSpec
from control_sim.qec.names import SamplerName
from control_sim.qec.pacing import PacingClock
from control_sim.qec.pauli_frame import LogicalFrame
from control_sim.qec.samplers import open_source
from control_sim.qec.source import SyndromeSource

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DRAIN_TIMEOUT_S: Final = 60.0
MAX_PRESAMPLED_BYTES: Final = 1 << 30
Packed = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class QecConfig:
    """One run of ``control_sim qec``."""

    spec: CodeSpec
    decoder_service: str
    shots: int
    block_shots: int
    seed: int
    period_us: int | None = None
    deadline_us: int | None = None
    """Late marking; defaults to the period when paced."""
    window: int = 64
    warmup_blocks: int = 16
    """Sent and drained before the run on a stream of their own, so that every worker
    has compiled the model (dispatch is round-robin) before the clock starts."""
    backend: SamplerName = "stim"
    block_timeout_s: float = 10.0
    lane: LaneMode = "auto"
    """The stream's ``lane=``: lanes to co-located workers (``auto``), or not."""

    def __post_init__(self) -> None:
        if self.shots < 1 or self.block_shots < 1:
            raise ValueError("shots and block_shots must be >= 1")
        if self.warmup_blocks < 0:
            raise ValueError("warmup_blocks must be >= 0")
        if self.period_us is not None and self.period_us < 1:
            raise ValueError("period_us must be >= 1")

    @property
    def blocks(self) -> int:
        """How many blocks the run sends."""
        return -(-self.shots // self.block_shots)


class _Tally:
    """Consumes results in order: Pauli frame, reaction times, failures, and which
    decoder the workers say decoded each block."""

    def __init__(self, num_observables: int) -> None:
        self.frame = LogicalFrame(num_observables)
        self.truth: dict[int, npt.NDArray[np.uint8]] = {}
        self.reaction_ns: list[int] = []
        self.errors: list[str] = []
        self.decoders: Counter[str] = Counter()

    def take(self, results: list[BlockResult]) -> None:
        for r in results:
            truth = self.truth.pop(r.seq)
            if r.predictions is not None:
                self.frame.apply(r.predictions, truth)
                self.reaction_ns.append(r.reaction_ns)
                self.decoders[str(r.info.get("decoder", "unknown"))] += 1
            elif len(self.errors) < 10:
                self.errors.append(f"block {r.seq}: {r.error}")


def run_qec(
    config: QecConfig,
    endpoint: str,
    *,
    source: SyndromeSource | None = None,
    on_start: Callable[[], None] | None = None,
    curve: CurveSpec | None = None,
    metrics: CollectorRegistry | None = None,
) -> dict[str, Any]:
    """Run the stream against the broker at ``endpoint``; returns the JSON summary.
    ``on_start`` is called as the clock starts, after the warm-up and the sampling (a
    benchmark reads its CPU counters there). ``metrics``: a registry the stream's
    reaction time and backlog are exported from (not the warm-up's)."""
    src = source or open_source(config.spec, backend=config.backend, seed=config.seed)
    clock = PacingClock(config.period_us)
    deadline_us = config.deadline_us if config.deadline_us is not None else config.period_us
    tally = _Tally(src.num_observables)
    with Client(endpoint, timeout=config.block_timeout_s, curve=curve) as client:
        _warm_up(client, config, src)
        stream = Stream(
            client,
            config.decoder_service,
            src.dem,
            window=config.window,
            deadline_us=deadline_us,
            block_timeout=config.block_timeout_s,
            lane=config.lane,
        )
        if metrics is not None:
            stream.register_metrics(metrics)
        with stream:
            blocks = _blocks(src, config)
            if on_start is not None:
                on_start()
            t0 = time.perf_counter_ns()
            for dets, obs in blocks:
                receive_until_tick(stream, clock, tally.take)
                emitted = clock.wait_next()
                seq = stream.send(dets, emitted_ns=emitted, timeout=config.block_timeout_s)
                tally.truth[seq] = obs
                tally.take(stream.poll(0))
            tally.take(stream.drain(DRAIN_TIMEOUT_S))
            wall_ns = time.perf_counter_ns() - t0
    return _summary(config, src, stream, clock, tally, wall_ns)


def _warm_up(client: Client, config: QecConfig, src: SyndromeSource) -> None:
    if not config.warmup_blocks:
        return
    warm = Stream(
        client, config.decoder_service, src.dem, window=config.warmup_blocks, lane=config.lane
    )
    dets, _ = src.sample_block(1)
    with warm:
        for _ in range(config.warmup_blocks):
            warm.send(dets, timeout=config.block_timeout_s)
        results = warm.drain(DRAIN_TIMEOUT_S)
    if warm.stats.decoded != config.warmup_blocks:
        errors = [str(r.error) for r in results if r.error is not None][:3]
        raise ControlSimError(
            f"warm-up: {warm.stats.decoded} of {config.warmup_blocks} blocks decoded "
            f"({warm.stats.lost} lost) {errors}"
        )


def _blocks(src: SyndromeSource, config: QecConfig) -> Iterator[tuple[Packed, Packed]]:
    """The run's blocks. Paced, they are all sampled before the clock starts: a control
    system's blocks come from hardware, so sampling must not sit on the producer's clock
    (or delay its receiving). Unpaced, they are sampled as they go, like the offline
    pipeline's."""
    sizes = [
        min(config.block_shots, config.shots - i)
        for i in range(0, config.shots, config.block_shots)
    ]
    if config.period_us is None:
        return (src.sample_block(n) for n in sizes)
    need = config.shots * (src.detector_bytes + src.observable_bytes)
    if need > MAX_PRESAMPLED_BYTES:
        raise ValueError(
            f"a paced run samples its {config.shots} shots first, {need} bytes, more than "
            f"{MAX_PRESAMPLED_BYTES}; run fewer shots"
        )
    return iter([src.sample_block(n) for n in sizes])


def receive_until_tick(
    stream: Stream, clock: PacingClock, take: Callable[[list[BlockResult]], None]
) -> None:
    """Hand results to ``take`` as they arrive until ``clock``'s next tick is due, so
    none waits unread while the producer waits for the clock (its reaction time is taken
    on arrival).

    A wait the client's spin covers polls right up to the tick and ends on time; a longer
    one sleeps in the kernel, which may overshoot, so it stops at the clock's own spin
    margin and the loop takes the rest. It returns before the tick only when no block is
    outstanding, or when the client's ``spin_us`` is shorter than that margin. The
    clock's :meth:`~PacingClock.wait_next` then releases the tick.
    """
    due = clock.next_due_ns
    if due is None:
        return
    spin_ns = stream.client.spin_us * 1000
    margin_ns = clock.spin_ns
    while stream.backlog:
        left_ns = due - time.perf_counter_ns()
        if 0 < left_ns <= spin_ns:
            wait_ns = left_ns
        elif left_ns > margin_ns:
            wait_ns = left_ns - margin_ns
        else:
            return  # within the clock's margin, with no spin to cover it: the clock's turn
        take(stream.poll(wait_ns / 1e9))


def _summary(
    config: QecConfig,
    src: SyndromeSource,
    stream: Stream,
    clock: PacingClock,
    tally: _Tally,
    wall_ns: int,
) -> dict[str, Any]:
    s = stream.stats
    frame = tally.frame
    reaction = (
        LatencySummary.of(np.asarray(tally.reaction_ns, dtype=np.int64)).brief()
        if tally.reaction_ns
        else None
    )
    wall_s = wall_ns / 1e9
    decoded_shots = frame.shots
    return {
        "shots": config.shots,
        "decoder": "+".join(sorted(tally.decoders)) or None,
        "decoders": dict(sorted(tally.decoders.items())),
        "blocks_sent": s.sent,
        "blocks_decoded": s.decoded,
        "blocks_failed": s.failed,
        "duplicates_dropped": s.duplicates_dropped,
        "retried": s.retried,
        "resent": s.resent,
        "reconnects": s.reconnects,
        "models_restored": s.models_restored,
        "lost": s.lost,
        "lane_sent": s.lane_sent,
        "broker_sent": s.broker_sent,
        "logical_errors": frame.logical_errors,
        "ler": frame.ler if decoded_shots else None,
        "reaction_us": reaction,
        "late_blocks": s.late,
        "deadline_us": stream.deadline_ns // 1000 if stream.deadline_ns else None,
        "backlog_max": s.backlog_max,
        "slip_us_max": clock.slip_us_max,
        "wall_s": wall_s,
        "shots_per_s": decoded_shots / wall_s if wall_s > 0 else None,
        "mb_per_s": decoded_shots * src.detector_bytes / wall_s / 1e6 if wall_s > 0 else None,
        "code": config.spec.code,
        "distance": config.spec.distance,
        "rounds": config.spec.rounds,
        "p": config.spec.p,
        "backend": config.backend,
        "decoder_service": config.decoder_service,
        "num_detectors": src.num_detectors,
        "block_shots": config.block_shots,
        "period_us": config.period_us,
        "window": config.window,
        "seed": config.seed,
        "errors": tally.errors,
    }


def qec_ok(summary: dict[str, Any]) -> bool:
    """True if every block sent was decoded: none failed and none was lost."""
    s = summary
    decoded_all = s["blocks_decoded"] == s["blocks_sent"]
    return bool(decoded_all and s["lost"] == 0 and s["blocks_failed"] == 0)


def format_summary(summary: dict[str, Any], *, workers: int | None) -> str:
    """The readable summary ``control_sim qec`` prints without ``--json``; ``workers`` is
    the local stack's count, None for a broker given with ``--connect``.

    The decoder named is the one the workers' replies name (``decoder`` in the summary).
    """
    s = summary
    r = s["reaction_us"]
    decoder = s["decoder"] or "no block decoded"
    where = (
        f"{workers} local decoder workers ({decoder})"
        if workers
        else f"decoder service {s['decoder_service']!r} ({decoder})"
    )
    lines = [
        f"QEC stream: {s['code']} d={s['distance']} rounds={s['rounds']} p={s['p']} "
        f"({s['num_detectors']} detectors), {s['backend']} sampler, {where}",
        f"  blocks   sent {s['blocks_sent']}  decoded {s['blocks_decoded']}  "
        f"failed {s['blocks_failed']}  lost {s['lost']}  duplicates dropped "
        f"{s['duplicates_dropped']}  retried {s['retried']}",
        f"  logical  {s['logical_errors']} errors in {s['shots']} shots: LER "
        + ("n/a" if s["ler"] is None else f"{s['ler']:.3e}"),
    ]
    if r is not None:
        lines.append(
            f"  reaction p50 {r['p50']:.0f} us  p99 {r['p99']:.0f} us  "
            f"p99.9 {r['p999']:.0f} us  max {r['max']:.0f} us"
        )
    paced = f"period {s['period_us']} us" if s["period_us"] else "unpaced"
    lines.append(
        f"  pacing   {paced}, late {s['late_blocks']} (deadline {s['deadline_us']} us), "
        f"backlog max {s['backlog_max']}/{s['window']}, slip max {s['slip_us_max']:.0f} us"
    )
    if s["shots_per_s"]:
        lines.append(
            f"  rate     {s['shots_per_s']:,.0f} shots/s, {s['mb_per_s']:.2f} MB/s, "
            f"wall {s['wall_s']:.2f} s"
        )
    lines += [f"  error    {e}" for e in s["errors"]]
    return "\n".join(lines)
