"""Kills on a lane (issue 14, point 3): a worker SIGKILLed mid-request fails its session
with SessionLost within the liveness bound; a client SIGKILLed has its lane freed by the
worker; after either, nothing of the lane is left in ``/dev/shm`` or ``/tmp/iceoryx2``,
and a new session opens a new lane. Real broker, workers and client processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from client import SessionLost
from control_sim.stack.processes import START_TIMEOUT_S, wait_for_line
from tests.callers import CLIENT_KINDS, Caller
from tests.conftest import (
    ROOT,
    LaneFiles,
    Stack,
    broker_stats,
    needs_lanes,
    wait_for_workers,
    wait_until,
)

pytestmark = [pytest.mark.timeout(90), needs_lanes]  # every test here holds a lane

REQUEST_TIMEOUT_S = 30
LOST_WITHIN_S = 10
"""A lost session fails well before its requests' own timeout: that is behaviour (the
liveness checks work), not speed; the bound is generous for a busy machine."""


def warm_up(endpoint: str, n: int) -> None:
    """One lane session on each of the ``n`` workers, closed again: every process that
    takes part has its iceoryx2 node before the test's snapshot."""
    with Caller(endpoint, "sync", timeout=10) as c:
        sessions = [c.open_session("svc", lane="require") for _ in range(n)]
        assert len({s.worker for s in sessions}) == n
        for s in sessions:
            s.request({"op": "count"})
            s.close()


@pytest.mark.parametrize("client_kind", CLIENT_KINDS)
def test_a_lane_worker_killed_mid_request_fails_the_session_and_leaves_nothing(
    stack: Stack, client_kind: str, lane_files: LaneFiles, tmp_path: Path
) -> None:
    b = stack.broker("ipc")
    workers = [stack.worker(b.endpoint, "svc") for _ in range(2)]
    wait_for_workers(b.endpoint, "svc", 2)
    warm_up(b.endpoint, 2)
    lane_files.mark()
    with Caller(b.endpoint, client_kind, timeout=REQUEST_TIMEOUT_S) as c:
        s = c.open_session("svc", lane="require")
        assert s.session.lane == "shm" and s.session._lane is not None
        first_lane = s.session._lane.name
        pid = s.request({"op": "count"}).body["pid"]
        victim = next(w for w in workers if w.pid == pid)
        survivor = next(w for w in workers if w.pid != pid)
        pending = s.submit({"op": "sleep", "s": 25, "mark": str(tmp_path)})
        wait_until((tmp_path / str(pid)).exists, 10, "the worker to start the request")
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(SessionLost, match="open a new session"):
            pending.result()
        assert time.monotonic() - killed_at < LOST_WITHIN_S
        for _ in range(3):  # later requests fail at once, never hang
            asked_at = time.monotonic()
            with pytest.raises(SessionLost, match="open a new session"):
                s.request({"op": "count"})
            assert time.monotonic() - asked_at < LOST_WITHIN_S
        s.close()
        lane_files.assert_none_left()  # the dead worker's part too, survivors running
        # The lane saw the death first; an open pins to a worker the broker still lists,
        # so wait (bounded) for its heartbeats to drop the dead one.
        wait_for_workers(b.endpoint, "svc", 1)
        again = c.open_session("svc", lane="require")
        assert again.session.lane == "shm" and again.session._lane is not None
        assert again.session._lane.name != first_lane
        reply = again.request({"op": "count"}).body
        assert reply["pid"] == survivor.pid and reply["count"] == 1
        again.close()
    lane_files.assert_none_left()
    assert broker_stats(b.endpoint)["workers"] == 1


HOLDING_CLIENT = """
import sys, time
from client import Client

endpoint, mid_stream = sys.argv[1], sys.argv[2] == "1"
c = Client(endpoint, timeout=10)
s = c.open_session("svc", lane="require")
assert s.lane == "shm", s.lane_refused
s.request({"op": "count"})
if mid_stream:
    ticks = s.submit({"op": "ticks", "n": 0, "every_us": 1000})  # until someone dies
    deadline = time.monotonic() + 10
    while len(ticks.partials) < 3 and time.monotonic() < deadline:
        c.receive(0.05)
    assert len(ticks.partials) >= 3, ticks.partials
print("HOLDING", s.id, flush=True)
time.sleep(60)  # holds the lane until it is killed
"""


@pytest.mark.parametrize(
    "mid_stream",
    [False, True],
    ids=["idle", "mid-stream"],
)
def test_a_client_killed_holding_a_lane_has_it_freed_by_the_worker(
    stack: Stack, lane_files: LaneFiles, mid_stream: bool
) -> None:
    b = stack.broker("ipc")
    worker = stack.worker(b.endpoint, "svc")
    wait_for_workers(b.endpoint, "svc", 1)
    warm_up(b.endpoint, 1)
    lane_files.mark()
    before = broker_stats(b.endpoint)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDING_CLIENT, b.endpoint, "1" if mid_stream else "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    stack.procs.append(holder)
    wait_for_line(holder, "HOLDING", START_TIMEOUT_S, name="lane client")
    held = broker_stats(b.endpoint)
    assert held["lanes_opened"] == before["lanes_opened"] + 1 and held["sessions"] == 1
    assert lane_files.left()  # the lane is there while its client lives
    holder.kill()
    holder.wait(10)

    def freed() -> bool:
        st = broker_stats(b.endpoint)
        return st["sessions"] == 0 and st["lanes_closed"] == before["lanes_closed"] + 1

    try:
        wait_until(freed, 15, "the worker to free the dead client's lane", every=0.1)
    except AssertionError:
        raise AssertionError(f"not freed; broker stats: {broker_stats(b.endpoint)}") from None
    lane_files.assert_none_left()  # while the worker runs on
    with Caller(b.endpoint, "sync", timeout=10) as c, c.open_session("svc", lane="require") as s:
        assert s.session.lane == "shm"
        assert s.request({"op": "count"}).body["pid"] == worker.pid
    stats = broker_stats(b.endpoint)
    assert stats["workers_expired"] == 0 and stats["workers"] == 1
    lane_files.assert_none_left()
