"""A request traced hop by hop: the broker's stamps, the breakdown, ``call --trace``.

Real broker and worker processes on ipc and tcp loopback; plain MDP peers written from
the RFCs check that the broker never touches a body that does not ask for a trace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import zmq

from client import Client
from client.lane.host import HOST_ID_ENV, host_identity
from client.messages import Message
from client.wire import encode_header
from client.wire.trace import (
    BROKER_FWD,
    BROKER_RECV,
    BROKER_REPLY_FWD,
    BROKER_REPLY_RECV,
    CLIENT_RECV,
    CLIENT_SEND,
    STAMPS,
    TRACE_MARK,
    WORKER_RECV,
    WORKER_SEND,
    breakdown,
    mark_traced,
)
from control_sim.stack.processes import START_TIMEOUT_S, wait_for_line
from tests.conftest import ROOT, Stack, needs_lanes, run_module, wait_for_workers
from tests.peers.mdp_rfc import PlainWorker, V2Client

pytestmark = pytest.mark.timeout(60)

ORDER = [name for name, _ in STAMPS]
"""client_send <= broker_recv <= broker_fwd <= worker_recv <= worker_send <=
broker_reply_recv <= broker_reply_fwd <= client_recv, on one host."""
ONE_HOST_HOPS = [
    "client->broker",
    "queue",
    "broker->worker",
    "handler",
    "worker->broker",
    "broker (reply)",
    "broker->client",
]


def assert_ordered(ts: dict[str, int], names: list[str] = ORDER) -> None:
    values = [ts[n] for n in names]
    assert values == sorted(values), dict(zip(names, values, strict=True))


def assert_one_host_trace(m: Message) -> None:
    ts = m.ts
    assert set(ORDER) <= set(ts), sorted(ts)
    assert_ordered(ts)
    assert m.hosts == {"broker": host_identity(), "worker": host_identity()}
    b = m.trace()
    assert b.one_host
    assert [h.name for h in b.hops] == ONE_HOST_HOPS
    assert all(h.ns >= 0 for h in b.hops)
    assert sum(h.ns for h in b.hops) == b.total_ns == ts[CLIENT_RECV] - ts[CLIENT_SEND]


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_traced_request_has_every_stamp_in_order(stack: Stack, transport: str) -> None:
    ep = stack.broker(transport).endpoint
    stack.worker(ep)
    with Client(ep, timeout=10) as c:
        c.trace = True
        m = c.request("echo", {"x": 1})
        assert m.body["echo"] == {"x": 1}
        assert_one_host_trace(m)
        c.trace = False
        plain = c.request("echo", {"x": 2})
    assert not {BROKER_RECV, BROKER_FWD, BROKER_REPLY_RECV, BROKER_REPLY_FWD} & set(plain.ts)
    assert {CLIENT_SEND, WORKER_RECV, WORKER_SEND, CLIENT_RECV} <= set(plain.ts)
    assert plain.hosts == {}


def _capture(seen: list[list[bytes]], reply: list[bytes] | None = None) -> Any:
    def handler(body: list[bytes]) -> list[list[bytes]]:
        seen.append(list(body))
        return [reply if reply is not None else body]

    return handler


def test_untraced_and_plain_bodies_pass_byte_identical(
    stack: Stack, zctx: zmq.Context[Any]
) -> None:
    ep = stack.broker("ipc").endpoint
    seen: list[list[bytes]] = []
    worker = PlainWorker(zctx, ep, b"raw", _capture(seen), version=2, heartbeat_ms=100)
    worker.start()
    try:
        wait_for_workers(ep, "raw", 1)
        client = V2Client(zctx, ep)
        untraced = [encode_header(id=7, kind="request", ts={CLIENT_SEND: 1}), b"\x00" * 64]
        # The flag's bytes where the broker looks, in bodies that are not nearloop headers.
        lookalikes = [
            [b"\x81" + TRACE_MARK],  # {"trace": true}: msgpack, but no id
            [b"\x83" + TRACE_MARK + b"opaque bytes", b"more"],  # not even msgpack
            [b"\x81" + TRACE_MARK, mark_traced(encode_header(id=1, kind="request"))],
        ]
        for body in [untraced, *lookalikes]:
            partials, final = client.request(b"raw", body)
            assert seen[-1] == body  # the worker got it byte for byte
            assert partials == [] and final == body  # and so did the client
    finally:
        worker.stop()


def test_traced_request_to_a_plain_worker(stack: Stack, zctx: zmq.Context[Any]) -> None:
    """The broker stamps a reply only if it is a nearloop header: an opaque reply to a
    traced request goes back unchanged, an echoed header gets the stamps."""
    ep = stack.broker("ipc").endpoint
    seen: list[list[bytes]] = []
    opaque = [b"\x81" + TRACE_MARK + b" not a header"]
    worker = PlainWorker(zctx, ep, b"opaque", _capture(seen, opaque), version=2)
    echo = PlainWorker(zctx, ep, b"echo", _capture([]), version=2)
    worker.start()
    echo.start()
    try:
        wait_for_workers(ep, "opaque", 1)
        wait_for_workers(ep, "echo", 1)
        client = V2Client(zctx, ep)
        traced = [mark_traced(encode_header(id=3, kind="request", ts={CLIENT_SEND: 5}))]
        assert client.request(b"opaque", traced) == ([], opaque)
        assert seen == [traced]  # the request itself is forwarded unchanged
        with Client(ep, timeout=10) as c:
            c.trace = True
            m = c.request("echo", {"y": 1})
        assert m.body == {"y": 1}
        names = [h.name for h in m.trace().hops]
        assert names == [
            "client->broker",
            "queue",
            "broker->worker->broker",
            "broker (reply)",
            "broker->client",
        ]
    finally:
        worker.stop()
        echo.stop()


def test_partials_and_final_are_traced(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    with Client(ep, timeout=10) as c:
        c.trace = True
        call = c.submit("echo", {"op": "ticks", "n": 3, "every_us": 1000})
        final = call.result()
        partials = list(call.partials)
    assert len(partials) == 3
    for p in partials:
        ts = p.ts
        assert_ordered(ts, [CLIENT_SEND, BROKER_RECV, BROKER_FWD, WORKER_RECV])
        assert_ordered(ts, [WORKER_SEND, BROKER_REPLY_RECV, BROKER_REPLY_FWD, CLIENT_RECV])
        assert sum(h.ns for h in p.trace().hops) == p.trace().total_ns
    # The deferred reply's FINAL is sent from the idle callback after its PARTIALs.
    assert final.ts[BROKER_REPLY_RECV] >= partials[-1].ts[BROKER_REPLY_FWD]
    recvs = [p.ts[BROKER_REPLY_RECV] for p in partials]
    assert recvs == sorted(recvs) and len(set(recvs)) == 3


def test_queued_request_shows_its_wait(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep, "echo", "--credit", "1")
    with Client(ep, timeout=20) as c:
        c.trace = True
        busy = c.submit("echo", {"op": "sleep", "s": 0.3})
        queued = c.submit("echo", {"op": "echo"})
        first, second = busy.result(), queued.result()
    assert_one_host_trace(second)
    queue = dict((h.name, h.ns) for h in second.trace().hops)["queue"]
    assert queue > 0
    # It left the queue only when the busy request's reply freed the worker's credit.
    assert second.ts[BROKER_FWD] >= first.ts[BROKER_REPLY_RECV]


def test_session_through_the_broker_is_traced(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    with Client(ep, timeout=10) as c:
        c.trace = True
        with c.open_session("echo", lane="off") as s:
            m = s.request({"op": "count"})
    assert m.body["count"] == 1
    assert_one_host_trace(m)


@needs_lanes
def test_session_over_a_lane_has_client_and_worker_hops(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    with Client(ep, timeout=10) as c:
        c.trace = True  # no broker on a lane: nothing to ask it
        with c.open_session("echo", lane="require") as s:
            m = s.request({"op": "count"})
    assert not {BROKER_RECV, BROKER_FWD, BROKER_REPLY_RECV, BROKER_REPLY_FWD} & set(m.ts)
    assert_ordered(m.ts, [CLIENT_SEND, WORKER_RECV, WORKER_SEND, CLIENT_RECV])
    b = m.trace()
    assert b.one_host
    assert [h.name for h in b.hops] == ["client->worker", "handler", "worker->client"]
    assert sum(h.ns for h in b.hops) == b.total_ns


def test_worker_on_another_host_is_one_network_line(stack: Stack) -> None:
    """A worker whose host identity differs (NEARLOOP_HOST_ID, as in a network namespace
    of its own) has its legs to the broker reported as one line: total less the rest."""
    ep = stack.broker("ipc").endpoint
    env = {**os.environ, "PYTHONUNBUFFERED": "1", HOST_ID_ENV: "another-host"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.nl_worker", ep, "echo"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    stack.procs.append(proc)
    wait_for_line(proc, "READY", START_TIMEOUT_S)
    with Client(ep, timeout=10) as c:
        c.trace = True
        m = c.request("echo", {})
    assert m.hosts == {"broker": host_identity(), "worker": "another-host"}
    b = m.trace()
    assert not b.one_host
    names = [h.name for h in b.hops]
    assert names == [
        "client->broker",
        "queue",
        "handler",
        "broker (reply)",
        "broker->client",
        "network (broker->worker + worker->broker)",
    ]
    assert sum(h.ns for h in b.hops) == b.total_ns
    network = b.hops[-1]
    assert not network.measured
    ts = m.ts
    handler = ts[WORKER_SEND] - ts[WORKER_RECV]
    assert network.ns == ts[BROKER_REPLY_RECV] - ts[BROKER_FWD] - handler


def test_client_on_another_host_measures_only_same_clock_hops() -> None:
    ts = dict(zip(ORDER, [100, 5000, 5010, 5020, 5100, 5120, 5125, 900], strict=True))
    b = breakdown(ts, {"broker": "b", "worker": "b"}, "c")
    assert [h.name for h in b.hops] == [
        "queue",
        "broker->worker",
        "handler",
        "worker->broker",
        "broker (reply)",
        "network (client->broker + broker->client)",
    ]
    assert b.hops[-1].ns == 800 - 125 and sum(h.ns for h in b.hops) == b.total_ns == 800


def test_no_round_trip_without_client_stamps() -> None:
    with pytest.raises(ValueError, match="client_send"):
        breakdown({WORKER_RECV: 1, WORKER_SEND: 2}, {}, "h")


def _hop_lines(stdout: str) -> dict[str, float]:
    lines = stdout.strip().splitlines()
    json.loads(lines[0])  # the reply comes first
    out = {}
    for line in lines[1:]:
        name, value, unit = line.rsplit(maxsplit=2)
        assert unit == "µs", line
        out[name.strip()] = float(value)
    return out


def test_call_trace_prints_the_hops(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    wait_for_workers(ep, "echo", 1)
    done = run_module("client", "call", "--connect", ep, "--trace", "echo", '{"z": 3}', timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["echo"] == {"z": 3}
    hops = _hop_lines(done.stdout)
    assert list(hops) == [*ONE_HOST_HOPS, "total"]
    total = hops.pop("total")
    assert total > 0
    # Each value is rounded to 0.1 µs: their sum is within 0.05 µs a line of the total.
    assert abs(sum(hops.values()) - total) <= 0.05 * (len(hops) + 1) + 1e-9
    # The columns line up.
    lines = done.stdout.strip().splitlines()[1:]
    assert len({line.index("µs") for line in lines}) == 1


def test_nearloop_call_trace(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    wait_for_workers(ep, "echo", 1)
    nearloop = Path(sys.executable).parent / "nearloop"
    done = subprocess.run(
        [str(nearloop), "call", "--connect", ep, "--trace", "echo"],
        capture_output=True, text=True, timeout=30, cwd=tempfile.gettempdir(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert list(_hop_lines(done.stdout)) == [*ONE_HOST_HOPS, "total"]


def test_trace_costs_no_extra_frames(stack: Stack) -> None:
    """A traced reply carries the same frames, arrays included, as an untraced one."""
    import numpy as np

    ep = stack.broker("ipc").endpoint
    stack.worker(ep)
    a = np.arange(20_000, dtype=np.float64)  # over 64 KiB: a zero-copy frame
    with Client(ep, timeout=10) as c:
        c.trace = True
        traced = c.request("echo", {}, a)
        c.trace = False
        plain = c.request("echo", {}, a)
    assert np.array_equal(traced.array, a) and np.array_equal(plain.array, a)
