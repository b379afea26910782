"""Continuous mode through a real broker and real ``python -m control_sim qpu`` workers,
over a shared-memory lane (what a co-located :class:`QpuSession` gets by default) and
through the broker (``lane="off"``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from client import Client, RemoteError, SessionLost
from client.wire.lanes import LaneMode
from control_sim.qpu.session import QpuSession
from tests.conftest import (
    START_TIMEOUT_S,
    Stack,
    needs_lanes,
    spawn,
    wait_for_line,
    wait_for_workers,
)

pytestmark = pytest.mark.timeout(90)

TRANSPORTS = [
    pytest.param("off", id="broker"),
    pytest.param(
        "require",
        id="lane",
        marks=needs_lanes,
    ),
]
"""``lane=`` for a QpuSession through the broker and over a lane (where lanes work)."""

RY = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'
"""<Z> after ry(a) on |0> is cos(a): each parameter version has its own exact value."""


def _qpu_worker(stack: Stack, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    proc = spawn(
        ["-m", "control_sim", "qpu", "--connect", endpoint, "--heartbeat-ms", "50", *extra]
    )
    stack.procs.append(proc)
    wait_for_line(proc, "READY", START_TIMEOUT_S)
    return proc


def _register(c: Client) -> str:
    reply = c.request("qpu", {"op": "register", "qasm3": RY, "observables": [[["Z", 1.0]]]})
    return str(reply.body["circuit"])


@pytest.mark.parametrize("lane", TRANSPORTS)
def test_results_carry_the_parameter_version_that_produced_them(
    stack: Stack, lane: LaneMode
) -> None:
    b = stack.broker("ipc")
    _qpu_worker(stack, b.endpoint)
    wait_for_workers(b.endpoint, "qpu", 1)
    thetas = [0.3, 1.1, 2.5]
    with Client(b.endpoint, timeout=10) as c, QpuSession(c, lane=lane) as qs:
        assert qs.session.lane == ("shm" if lane == "require" else "zmq")
        cid = _register(c)
        run = qs.run(cid, [thetas[0]], window=4)
        seen = [run.next() for _ in range(5)]
        for version, theta in enumerate(thetas[1:], start=1):
            assert run.update([theta]) == version
            while seen[-1].version != version:  # consume until the new version shows up
                seen.append(run.next())
        seen += [run.next() for _ in range(3)]
        final = run.stop()
    assert final["version"] == 2 and final["reason"] == "stopped"
    assert [r.batch for r in seen] == list(range(len(seen)))  # in order, none missing
    versions = [r.version for r in seen]
    assert versions == sorted(versions) and set(versions) == {0, 1, 2}
    for r in seen:
        assert r.values.shape == (1, 1)
        assert r.values[0, 0] == pytest.approx(np.cos(thetas[r.version]), abs=1e-12)


def test_an_update_applies_from_the_batch_its_reply_names(stack: Stack) -> None:
    b = stack.broker("ipc")
    _qpu_worker(stack, b.endpoint)
    wait_for_workers(b.endpoint, "qpu", 1)
    with Client(b.endpoint, timeout=10) as c, QpuSession(c) as qs:
        cid = _register(c)
        run = qs.run(cid, [0.0], shots=200, seed=5, window=8)
        run.next()
        reply = qs.session.request({"op": "update"}, np.array([np.pi]))
        switch = int(reply.body["batch"])
        results = []
        while len(results) < switch + 3:
            results.append(run.next())  # consuming acknowledges, so the worker goes on
        run.stop()
    for r in results:
        assert r.version == (1 if r.batch >= switch else 0)
        # 200 shots of an eigenstate: exactly +1 before the update, -1 after
        assert r.values[0, 0] == (-1.0 if r.version else 1.0)


def test_the_worker_runs_at_most_window_batches_ahead_of_the_consumer(stack: Stack) -> None:
    b = stack.broker("ipc")
    _qpu_worker(stack, b.endpoint)
    wait_for_workers(b.endpoint, "qpu", 1)
    with Client(b.endpoint, timeout=10) as c, QpuSession(c) as qs:
        cid = _register(c)
        run = qs.run(cid, [0.5], window=3)
        deadline = time.monotonic() + 10
        while len(run.pending.partials) < 3 and time.monotonic() < deadline:
            c.receive(0.1)
        assert len(run.pending.partials) == 3
        assert not c.receive(0.3)  # nothing more until the consumer acknowledges
        for _ in range(10):
            run.next()  # consuming acknowledges, and the loop goes on
        assert run.stop()["batches"] >= 10


@pytest.mark.parametrize("lane", TRANSPORTS)
def test_a_continuous_run_whose_worker_is_killed_fails_within_bounded_time(
    stack: Stack, lane: LaneMode
) -> None:
    b = stack.broker("ipc")
    victim = _qpu_worker(stack, b.endpoint)
    wait_for_workers(b.endpoint, "qpu", 1)
    with Client(b.endpoint, timeout=10) as c:
        cid = _register(c)
        qs = QpuSession(c, lane=lane)
        run = qs.run(cid, [0.5], window=4)
        for _ in range(5):
            run.next()
        os.kill(victim.pid, signal.SIGKILL)
        # Through the broker: found dead by its silence, or by its connection's end when
        # the broker sends to it (an ack of the window, say), and the broker fails the run
        # with session_lost. Over a lane: the client sees the worker's end of the lane go.
        # Either way long before the client's own 10 s timeout could.
        gone = r"missed its heartbeats|could not be sent to"
        if lane == "require":
            gone = r"the worker's end of lane nl_[0-9a-f]{32} is gone"
        began = time.monotonic()
        with pytest.raises(SessionLost, match=gone):
            while True:
                run.next()  # results already on the way, then the error
        assert time.monotonic() - began < 10  # not the client's timeout
        with pytest.raises(SessionLost):
            run.update([0.1])
        qs.session.close()


def test_continuous_mode_refuses_bad_input_and_keeps_serving(stack: Stack) -> None:
    b = stack.broker("ipc")
    _qpu_worker(stack, b.endpoint)
    wait_for_workers(b.endpoint, "qpu", 1)
    with Client(b.endpoint, timeout=10) as c, QpuSession(c) as qs:
        cid = _register(c)
        x = np.array([0.5])

        with pytest.raises(RemoteError, match="within a session") as e:
            c.request("qpu", {"op": "run", "circuit": cid}, x)
        assert e.value.type == "bad_request"
        with pytest.raises(RemoteError, match="a run going in this session") as e:
            qs.session.request({"op": "update"}, x)
        assert e.value.type == "bad_request"
        with pytest.raises(RemoteError) as e:
            qs.session.request({"op": "run", "circuit": "nope"}, x)
        assert e.value.type == "unknown_circuit"
        with pytest.raises(RemoteError) as e:
            qs.session.request({"op": "run", "circuit": cid, "window": 0}, x)
        assert e.value.type == "bad_request" and "window" in str(e.value)
        run = qs.run(cid, x, window=2)
        run.next()
        with pytest.raises(RemoteError, match="stop it first") as e:
            qs.session.request({"op": "run", "circuit": cid}, x)
        with pytest.raises(RemoteError, match=r"shape \(1,\)") as e:
            run.update([0.1, 0.2])
        assert e.value.type == "bad_parameters"
        with pytest.raises(RemoteError) as e:
            qs.session.request({"op": "ack", "batch": 10**6})
        assert e.value.type == "bad_request"
        assert run.update([0.2]) == 1  # the run survived every refusal
        assert run.stop()["version"] == 1
        # and the service still answers ordinary requests
        values = c.request("qpu", {"op": "estimate", "circuit": cid}, x).arrays[0]
        assert values[0, 0] == pytest.approx(np.cos(0.5), abs=1e-12)
