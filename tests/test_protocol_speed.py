"""Micro-benchmarks of the per-message protocol work (pytest-benchmark).

They assert results, never speed: ``pytest --benchmark-only`` shows the timings; in the
normal run each body runs a few times as a test.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import zmq
from pytest_benchmark.fixture import BenchmarkFixture

from client.connection import Call, Connection
from client.messages import Payload
from client.wire import BrokerRequest, parse_peer_message
from client.worker import WorkerState

pytestmark = pytest.mark.timeout(60)

PAYLOAD = np.arange(64, dtype=np.float64)


@pytest.fixture
def conn(zctx: zmq.Context[Any]) -> Iterator[Connection[Call]]:
    """A client's connection (to an endpoint nothing serves: building and decoding never
    touch the socket)."""
    c = Connection("inproc://speed", Call, timeout=5.0, spin_us=0, context=zctx)
    yield c
    c.close()


def request_frames(conn: Connection[Call]) -> tuple[int, list[bytes]]:
    """A request's id and frames. (Not always id 1: a connection may have sent its own
    ``mmi.instance`` probe first.)"""
    rid, frames = conn.build("qpu", {"circuit": 1}, (PAYLOAD,), 5.0)
    return rid, [bytes(f) for f in frames]


def test_client_builds_a_request(benchmark: BenchmarkFixture, conn: Connection[Call]) -> None:
    rid, frames = benchmark(conn.build, "qpu", {"circuit": 1}, (PAYLOAD,), 5.0)
    assert rid >= 1 and len(frames) == 4  # 512 B of array ride inside the header


def test_broker_parses_an_envelope(benchmark: BenchmarkFixture, conn: Connection[Call]) -> None:
    _, frames = request_frames(conn)
    msg = benchmark(parse_peer_message, frames)
    assert msg.service == b"qpu"  # type: ignore[union-attr]


def test_worker_handles_a_request(benchmark: BenchmarkFixture, conn: Connection[Call]) -> None:
    state = WorkerState("qpu", lambda m: Payload(body=m.body, arrays=m.arrays))
    req = BrokerRequest(2, b"\0" * 8, request_frames(conn)[1][3:])
    reply = benchmark(state.on_request, req)
    assert reply is not None and len(reply.frames()) == 5 and state.failed == 0


def test_client_decodes_a_reply(benchmark: BenchmarkFixture, conn: Connection[Call]) -> None:
    state = WorkerState("qpu", lambda m: Payload(body=m.body, arrays=m.arrays))
    rid, request = request_frames(conn)
    reply = state.on_request(BrokerRequest(2, b"\0" * 8, request[3:]))
    assert reply is not None
    frames = [b"MDPC02", b"\x03", b"qpu", *(bytes(f) for f in reply.frames()[4:])]
    got, message = benchmark(conn.decode, frames)
    assert got == rid and np.array_equal(message.array, PAYLOAD)  # type: ignore[union-attr]


def test_client_delivers_a_reply_to_its_call(
    benchmark: BenchmarkFixture, conn: Connection[Call]
) -> None:
    state = WorkerState("qpu", lambda m: Payload(body=m.body, arrays=m.arrays))
    rid, request = request_frames(conn)
    reply = state.on_request(BrokerRequest(2, b"\0" * 8, request[3:]))
    assert reply is not None
    frames = [b"MDPC02", b"\x03", b"qpu", *(bytes(f) for f in reply.frames()[4:])]
    owner = SimpleNamespace(_conn=conn)
    calls: list[Call] = []

    def register() -> None:  # a fresh call in flight for each round, as a client's would be
        calls.append(Call(owner, rid, "qpu", 5.0))
        conn.calls[rid] = calls[-1]

    benchmark.pedantic(conn.deliver, (frames,), setup=register, rounds=2000)
    assert calls and all(c.done for c in calls) and rid not in conn.calls
    assert conn.late_replies == 0 and np.array_equal(calls[-1]._take().array, PAYLOAD)
