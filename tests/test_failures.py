"""Failures: killed and frozen workers, garbage on the wire, full queues, shutdown."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from client import BrokerShutdown, Client, QueueFull, ServiceUnavailable, Worker, WorkerError
from client.wire import (
    MAX_MESSAGE_BYTES,
    encode_client_request,
    encode_header,
    parse_broker_reply,
    parse_header,
)
from control_sim.errors import ServerStartError
from tests.conftest import (
    ROOT,
    START_TIMEOUT_S,
    Stack,
    broker_stats,
    wait_for_line,
    wait_for_workers,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


def held_by(mark: Path, timeout: float = 10) -> int:
    """The pid of the worker that started the marked request."""
    pids = wait_until(lambda: list(mark.iterdir()), timeout, "a worker to take the request")
    return int(pids[0].name)


def two_workers(stack: Stack, endpoint: str, *extra: str) -> tuple[set[int], Path]:
    """Two registered echo workers, and an empty folder for them to mark requests in."""
    pids = {stack.worker(endpoint, "echo", *extra).pid for _ in range(2)}
    wait_for_workers(endpoint, "echo", 2)
    mark = stack.tmp / "mark"
    mark.mkdir()
    return pids, mark


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_worker_killed_mid_request_loses_nothing(stack: Stack, transport: str) -> None:
    broker = stack.broker(transport)
    pids, mark = two_workers(stack, broker.endpoint)
    with Client(broker.endpoint, timeout=20) as c:
        pending = c.submit("echo", {"op": "sleep", "s": 0.5, "mark": str(mark)})
        victim = held_by(mark)
        os.kill(victim, signal.SIGKILL)
        reply = pending.result()
        survivor = (pids - {victim}).pop()
        assert reply.body["pid"] == survivor
        # Exactly one reply: nothing else arrives for it (the next request reads past it).
        assert c.request("echo", "after").body["echo"] == "after"
        assert c.late_replies == 0
    stats = broker_stats(broker.endpoint)
    assert stats["redispatched"] == 1 and stats["workers"] == 1, stats


def test_frozen_worker_is_detected_and_its_request_moves(stack: Stack) -> None:
    broker = stack.broker("ipc")
    pids, mark = two_workers(stack, broker.endpoint, "--heartbeat-ms", "50")
    with Client(broker.endpoint, timeout=20) as c:
        pending = c.submit("echo", {"op": "sleep", "s": 0.3, "mark": str(mark)})
        frozen = held_by(mark)
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert pending.result().body["pid"] == (pids - {frozen}).pop()
            assert broker_stats(broker.endpoint)["workers_expired"] == 1
        finally:
            os.kill(frozen, signal.SIGCONT)
        # Thawed, it finishes, its reply is refused (it is no longer registered), it gets
        # DISCONNECT, reconnects and serves again.
        wait_for_workers(broker.endpoint, "echo", 2)
        assert c.request("echo", "after").body["echo"] == "after"
        assert c.late_replies == 0
    assert broker_stats(broker.endpoint)["unknown_worker"] >= 1


def test_garbage_does_not_stop_the_broker(stack: Stack, zctx: zmq.Context[Any]) -> None:
    broker = stack.broker("tcp")
    stack.worker(broker.endpoint)
    rng = random.Random(1234)
    host, port = broker.endpoint.removeprefix("tcp://").rsplit(":", 1)
    with Client(broker.endpoint, timeout=10) as c:
        assert c.request("echo", 0).body["echo"] == 0
        # Raw bytes that are not ZMTP at all.
        for _ in range(20):
            with socket.create_connection((host, int(port)), timeout=5) as s:
                s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))))
        # Well-framed ZeroMQ messages that are not Majordomo, or broken Majordomo.
        junk = zctx.socket(zmq.DEALER)
        junk.connect(broker.endpoint)
        shapes = [
            [b"MDPC02", b"\x07", b"echo"],
            [b"MDPW02", b"\x09"],
            [b"MDPW02", b"\x04", b"no-such-token", b"", b"x"],
            [b"", b"MDPW01", b"\x03", b"addr"],
            [b"MDPC02"],
            [b"x"] * 200,
        ]
        for i in range(300):
            frames = (
                shapes[i % len(shapes)]
                if i % 2
                else [
                    bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 50)))
                    for _ in range(rng.randint(1, 6))
                ]
            )
            junk.send_multipart(frames)
            if i % 50 == 0:
                assert c.request("echo", i).body["echo"] == i
        assert c.request("echo", "still").body["echo"] == "still"
        junk.close()
    stats = broker_stats(broker.endpoint)
    assert stats["malformed"] >= 150


def test_malformed_client_request_gets_an_error_reply(stack: Stack, zctx: zmq.Context[Any]) -> None:
    broker = stack.broker("ipc")
    s = zctx.socket(zmq.DEALER)
    s.connect(broker.endpoint)
    s.send_multipart([b"MDPC02", b"\x01", b"bad\x01name", b"x"])
    assert s.poll(5000)
    reply = s.recv_multipart()
    assert reply[:2] == [b"MDPC02", b"\x03"]
    err = msgpack.unpackb(reply[3])
    assert err["error"]["type"] == "malformed" and "printable" in err["error"]["message"]


def test_oversized_request_gets_an_error_reply(stack: Stack, zctx: zmq.Context[Any]) -> None:
    """A third-party client can skip our client-side check; the broker still refuses."""
    broker = stack.broker("ipc")
    stack.worker(broker.endpoint)
    s = zctx.socket(zmq.DEALER)
    s.connect(broker.endpoint)
    half = np.zeros(MAX_MESSAGE_BYTES // 2 + 1, dtype=np.uint8)
    header = encode_header(id=42, kind="request")
    s.send_multipart([b"MDPC02", b"\x01", b"echo", header, half, half], copy=False)
    assert s.poll(10000)
    reply = s.recv_multipart()
    err = msgpack.unpackb(reply[3])
    assert err["id"] == 42 and err["error"]["type"] == "payload_too_large"
    with Client(broker.endpoint) as c:
        assert c.request("echo", 1).body["echo"] == 1


def test_full_queue_refuses_with_a_clear_error_and_drops_nothing(stack: Stack) -> None:
    broker = stack.broker("ipc", "--max-queue", "5")
    with Client(broker.endpoint) as c:
        pend = [c.submit("later", i, timeout=30) for i in range(8)]
        refused = []
        for p in pend[5:]:
            with pytest.raises(QueueFull):
                p.result()
            refused.append(p.id)
        assert len(refused) == 3
        stack.worker(broker.endpoint, "later")
        assert [p.result().body["echo"] for p in pend[:5]] == list(range(5))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_answers_waiting_clients(stack: Stack, sig: int) -> None:
    broker = stack.broker("ipc")
    with Client(broker.endpoint, timeout=20) as c:
        waiting = c.submit("nobody", 1)
        assert c.service_available("nobody") is False  # the request is queued by now
        assert broker.stop(sig) == 0  # it exited by itself (a hung one is killed: -9)
        with pytest.raises(BrokerShutdown):
            waiting.result()


def test_worker_reconnects_after_a_broker_restart(stack: Stack) -> None:
    broker = stack.broker("ipc")
    stack.worker(broker.endpoint, "echo", "--heartbeat-ms", "50")
    wait_for_workers(broker.endpoint, "echo", 1)
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL
    broker = stack.broker("ipc")
    wait_for_workers(broker.endpoint, "echo", 1, timeout=15)
    with Client(broker.endpoint) as c:
        assert c.request("echo", "back").body["echo"] == "back"


def test_a_worker_prints_ready_only_once_a_broker_answers(stack: Stack) -> None:
    """A READY sent with no broker listening goes nowhere, yet the send succeeds: the
    worker says READY only once a broker has answered it, once per registration, and
    meanwhile warns once that nobody answers."""
    endpoint = stack.endpoint("ipc")
    err_path = stack.tmp / "worker.err"
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.peers.nl_worker", endpoint, "echo"],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    stack.procs.append(proc)

    def warnings() -> list[str]:
        return [ln for ln in err_path.read_text().splitlines() if "no broker answered" in ln]

    wait_until(warnings, START_TIMEOUT_S, "the worker's warning that no broker answers")
    (warning,) = warnings()
    expected = rf"echo: no broker answered at {re.escape(endpoint)} after \d+ ms; still trying"
    assert re.fullmatch(expected, warning), warning
    # It goes on trying (every 200 ms at most) and says nothing more, READY least of all.
    with pytest.raises(ServerStartError, match="printed no 'READY' line within"):
        wait_for_line(proc, "READY", 2)
    assert len(warnings()) == 1

    broker = stack.broker("ipc")
    wait_for_line(proc, "READY", START_TIMEOUT_S)
    wait_for_workers(broker.endpoint, "echo", 1)
    assert broker.stop(signal.SIGKILL) == -signal.SIGKILL
    broker = stack.broker("ipc")
    wait_for_line(proc, "READY", START_TIMEOUT_S)  # registered again: READY again
    with Client(broker.endpoint) as c:
        assert c.request("echo", "back").body["echo"] == "back"
        assert c.broker_stats()["workers_registered"] == 1


def test_a_worker_whose_ready_is_refused_never_reports_ready(stack: Stack) -> None:
    """The broker refuses READY for its own ``nl.`` names with DISCONNECT: an answer, but
    no registration."""
    broker = stack.broker("ipc")
    ready: list[int] = []
    worker = Worker(broker.endpoint, "nl.mine", lambda m: None, reconnect_max_ms=50)
    thread = threading.Thread(target=worker.run, args=(lambda: ready.append(1),), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.connects >= 3, START_TIMEOUT_S, "three READYs refused")
        assert ready == [] and worker.registrations == 0
        assert broker_stats(broker.endpoint)["workers_registered"] == 0
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_no_worker_error_is_an_error_not_a_hang(stack: Stack) -> None:
    """The request's ttl_ms is 90 % of the client's timeout: the broker's ``no_worker``
    comes 0.5 s before the client would give up, time enough on a busy machine."""
    broker = stack.broker("ipc")
    with Client(broker.endpoint) as c, pytest.raises(ServiceUnavailable):
        c.request("ghost", 1, timeout=5)


def test_headers_that_break_parsing_do_not_stop_the_broker(
    stack: Stack, zctx: zmq.Context[Any]
) -> None:
    """The broker reads the header of a request that must wait (for its ttl_ms)."""
    broker = stack.broker("ipc", "--request-ttl-ms", "300")
    s = zctx.socket(zmq.DEALER)
    s.connect(broker.endpoint)
    bad_headers = [
        msgpack.packb({"id": 1, "kind": "request", "ttl_ms": 100, "arrays": [["<f8", [[1]]]]}),
        msgpack.packb({"id": 2, "kind": "request", "ttl_ms": 100, "arrays": [["<f8", [{}]]]}),
        msgpack.packb({"id": 3, "kind": "request", "ttl_ms": 100, "ts": {"a": [1]}}),
        msgpack.packb({"id": [4], "kind": "request", "ttl_ms": 100}),
        b"\xc1",
    ]
    for h in bad_headers:
        s.send_multipart([b"MDPC02", b"\x01", b"nobody", h])
    for _ in bad_headers:  # each still gets its no_worker error, after the broker default
        assert s.poll(15000)
        err = msgpack.unpackb(s.recv_multipart()[3])
        assert err["error"]["type"] == "no_worker"
    with Client(broker.endpoint) as c:
        assert c.broker_stats()["internal_errors"] == 0


def test_a_huge_exception_message_still_gets_a_bounded_error_reply(stack: Stack) -> None:
    broker = stack.broker("ipc")
    stack.worker(broker.endpoint)
    with Client(broker.endpoint) as c:
        with pytest.raises(WorkerError) as exc:
            c.request("echo", {"op": "fail", "msg": "x", "repeat": 200_000})
        assert 0 < len(exc.value.message) <= 4096
        assert c.request("echo", 1).body["echo"] == 1  # the same worker goes on


def test_unused_service_names_do_not_pile_up(stack: Stack, zctx: zmq.Context[Any]) -> None:
    """40 names nobody serves, one after another, against a limit of 8: each request
    waits out its own short ``ttl_ms`` in the broker's queue and gets ``no_worker``, and its
    name is forgotten, so the limit is never reached. The client waits seconds for each
    reply, so a busy machine cannot turn the broker's answer into a client timeout."""
    broker = stack.broker("ipc", "--max-services", "8")
    s = zctx.socket(zmq.DEALER)
    s.connect(broker.endpoint)
    for i in range(40):
        name = f"typo-{i}".encode()
        header = encode_header(id=i + 1, kind="request", ttl_ms=10)
        s.send_multipart(encode_client_request(2, name, [header]))
        assert s.poll(10_000), f"no reply for {name!r}"
        reply = parse_broker_reply(s.recv_multipart())
        error = parse_header(reply.body[0])
        assert (reply.final, reply.service, error.id) == (True, name, i + 1)
        assert error.error is not None and error.error.type == "no_worker"
    stats = broker_stats(broker.endpoint)
    assert stats["services"] == {} and stats["services_refused"] == 0
    assert stats["expired"] == 40


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to drop a connection")
def test_client_connection_dropped_mid_request_still_gets_its_reply(stack: Stack) -> None:
    """The client's TCP connection is aborted while a worker (on ipc) holds its request."""
    broker = stack.broker(binds=[stack.endpoint("ipc"), "tcp://127.0.0.1:*"])
    ipc_ep, tcp_ep = broker.endpoints
    stack.worker(ipc_ep)
    wait_for_workers(ipc_ep, "echo", 1)
    mark = stack.tmp / "mark"
    mark.mkdir()
    port = tcp_ep.rsplit(":", 1)[1]
    with Client(tcp_ep, timeout=20) as c:
        pending = c.submit("echo", {"op": "sleep", "s": 0.5, "mark": str(mark)})
        held_by(mark)
        killed = subprocess.run(
            ["ss", "-K", "dst", "127.0.0.1", "dport", "=", port], capture_output=True, text=True
        )
        if "ESTAB" not in killed.stdout:
            pytest.skip("this kernel cannot destroy sockets (ss -K)")
        assert pending.result().body["echo"]["op"] == "sleep"
