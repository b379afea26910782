"""Syndrome streams end to end: a real broker, real ``python -m decoders`` workers.

Every comparison is against offline ``pymatching.Matching.decode_batch`` on the very same
samples, so a dropped, duplicated or misplaced block shows up as a mismatch. The tests of
the stream's own semantics run on :class:`~client.Stream` and on
:class:`~client.AsyncStream` (``@both_clients``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pymatching
import pytest

from client import BadBlock, BlockResult, Stream, UnknownModel, WindowFull
from client.lane.support import lane_support_missing
from control_sim.qec.codes import CodeSpec
from control_sim.qec.pacing import PacingClock
from control_sim.qec.run import receive_until_tick
from control_sim.qec.source import SyndromeSampler
from control_sim.stack.local_stack import LocalStack, StackSpec
from decoders.names import DEFAULT_DECODER_SERVICE
from tests.callers import Caller, CallerStream, both_clients
from tests.conftest import wait_until

SERVICE = DEFAULT_DECODER_SERVICE


@pytest.fixture
def stack2() -> Iterator[LocalStack]:
    """A broker and two pymatching workers."""
    with LocalStack(StackSpec(decoder_workers=2, decoder_args=("--credit=4",))) as stack:
        yield stack


# The worker's dynamic batching (--max-wait-us) gathers the blocks the broker hands it; a
# lane hands its worker what is waiting at once. The tests of that batching, and of what
# the stream does while a batch is held open, run their streams through the broker.
BROKER_ONLY = {"lane": "off"}


@contextmanager
def one_worker(*decoder_args: str, kind: str = "sync") -> Iterator[Caller]:
    """A broker and one pymatching worker started with these options, and a client."""
    with (
        LocalStack(StackSpec(decoder_workers=1, decoder_args=decoder_args)) as stack,
        Caller(stack.endpoint, kind) as c,
    ):
        yield c


def offline(sampler: SyndromeSampler, dets: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """What pymatching predicts for these blocks, decoded in one offline call."""
    m = pymatching.Matching.from_detector_error_model(sampler.dem)
    out: npt.NDArray[np.uint8] = m.decode_batch(
        dets, bit_packed_shots=True, bit_packed_predictions=True
    )
    return out


def stream_all(
    stream: CallerStream, blocks: list[npt.NDArray[np.uint8]], timeout: float = 30
) -> list[BlockResult]:
    results: list[BlockResult] = []
    for b in blocks:
        stream.send(b, timeout=timeout)
        results += stream.poll(0)
    results += stream.drain(timeout)
    return results


def predictions(results: list[BlockResult]) -> npt.NDArray[np.uint8]:
    errors = [r.error for r in results if r.predictions is None]
    assert not errors, errors[:3]
    return np.concatenate([r.predictions for r in results if r.predictions is not None])


@pytest.mark.timeout(120)
@both_clients
@pytest.mark.parametrize("distance", [3, 5])
def test_streamed_pymatching_is_bit_identical_to_offline(
    stack2: LocalStack, distance: int, client_kind: str
) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", distance, distance, 0.005), seed=distance)
    blocks = [sampler.sample_block(n)[0] for n in [300] * 12 + [17, 1]]
    with Caller(stack2.endpoint, client_kind) as c:
        s = c.stream(SERVICE, sampler.dem, window=8)
        results = stream_all(s, blocks)
    assert [r.seq for r in results] == list(range(len(blocks)))
    assert s.stats.lost == 0 and s.stats.failed == 0 and s.stats.decoded == len(blocks)
    got = predictions(results)
    assert np.array_equal(got, offline(sampler, np.concatenate(blocks)))
    assert got.any(), "at p=0.005 some predictions must flip, or the test has no teeth"
    assert all(r.reaction_ns > 0 and r.attempts == 1 for r in results)


@pytest.mark.timeout(120)
@both_clients
def test_a_worker_killed_mid_stream_loses_nothing(stack2: LocalStack, client_kind: str) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 5, 5, 0.005), seed=11)
    blocks = [sampler.sample_block(400)[0] for _ in range(60)]
    victim = stack2.servers.process("decoder-0")
    results: list[BlockResult] = []
    with Caller(stack2.endpoint, client_kind) as c:
        s = c.stream(SERVICE, sampler.dem, window=8, block_timeout=10)
        for i, b in enumerate(blocks):
            s.send(b, timeout=30)
            if i == 20:
                # Nothing has read the reply of the block just sent: it is in flight,
                # however fast the decoders were, so the kill lands mid-stream.
                assert s.backlog > 0
                victim.send_signal(signal.SIGKILL)
            results += s.poll(0)
        results += s.drain(60)
    victim.wait(10)
    assert [r.seq for r in results] == list(range(len(blocks))), "each block exactly once"
    assert s.stats.lost == 0 and s.stats.failed == 0
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))


@pytest.mark.timeout(90)
@both_clients
def test_a_full_window_pushes_back_and_drops_nothing(client_kind: str) -> None:
    sampler = SyndromeSampler(CodeSpec("repetition", 3, 2, 0.05), seed=3)
    blocks = [sampler.sample_block(50)[0] for _ in range(6)]
    with (
        LocalStack(StackSpec(decoder_workers=0)) as stack,
        Caller(stack.endpoint, client_kind) as c,
    ):
        s = c.stream(SERVICE, sampler.dem, window=2, block_timeout=60)
        s.send(blocks[0])
        s.send(blocks[1])
        with pytest.raises(WindowFull) as full:
            s.send(blocks[2], timeout=0.3)
        assert full.value.window == 2 and full.value.timeout == 0.3
        assert s.stats.sent == 2 and s.backlog == 2  # the refused block was not sent
        late = ["--connect", stack.endpoint, "--service", SERVICE, "--decoder", "pymatching"]
        stack.servers.start("late-worker", ["-m", "decoders", *late])
        stack.servers.wait_ready()
        results = stream_all(s, blocks[2:])
    assert [r.seq for r in results] == list(range(6))
    assert s.stats.lost == 0 and s.stats.decoded == 6
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))


@pytest.mark.timeout(90)
@both_clients
def test_bad_blocks_and_unknown_models_get_errors_and_the_stream_goes_on(
    stack2: LocalStack, client_kind: str
) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=5)
    good = [sampler.sample_block(100)[0] for _ in range(3)]
    with Caller(stack2.endpoint, client_kind) as c:
        # Model given as text: the client cannot check widths, so the worker must.
        s = c.stream(SERVICE, str(sampler.dem), window=4)
        with pytest.raises(BadBlock, match="dtype is 'int16'"):
            s.send(good[0].astype(np.int16))  # refused before sending
        s.send(good[0])
        s.send(np.zeros((10, good[0].shape[1] + 1), dtype=np.uint8))  # one byte too wide
        real = s.model_hash
        s.model_hash = "0" * 64  # a model nobody registered
        s.send(good[1])
        s.model_hash = real
        s.send(good[2])
        results = s.drain(30)
    assert [r.seq for r in results] == [0, 1, 2, 3]
    assert isinstance(results[1].error, BadBlock) and "detectors" in str(results[1].error)
    assert isinstance(results[2].error, UnknownModel)
    assert results[0].ok and results[3].ok
    expected = offline(sampler, np.concatenate([good[0], good[2]]))
    assert np.array_equal(predictions([results[0], results[3]]), expected)
    assert s.stats.failed == 2 and s.stats.lost == 0


@pytest.mark.timeout(90)
@both_clients
def test_a_client_side_width_check_names_the_model(client_kind: str) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=5)
    with LocalStack(StackSpec()) as stack, Caller(stack.endpoint, client_kind) as c:
        s = c.stream(SERVICE, sampler.dem)
        with pytest.raises(BadBlock, match=r"24 detectors.*width is \(4, 5\), expected \(4, 3\)"):
            s.send(np.zeros((4, 5), dtype=np.uint8))
        assert s.stats.sent == 0


@pytest.mark.timeout(120)
@both_clients
def test_switching_the_model_mid_stream(stack2: LocalStack, client_kind: str) -> None:
    a = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=7)
    b = SyndromeSampler(CodeSpec("surface", 3, 5, 0.02), seed=8)  # more rounds: new layout
    blocks_a = [a.sample_block(200)[0] for _ in range(5)]
    blocks_b = [b.sample_block(200)[0] for _ in range(5)]
    pids = [stack2.servers.process(f"decoder-{i}").pid for i in range(2)]
    with Caller(stack2.endpoint, client_kind) as c:
        s = c.stream(SERVICE, a.dem, window=4)
        results = stream_all(s, blocks_a[:3])
        for blk in blocks_a[3:]:  # still in flight when the model changes
            s.send(blk)
        s.switch_model(b.dem)
        results += stream_all(s, blocks_b)
        stats = c.broker_stats()
    assert [r.seq for r in results] == list(range(10))
    assert np.array_equal(predictions(results[:5]), offline(a, np.concatenate(blocks_a)))
    assert np.array_equal(predictions(results[5:]), offline(b, np.concatenate(blocks_b)))
    assert s.stats.model_switches == 1 and stats["models"] == 2
    assert [stack2.servers.process(f"decoder-{i}").pid for i in range(2)] == pids
    assert stats["services"][SERVICE]["workers"] == 2  # no worker restarted


@pytest.mark.timeout(120)
@both_clients
def test_a_retried_block_is_delivered_once_and_its_duplicate_counted(client_kind: str) -> None:
    # The worker holds each batch open 0.45 s waiting for more shots; the stream gives up
    # on a reply after 0.3 s and sends the block again, into the same open batch.
    args = ("--max-wait-us=450000", "--max-batch-shots=1000000", "--credit=8")
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=9)
    blocks = [sampler.sample_block(100)[0] for _ in range(2)]
    with one_worker(*args, kind=client_kind) as c:
        s = c.stream(SERVICE, sampler.dem, block_timeout=0.3, max_attempts=5, **BROKER_ONLY)
        results = stream_all(s, blocks)
        assert s.stats.retried >= 1

        def duplicates_all_seen() -> bool:
            c.receive(0.05)
            return s.stats.duplicates_dropped == s.stats.retried

        wait_until(duplicates_all_seen, 20, "the superseded attempts' replies")
        assert s.stats.duplicates_dropped == s.stats.retried
    assert [r.seq for r in results] == [0, 1]
    assert s.stats.decoded == 2 and s.stats.lost == 0
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))


@pytest.mark.timeout(120)
def test_the_worker_batches_blocks_until_the_batch_is_full_or_its_wait_is_over() -> None:
    # 300 shots fill a batch; the wait (20 s) is far longer than the test, so the first
    # three blocks can only come back together, from one decode call, by filling it.
    args = ("--max-wait-us=20000000", "--max-batch-shots=300", "--credit=8")
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=4)
    blocks = [sampler.sample_block(100)[0] for _ in range(3)]
    with one_worker(*args) as c:
        s = c.stream(SERVICE, sampler.dem, window=8, block_timeout=60, **BROKER_ONLY)
        results = stream_all(s, blocks, timeout=60)
    assert [(r.info["batch_blocks"], r.info["batch_shots"]) for r in results] == [(3, 300)] * 3
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))

    # With room for more and a short wait, a lone block goes alone once the wait is over.
    args = ("--max-wait-us=200000", "--max-batch-shots=100000", "--credit=8")
    with one_worker(*args) as c:
        s = c.stream(SERVICE, sampler.dem, window=8, **BROKER_ONLY)
        (alone,) = stream_all(s, blocks[:1])
    assert (alone.info["batch_blocks"], alone.info["batch_shots"]) == (1, 100)


@pytest.mark.timeout(120)
def test_a_worker_keeps_heartbeating_while_its_batch_waits() -> None:
    # The batch stays open 1.5 s, thirty of the worker's 50 ms heartbeat intervals: the
    # broker must not take it for dead and send the block elsewhere.
    args = ("--max-wait-us=1500000", "--max-batch-shots=100000", "--heartbeat-ms=50")
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=5)
    block = sampler.sample_block(100)[0]
    with one_worker(*args) as c:
        s = c.stream(SERVICE, sampler.dem, block_timeout=30, **BROKER_ONLY)
        (result,) = stream_all(s, [block])
        stats = c.broker_stats()
    assert result.info["batch_blocks"] == 1 and s.stats.retried == 0
    assert stats["workers_expired"] == 0 and stats["redispatched"] == 0
    assert np.array_equal(predictions([result]), offline(sampler, block))


@pytest.mark.timeout(60)
def test_a_paced_producer_receives_right_up_to_the_next_tick() -> None:
    # The worker holds the block for 1.5 s, so its result is outstanding all along: the
    # producer must keep receiving until the tick is due, not stop short of it (a result
    # landing in such a gap would wait unread, and its reaction time would grow). The
    # period is within the client's spin, so the whole wait polls and ends on time.
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=6)
    block = sampler.sample_block(10)[0]
    with one_worker("--max-wait-us=1500000", "--max-batch-shots=100000") as caller:
        c = caller.sync
        assert c is not None
        s = Stream(c, SERVICE, sampler.dem, block_timeout=30, lane="off")
        s.send(block)
        clock = PacingClock(c.spin_us // 2)
        clock.wait_next()
        taken: list[BlockResult] = []
        receive_until_tick(s, clock, taken.extend)
        returned_ns = time.perf_counter_ns()
        due_ns = clock.next_due_ns
        assert due_ns is not None and returned_ns >= due_ns
        assert taken == [] and s.backlog == 1
        taken += s.drain(30)
    assert len(taken) == 1 and np.array_equal(predictions(taken), offline(sampler, block))


@pytest.mark.timeout(240)
def test_bench_stream_at_small_size_writes_json_and_plot(tmp_path: Path) -> None:
    from bench.cli import main

    out, png = tmp_path / "s.json", tmp_path / "s.png"
    argv = ["stream", "--distances", "3", "--shots", "4000", "--block-shots", "500"]
    argv += ["--paced-blocks", "40", "--paced-seconds", "0.5", "--periods-us", "20000,5000"]
    argv += ["--workers", "1"]
    # Both transports by default; without lanes here the lane is skipped, and said so.
    transports = ["lane", "broker"] if lane_support_missing() is None else ["broker"]
    assert main([*argv, "--json", str(out), "--plot", str(png)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["skipped"]) == ({"lane"} - set(transports))
    (res,) = doc["results"]
    modes = [(r["mode"], r.get("transport"), r["workers"]) for r in res["throughput"]]
    assert modes == [("offline", None, 0)] + [("streamed", t, 1) for t in transports]
    for r in res["throughput"]:
        assert r["lost"] == 0 and r["shots_per_s"] > 0
    expected = [(t, p, 1) for t in transports for p in (20000, 5000)]
    assert [(s["transport"], s["period_us"], s["workers"]) for s in res["paced"]] == expected
    # At least 40 blocks and at least 0.5 s each: 40 at 20 ms, 100 at 5 ms.
    assert [s["blocks_decoded"] for s in res["paced"]] == [40, 100] * len(transports)
    for s in res["paced"]:
        assert s["lost"] == 0
        assert s["backlog_free"] == (s["backlog_max"] < s["window"])
        assert s["kept_up"] == (s["backlog_free"] and s["reaction_us"]["p99"] < s["period_us"])
        # Every block went the way its transport says.
        over_lanes = s["transport"] == "lane"
        assert (s["lane_sent"] > 0, s["broker_sent"] > 0) == (over_lanes, not over_lanes)
        cpu = s["cpu"]
        assert set(cpu) == {"producer_pct", "broker_pct", "workers_pct", "total_pct"}
        assert cpu["producer_pct"] is not None and cpu["producer_pct"] > 0
    for t in transports:
        runs = [s for s in res["paced"] if s["transport"] == t]
        free = [s["period_us"] for s in runs if s["backlog_free"]]
        kept = [s["period_us"] for s in runs if s["kept_up"]]
        assert res["smallest_period_backlog_free_us"][f"{t}/1"] == (min(free) if free else None)
        assert res["smallest_period_kept_up_us"][f"{t}/1"] == (min(kept) if kept else None)
    if len(transports) == 2:
        assert [(r["workers"], r["period_us"]) for r in res["lane_vs_broker"]] == [
            (1, 20000),
            (1, 5000),
        ]
    assert png.stat().st_size > 1000
