"""The shared-memory lane (issue 14): round trips of arrays, PARTIAL replies, the three
``lane=`` modes, the fall back to the broker where a side lacks the extra or is on another
host, plain MDP peers, and the broker's lane counters.

Real broker and worker processes, real iceoryx2; every test runs on the sync Client and
on the AsyncClient (:mod:`tests.callers`). The kills are in ``test_lane_kills.py``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zmq

from client import LaneUnavailable
from client.wire.arrays import ALLOWED_DTYPES
from client.wire.lanes import LaneMode, is_lane_name
from client.wire.limits import INLINE_ARRAY_MAX_BYTES
from control_sim.stack.processes import START_TIMEOUT_S, wait_for_line
from tests.callers import CLIENT_KINDS, Caller
from tests.conftest import (
    ROOT,
    LaneFiles,
    Stack,
    broker_stats,
    needs_lanes,
    stop_process,
    wait_for_workers,
)
from tests.peers.mdp_rfc import PlainWorker, echo

# A lane on every path here (without one, see test_sessions and test_stream_lanes).
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("client_kind", CLIENT_KINDS),
    needs_lanes,
]

MIB = 1 << 20

Arrays = list[npt.NDArray[Any]]


def spawn_worker(
    stack: Stack, endpoint: str, service: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    """A ``tests.peers.nl_worker`` with ``env`` added to its environment, READY."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.nl_worker", endpoint, service, *extra],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.procs.append(proc)
    wait_for_line(proc, "READY", START_TIMEOUT_S, name="nl_worker")
    return proc


@pytest.fixture
def no_iceoryx2(tmp_path: Path) -> dict[str, str]:
    """Environment for a process in which ``import iceoryx2`` fails for real: an
    ``iceoryx2`` module first on the path that raises ImportError."""
    blocked = tmp_path / "no_iceoryx2"
    blocked.mkdir()
    (blocked / "iceoryx2.py").write_text('raise ImportError("iceoryx2 blocked for this test")\n')
    return {"PYTHONPATH": str(blocked)}


# --- round trips ----------------------------------------------------------------------


def every_dtype(shape: tuple[int, ...]) -> Arrays:
    """One array of each wire dtype, both byte orders, values that each dtype holds."""
    rng = np.random.default_rng(14)
    return [rng.integers(0, 100, size=shape).astype(np.dtype(d)) for d in sorted(ALLOWED_DTYPES)]


def shapes() -> Arrays:
    """0-d, empty, 1-d, 3-d, and views that are not C-contiguous."""
    rng = np.random.default_rng(15)
    big = rng.standard_normal((40, 30, 20))
    return [
        np.array(7.25),
        np.array(3, dtype=np.uint8),
        np.zeros(0, dtype=np.int32),
        np.zeros((3, 0, 2), dtype=np.float64),
        np.arange(17, dtype=np.int64),
        big,
        big[::3, 1::2, ::-1],  # strided and reversed
        big.transpose(2, 0, 1),
        np.asfortranarray(big[:, :, 0]),
        np.arange(100, dtype=np.complex128)[::7],
    ]


