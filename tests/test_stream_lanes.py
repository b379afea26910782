"""Streams over shared-memory lanes: one lane per co-located decoder worker, the broker for
the rest, and what happens when a lane's worker is SIGKILLed mid-stream.

Real broker, real ``python -m decoders`` workers. Each test runs with lanes and with
``NEARLOOP_NO_LANE=1`` (the ``transport`` fixture), where every block goes through the
broker and the stream must behave the same. Results are compared with offline
``pymatching`` on the same samples, so a lost, duplicated or misplaced block shows.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pymatching
import pytest

from client import BlockResult, LaneUnavailable
from client.lane.support import lane_support_missing
from control_sim.qec.codes import CodeSpec
from control_sim.qec.source import SyndromeSampler
from control_sim.stack.local_stack import LocalStack, StackSpec
from decoders.names import DEFAULT_DECODER_SERVICE
from tests.callers import Caller, CallerStream, both_clients
from tests.conftest import wait_for_workers, wait_until

SERVICE = DEFAULT_DECODER_SERVICE
SHM = Path("/dev/shm")


@pytest.fixture(params=["lanes", "no-lane"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``lanes``: this process and the workers may use lanes (skipped without the
    extra); ``no-lane``: ``NEARLOOP_NO_LANE=1`` for both, so everything goes through the
    broker."""
    if request.param == "no-lane":
        monkeypatch.setenv("NEARLOOP_NO_LANE", "1")
    else:
        monkeypatch.delenv("NEARLOOP_NO_LANE", raising=False)
        missing = lane_support_missing()
        if missing is not None:
            pytest.skip(f"no lanes here: {missing}")
    yield request.param


def iox2_files() -> set[str]:
    """iceoryx2's files in /dev/shm now."""
    return {p.name for p in SHM.glob("iox2_*")}


def offline(sampler: SyndromeSampler, dets: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    m = pymatching.Matching.from_detector_error_model(sampler.dem)
    out: npt.NDArray[np.uint8] = m.decode_batch(
        dets, bit_packed_shots=True, bit_packed_predictions=True
    )
    return out


def predictions(results: list[BlockResult]) -> npt.NDArray[np.uint8]:
    errors = [r.error for r in results if r.predictions is None]
    assert not errors, errors[:3]
    return np.concatenate([r.predictions for r in results if r.predictions is not None])


def send_in_rounds(
    s: CallerStream, blocks: list[npt.NDArray[np.uint8]], window: int
) -> list[BlockResult]:
    """Send ``window`` blocks at a time without receiving in between (so the dispatcher
    spreads each round over every route with room), then drain the round."""
    results: list[BlockResult] = []
    for start in range(0, len(blocks), window):
        for b in blocks[start : start + window]:
            s.send(b, timeout=30)
        results += s.drain(60)
    return results


@pytest.mark.timeout(180)
@both_clients
def test_a_lane_worker_killed_mid_stream_loses_nothing_and_leaves_nothing(
    transport: str, client_kind: str
) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 5, 5, 0.005), seed=21)
    blocks = [sampler.sample_block(300)[0] for _ in range(40)]
    before = iox2_files()
    results: list[BlockResult] = []
    spec = StackSpec(decoder_workers=2, decoder_args=("--credit=4",))
    with LocalStack(spec) as stack, Caller(stack.endpoint, client_kind) as c:
        victim = stack.servers.process("decoder-0")
        with c.stream(SERVICE, sampler.dem, window=8, block_timeout=10) as s:
            if transport == "lanes":
                assert len(set(s.lanes)) == 2, "one lane to each of the two workers"
            else:
                assert s.lanes == []
            for i, b in enumerate(blocks):
                s.send(b, timeout=30)
                if i == 15:
                    # Mid-stream: blocks keep coming, and the victim holds its share of
                    # the window (an async send may already have read a reply or two,
                    # so how many are in flight at this instant is not fixed).
                    victim.send_signal(signal.SIGKILL)
                    victim.wait(10)
                results += s.poll(0)
            results += s.drain(60)
            stats = s.stats
            if transport == "lanes":
                # The dead worker had blocks in flight, or, with room, took the next.
                assert stats.lanes_lost == 1 and stats.retried >= 1
                assert len(s.lanes) == 1
                assert stats.lane_decoded == len(blocks) and stats.broker_sent == 0
            else:
                assert stats.broker_decoded == len(blocks) and stats.lane_sent == 0
        if transport == "lanes":
            # The stream's lanes are closed: the survivor frees its own, and the dead
            # worker's went when the stream found it dead (its node's files with it).
            wait_until(lambda: not (iox2_files() - before), 30, "no lane files left in /dev/shm")
    assert [r.seq for r in results] == list(range(len(blocks))), "each block exactly once"
    assert stats.lost == 0 and stats.failed == 0 and stats.decoded == stats.sent == len(blocks)
    assert stats.duplicates_dropped >= 0  # counted, not delivered: the seqs above are unique
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))


@pytest.mark.timeout(180)
@both_clients
def test_a_stream_mixes_a_lane_worker_and_a_broker_worker(
    transport: str, client_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=22)
    blocks = [sampler.sample_block(200)[0] for _ in range(24)]
    window = 8
    with (
        LocalStack(StackSpec(decoder_workers=1)) as stack,
        Caller(stack.endpoint, client_kind) as c,
    ):
        with monkeypatch.context() as env:
            env.setenv("NEARLOOP_HOST_ID", "elsewhere")  # that worker declares another host
            args = ["--connect", stack.endpoint, "--service", SERVICE, "--decoder", "pymatching"]
            stack.servers.start("elsewhere", ["-m", "decoders", *args])
        stack.servers.wait_ready()
        wait_for_workers(stack.endpoint, SERVICE, 2)
        with pytest.raises(LaneUnavailable, match="lane='require'"):
            c.stream(SERVICE, sampler.dem, lane="require")
        assert c.broker_stats()["sessions"] == 0, "a refused stream leaves no session open"
        with c.stream(SERVICE, sampler.dem, window=window) as s:
            results = send_in_rounds(s, blocks, window)
            stats = s.stats
            if transport == "lanes":
                assert len(s.lanes) == 1
                # Each round of 8 fills the lane's share (4) and the broker's (4).
                assert stats.lane_decoded > 0 and stats.broker_decoded > 0
                assert stats.lane_decoded + stats.broker_decoded == len(blocks)
            else:
                assert s.lanes == [] and stats.broker_decoded == len(blocks)
        assert c.broker_stats()["sessions"] == 0, "closing the stream closed its sessions"
    assert [r.seq for r in results] == list(range(len(blocks)))
    assert stats.lost == 0 and stats.failed == 0 and stats.decoded == len(blocks)
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))


@pytest.mark.timeout(120)
def test_lane_off_sends_every_block_through_the_broker(transport: str) -> None:
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=23)
    blocks = [sampler.sample_block(100)[0] for _ in range(6)]
    with LocalStack(StackSpec(decoder_workers=1)) as stack, Caller(stack.endpoint, "sync") as c:
        with c.stream(SERVICE, sampler.dem, window=4, lane="off") as s:
            assert s.lanes == [] and c.broker_stats()["sessions"] == 0
            results = send_in_rounds(s, blocks, 4)
            assert s.stats.broker_decoded == len(blocks) and s.stats.lane_sent == 0
        with pytest.raises(ValueError, match="lane must be one of"):
            c.stream(SERVICE, sampler.dem, lane="fast")
    assert np.array_equal(predictions(results), offline(sampler, np.concatenate(blocks)))
