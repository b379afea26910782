"""A broker SIGKILLed and restarted on the same endpoints (issue 16): real brokers, real
``control_sim qpu`` and ``decoders`` workers, on ipc:// and tcp://.

Requests in flight at the kill fail with BrokerLost or, declared idempotent, complete
after the restart; workers register again; a VQE loop reopens its session and still
reaches chemical accuracy; a paced stream loses nothing and re-sends what the broker
took with it; its model is stored again in the new broker.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest

from client import BlockResult, BrokerLost, Client, SessionLost, Stream
from client.lane.support import lane_support_missing
from control_sim.qec.codes import CodeSpec
from control_sim.qec.source import SyndromeSampler
from control_sim.qpu.client import QpuClient
from control_sim.vqe.driver import h2_registration, run_h2_vqe
from decoders.names import DEFAULT_DECODER_SERVICE
from tests.conftest import (
    BrokerProc,
    Stack,
    one_line_error,
    run_module,
    wait_for_workers,
    wait_until,
)

TRANSPORTS = ["ipc", "tcp"]


def first_broker(stack: Stack, transport: str) -> BrokerProc:
    """A broker on one endpoint of ``transport`` (tcp: an ephemeral port, kept)."""
    return stack.broker(transport)


def restart(stack: Stack, old: BrokerProc) -> tuple[BrokerProc, float]:
    """SIGKILL ``old`` and start a broker on the very same endpoint; returns it and when
    (monotonic) it printed READY."""
    assert old.stop(signal.SIGKILL) == -signal.SIGKILL
    new = stack.broker(binds=[old.endpoint])
    return new, time.monotonic()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_request_in_flight_fails_with_broker_lost_or_is_resent_if_idempotent(
    stack: Stack, transport: str
) -> None:
    """Both requests wait in the broker's queue (no worker yet) when it is killed: the
    broker takes them with it, for certain."""
    broker = first_broker(stack, transport)
    with Client(broker.endpoint, timeout=30) as c:
        plain = c.submit("echo", "plain")
        idem = c.submit("echo", "idem", idempotent=True)
        wait_until(
            lambda: c.broker_stats()["services"].get("echo", {}).get("queued") == 2,
            10,
            "both requests queued in the broker",
        )
        broker, _ready = restart(stack, broker)
        with pytest.raises(BrokerLost) as info:
            plain.result()  # never hangs: it fails as soon as the new broker says who it is
        assert info.value.service == "echo" and info.value.request_id == plain.id
        assert info.value.endpoint == broker.endpoint
        assert "may or may not have run" in str(info.value)
        assert c._conn.restarts == 1 and c._conn.resent == 1
        stack.worker(broker.endpoint, "echo")
        assert idem.result().body["echo"] == "idem"  # sent again, served by the new broker
        assert c.request("echo", "after").body["echo"] == "after"


@pytest.mark.timeout(90)
def test_a_worker_registers_again_after_a_restart(stack: Stack) -> None:
    broker = first_broker(stack, "ipc")
    stack.worker(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "echo", 1)
    broker, _ready = restart(stack, broker)
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint, timeout=10) as c:
        assert c.request("echo", "again").body["echo"] == "again"


@pytest.mark.timeout(60)
def test_a_session_fails_with_session_lost_and_can_be_reopened(stack: Stack) -> None:
    broker = first_broker(stack, "ipc")
    stack.worker(broker.endpoint, "echo")
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint, timeout=20) as c:
        session = c.open_session("echo", lane="off")
        assert session.request("before").body["echo"] == "before"
        broker, _ready = restart(stack, broker)
        wait_for_workers(broker.endpoint, "echo", 1)
        assert c.request("echo", "x", idempotent=True).body["echo"] == "x"
        with pytest.raises(SessionLost, match="open a new session"):
            session.request("lost")
        assert session.lost
        session.close()  # frees it locally: the new broker never knew it
        with c.open_session("echo", lane="off") as again:
            assert again.request("again").body["echo"] == "again"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_vqe_and_a_paced_stream_survive_a_broker_restart(stack: Stack, transport: str) -> None:
    broker = first_broker(stack, transport)
    ep = broker.endpoint
    stack.server("-m", "control_sim", "qpu", "--connect", ep)
    stack.server("-m", "decoders", "--connect", ep, "--decoder", "pymatching")
    wait_for_workers(ep, "qpu", 1)
    wait_for_workers(ep, DEFAULT_DECODER_SERVICE, 1)

    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=7)
    stop = threading.Event()
    stream_box: dict[str, object] = {}
    first_after: list[float] = []  # when the stream's first result after the restart came
    restarted_at: list[float] = []

    def paced_stream() -> None:
        with Client(ep, timeout=30) as sc:
            s = Stream(sc, DEFAULT_DECODER_SERVICE, sampler.dem, window=8, lane="off")
            stream_box["stream"] = s
            results = []
            while not stop.is_set():
                s.send(sampler.sample_block(64)[0], timeout=30)
                got = s.poll(0.002)  # paced: about one block per 2 ms at most
                if got and restarted_at and not first_after:
                    first_after.append(time.monotonic())
                results += got
            results += s.drain(60)
            stream_box["results"] = results

    streamer = threading.Thread(target=paced_stream, daemon=True)
    streamer.start()
    wait_until(lambda: "stream" in stream_box, 30, "the stream to open")

    with Client(ep, timeout=20) as c:
        qpu = QpuClient.open(c, timeout=20)
        source, observables = h2_registration()
        info = qpu.register_qasm3(source, observables)
        energy = qpu.energy_fn(info.circuit)
        calls = 0

        def energy_with_a_restart(xs: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
            nonlocal calls, broker
            calls += 1
            if calls == 40:  # mid-run: the stream has blocks in flight
                broker, ready = restart(stack, broker)
                restarted_at.append(ready)
            return energy(xs)

        result = run_h2_vqe(energy_with_a_restart, optimizer="cobyla", maxiter=120, seed=5)
        assert qpu.reopens == 1  # the session went with the broker, and was reopened
        qpu.close()
    wait_until(lambda: first_after, 30, "a stream result after the restart")
    stop.set()
    streamer.join(90)
    assert not streamer.is_alive()

    assert 0 <= result.error_mha < 1.6 and result.chemically_accurate
    s = stream_box["stream"]
    assert isinstance(s, Stream)
    results = stream_box["results"]
    assert isinstance(results, list)
    assert [r.seq for r in results] == list(range(s.stats.sent)), "each block exactly once"
    assert s.stats.lost == 0 and s.stats.failed == 0 and s.stats.decoded == s.stats.sent
    assert s.stats.reconnects == 1 and s.stats.models_restored >= 1
    wait_for_workers(broker.endpoint, "qpu", 1)
    wait_for_workers(broker.endpoint, DEFAULT_DECODER_SERVICE, 1)
    print(
        f"restart ({transport}): stream sent={s.stats.sent} decoded={s.stats.decoded} "
        f"lost={s.stats.lost} resent={s.stats.resent} retried={s.stats.retried} "
        f"duplicates={s.stats.duplicates_dropped}; VQE error {result.error_mha:.3f} mHa; "
        f"first stream result {1e3 * (first_after[0] - restarted_at[0]):.0f} ms after READY"
    )


@pytest.mark.timeout(120)
def test_a_stream_moves_what_was_on_its_lanes_when_the_broker_goes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream's lane is paired by a broker session: when the broker goes, the session
    # does, and the stream closes the lane. The blocks in flight on it must go another
    # way at once, not wait out their timeout (30 s here) while holding the window.
    monkeypatch.delenv("NEARLOOP_NO_LANE", raising=False)
    missing = lane_support_missing()
    if missing is not None:
        pytest.skip(f"no lanes here: {missing}")
    broker = first_broker(stack, "ipc")
    stack.server("-m", "decoders", "--connect", broker.endpoint, "--decoder", "pymatching")
    wait_for_workers(broker.endpoint, DEFAULT_DECODER_SERVICE, 1)
    sampler = SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=11)
    blocks = [sampler.sample_block(64)[0] for _ in range(8)]
    results: list[BlockResult] = []
    stop = threading.Event()
    with Client(broker.endpoint, timeout=30) as c:
        s = Stream(c, DEFAULT_DECODER_SERVICE, sampler.dem, window=8, block_timeout=30)

        def unpaced() -> None:  # the window stays full: blocks are on the lane at the kill
            i = 0
            while not stop.is_set():
                s.send(blocks[i % 8], timeout=30)
                results.extend(s.poll(0))
                i += 1

        streamer = threading.Thread(target=unpaced, daemon=True)
        streamer.start()
        wait_until(lambda: s.stats.lane_sent >= 100, 30, "blocks on the lane")
        broker, _ = restart(stack, broker)
        wait_until(lambda: s.stats.broker_sent >= 100, 60, "blocks through the new broker")
        stop.set()
        streamer.join(60)
        assert not streamer.is_alive()
        results += s.drain(60)
    sent = s.stats.sent
    assert [r.seq for r in results] == list(range(sent)), "each block exactly once"
    assert s.stats.lost == 0 and s.stats.failed == 0 and s.stats.decoded == sent
    assert s.stats.lanes_lost == 1 and s.stats.broker_sent > 0
    assert s.stats.retried == 0, "a block waited out its timeout"
    print(f"lane stream restart: resent {s.stats.resent}, lane_sent {s.stats.lane_sent}, "
          f"broker_sent {s.stats.broker_sent}")  # fmt: skip


@pytest.mark.timeout(200)
def test_demo_chaos_restarts_its_broker_mid_run_and_loses_nothing(stack: Stack) -> None:
    out = stack.tmp / "demo.json"
    done = run_module(
        "control_sim", "demo", "--chaos", "--qec-shots", "40000", "--json", str(out),
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    summary = json.loads(out.read_text())
    chaos, qec = summary["chaos"], summary["qec"]
    assert chaos["restarted"] and chaos["resume_ms"] >= 0
    assert qec["lost"] == 0 and qec["blocks_decoded"] == qec["blocks_sent"]
    assert summary["vqe"]["chemically_accurate"]
    assert "chaos: broker SIGKILLed and restarted" in done.stdout


@pytest.mark.timeout(60)
def test_demo_chaos_needs_the_local_stack(stack: Stack) -> None:
    done = run_module("control_sim", "demo", "--chaos", "--connect", stack.endpoint("ipc"))
    assert "--chaos" in one_line_error(done) and "--connect" in done.stderr