def sizes() -> Arrays:
    """Both sides of the inline limit, and 1 MiB and a byte over."""
    rng = np.random.default_rng(16)
    n = INLINE_ARRAY_MAX_BYTES
    return [
        rng.integers(0, 256, size=k, dtype=np.uint8) for k in (n - 1, n, n + 1, MIB, MIB + 1)
    ] + [rng.standard_normal(MIB // 8)]  # 1 MiB of float64


CASES = {
    "every dtype, inline": lambda: every_dtype((2, 3, 4)),
    "every dtype, frames": lambda: every_dtype((64, 130)),
    "shapes": shapes,
    "sizes": sizes,
}


def check_echo(sent: Arrays, got: Arrays) -> None:
    assert len(got) == len(sent)
    for k, (a, b) in enumerate(zip(sent, got, strict=True)):
        assert isinstance(b, np.ndarray), (k, type(b))
        assert b.dtype == a.dtype and b.shape == a.shape, (k, a.dtype, a.shape, b.dtype, b.shape)
        assert np.array_equal(a, b), k


@pytest.mark.parametrize("lane", ["require", "off"])
def test_arrays_of_every_dtype_shape_and_size_round_trip_and_stay_valid_after_the_lane_goes(
    stack: Stack, client_kind: str, lane: LaneMode, lane_files: LaneFiles
) -> None:
    b = stack.broker("ipc")
    worker = stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    kept: list[tuple[Arrays, Arrays]] = []  # (a copy of what was sent, what came back)
    with Caller(b.endpoint, client_kind, timeout=20) as c:
        with c.open_session("svc", lane=lane) as s:
            assert s.session.lane == ("shm" if lane == "require" else "zmq")
            for name, make in CASES.items():
                sent = make()
                r = s.request({"op": "echo", "case": name}, *sent)
                assert r.body["echo"] == {"op": "echo", "case": name}
                check_echo(sent, list(r.arrays))
                kept.append(([a.copy() for a in sent], list(r.arrays)))
        # The lane is gone; more traffic of the same sizes, other values, on a new one.
        with c.open_session("svc", lane=lane) as s:
            for _, make in CASES.items():
                other = [np.ones_like(a) if a.dtype != np.bool_ else ~a for a in make()]
                check_echo(other, list(s.request({"op": "echo"}, *other).arrays))
    for sent, got in kept:  # nothing still looks into shared memory
        check_echo(sent, got)
    assert stop_process(worker) == 0  # a clean exit removes its iceoryx2 node
    lane_files.assert_none_left()


@pytest.mark.parametrize("late_reader", [False, True], ids=["reading", "late"])
def test_partials_come_over_the_lane_in_order_then_the_final(
    stack: Stack, client_kind: str, late_reader: bool
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with (
        Caller(b.endpoint, client_kind, timeout=20) as c,
        c.open_session("svc", lane="require") as s,
    ):
        assert s.session.lane == "shm"
        n = 30
        ticks = s.submit({"op": "ticks", "n": n, "every_us": 300})
        if late_reader:
            # The client reads nothing for 0.5 s while the worker has more replies for it
            # than a lane buffers: the worker must neither lose them nor stall its
            # heartbeats (the broker would take it for dead and lose the session).
            time.sleep(0.5)  # a slow consumer on purpose, not a wait for a condition
        final = ticks.result()
        assert [p.body["tick"] for p in ticks.partials] == list(range(n))
        assert all(p.partial for p in ticks.partials)
        assert final.body["ticks"] == n and not final.partial
        assert {p.body["pid"] for p in ticks.partials} == {final.body["pid"]}
        assert s.request({"op": "count"}).body["count"] == 1  # the session goes on
    stats = broker_stats(b.endpoint)
    assert stats["workers_expired"] == 0 and stats["sessions_lost"] == 0


# --- the modes, and who gets no lane ---------------------------------------------------


def test_the_three_modes_and_a_bad_one(
    stack: Stack, client_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nearloop.session")
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=10) as c:
        names = []
        for mode in ("auto", "require"):
            with c.open_session("svc", lane=mode) as s:
                assert s.session.lane == "shm" and s.session.lane_refused is None
                names.append(s.session._lane.name if s.session._lane else None)
                assert s.request({"op": "count"}).body["count"] == 1
        assert all(is_lane_name(n) for n in names) and names[0] != names[1]
        with c.open_session("svc", lane="off") as s:
            assert s.session.lane == "zmq" and s.session._lane is None
            assert s.request({"op": "count"}).body["count"] == 1
        assert "goes through the broker" not in caplog.text  # off asks for nothing
        with pytest.raises(ValueError, match="lane must be one of auto, off, require; got 'fast'"):
            c.open_session("svc", lane="fast")  # type: ignore[arg-type]
        stats = c.broker_stats()
    assert stats["lanes_opened"] == 2 and stats["sessions_opened"] == 3
    assert stats["lanes_closed"] == 2 and stats["sessions"] == 0


def refused(c: Caller, service: str, why: str, caplog: pytest.LogCaptureFixture) -> None:
    """``auto`` goes through the broker, saying ``why`` in the log and on the session;
    ``require`` raises LaneUnavailable with ``why``; requests work either way."""
    caplog.clear()
    with c.open_session(service, lane="auto") as s:
        assert s.session.lane == "zmq" and s.session._lane is None
        assert s.session.lane_refused is not None and why in s.session.lane_refused
        assert s.request({"op": "count"}).body["count"] == 1
    assert "goes through the broker" in caplog.text and why in caplog.text
    with pytest.raises(LaneUnavailable, match=why):
        c.open_session(service, lane="require")
    assert c.request(service, {"op": "echo", "k": 1}).body["echo"] == {"op": "echo", "k": 1}
    assert c.broker_stats()["sessions"] == 0  # the refused session was closed


def test_a_worker_on_another_host_gets_no_lane(
    stack: Stack, client_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nearloop.session")
    b = stack.broker("ipc")
    spawn_worker(stack, b.endpoint, "svc", {"NEARLOOP_HOST_ID": "other"})
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=10) as c:
        refused(c, "svc", "another host", caplog)
        assert c.broker_stats()["lanes_opened"] == 0


def test_a_worker_without_the_extra_serves_through_the_broker(
    stack: Stack, client_kind: str, caplog: pytest.LogCaptureFixture, no_iceoryx2: dict[str, str]
) -> None:
    caplog.set_level(logging.INFO, logger="nearloop.session")
    b = stack.broker("ipc")
    spawn_worker(stack, b.endpoint, "svc", no_iceoryx2)
    wait_for_workers(b.endpoint, "svc", 1)
    with Caller(b.endpoint, client_kind, timeout=10) as c:
        refused(c, "svc", "serves no lanes", caplog)


def test_a_plain_mdp_worker_is_unaffected(
    stack: Stack, client_kind: str, caplog: pytest.LogCaptureFixture, zctx: zmq.Context[Any]
) -> None:
    caplog.set_level(logging.INFO, logger="nearloop.session")
    b = stack.broker("ipc")
    plain = PlainWorker(zctx, b.endpoint, b"plain", echo, version=2, heartbeat_ms=100)
    plain.start()
    try:
        wait_for_workers(b.endpoint, "plain", 1)
        with Caller(b.endpoint, client_kind, timeout=10) as c:
            with c.open_session("plain", lane="auto") as s:
                assert s.session.lane == "zmq"
                assert s.session.lane_refused and "serves no lanes" in s.session.lane_refused
                assert s.request({"k": [1, 2]}).body == {"k": [1, 2]}  # it echoed our header
            assert "serves no lanes" in caplog.text
            with pytest.raises(LaneUnavailable, match="serves no lanes"):
                c.open_session("plain", lane="require")
            assert c.request("plain", {"k": 3}).body == {"k": 3}
            assert plain.served == 2 and c.broker_stats()["lanes_opened"] == 0
    finally:
        plain.stop()


CLIENT_WITHOUT_THE_EXTRA = """
import asyncio, json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
from client import AsyncClient, Client, LaneUnavailable

endpoint, kind = sys.argv[1:]
out = {"iceoryx2 imported": "iceoryx2" in sys.modules}

def sync():
    with Client(endpoint, timeout=10) as c:
        s = c.open_session("svc", lane="auto")
        out["auto"] = [s.lane, s.lane_refused, s.request({"op": "count"}).body["count"]]
        s.close()
        try:
            c.open_session("svc", lane="require")
        except LaneUnavailable as exc:
            out["require"] = str(exc)
        out["plain"] = c.request("svc", {"op": "echo"}).body["echo"]

async def asynchronous():
    c = AsyncClient(endpoint, timeout=10)
    s = await c.open_session("svc", lane="auto")
    out["auto"] = [s.lane, s.lane_refused, (await s.request({"op": "count"})).body["count"]]
    await s.close()
    try:
        await c.open_session("svc", lane="require")
    except LaneUnavailable as exc:
        out["require"] = str(exc)
    out["plain"] = (await c.request("svc", {"op": "echo"})).body["echo"]
    await c.close()

sync() if kind == "sync" else asyncio.run(asynchronous())
out["iceoryx2 imported"] = out["iceoryx2 imported"] or "iceoryx2" in sys.modules
print(json.dumps(out))
"""


def test_a_client_without_the_extra_falls_back_to_the_broker(
    stack: Stack, client_kind: str, no_iceoryx2: dict[str, str]
) -> None:
    b = stack.broker("ipc")
    stack.worker(b.endpoint, "svc")  # a worker that serves lanes
    wait_for_workers(b.endpoint, "svc", 1)
    done = subprocess.run(
        [sys.executable, "-c", CLIENT_WITHOUT_THE_EXTRA, b.endpoint, client_kind],
        cwd=ROOT,
        env={**os.environ, **no_iceoryx2},
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    lane, why, count = out["auto"]
    assert lane == "zmq" and count == 1
    assert "the lane extra is not installed" in why and "nearloop[lane]" in why
    assert "iceoryx2 blocked for this test" in why  # the real import failed
    log = [ln for ln in done.stderr.splitlines() if ln.startswith("nearloop.session")]
    assert len(log) == 1 and "goes through the broker" in log[0] and why in log[0], done.stderr
    assert "lane='require'" in out["require"] and "nearloop[lane]" in out["require"]
    assert out["plain"] == {"op": "echo"} and not out["iceoryx2 imported"]
    stats = broker_stats(b.endpoint)
    assert stats["lanes_opened"] == 0 and stats["sessions"] == 0
