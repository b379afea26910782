"""Micro-benchmarks of the per-message protocol work (pytest-benchmark).

They assert results, never speed: ``pytest --benchmark-only`` shows the timings; in the
normal run each body runs a few times as a test.
"""

from __future__ import annotations

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from client.messages import Payload
from client.request_core import RequestCore
from client.wire import BrokerRequest, parse_peer_message
from client.worker import WorkerState

pytestmark = pytest.mark.timeout(60)

PAYLOAD = np.arange(64, dtype=np.float64)


def request_frames() -> list[bytes]:
    _, frames = RequestCore(5.0).build("qpu", {"circuit": 1}, (PAYLOAD,), 5.0)
    return [bytes(f) for f in frames]


def test_client_builds_a_request(benchmark: BenchmarkFixture) -> None:
    core = RequestCore(5.0)
    rid, frames = benchmark(core.build, "qpu", {"circuit": 1}, (PAYLOAD,), 5.0)
    assert rid >= 1 and len(frames) == 4  # 512 B of array ride inside the header


def test_broker_parses_an_envelope(benchmark: BenchmarkFixture) -> None:
    frames = request_frames()
    msg = benchmark(parse_peer_message, frames)
    assert msg.service == b"qpu"  # type: ignore[union-attr]


def test_worker_handles_a_request(benchmark: BenchmarkFixture) -> None:
    state = WorkerState("qpu", lambda m: Payload(body=m.body, arrays=m.arrays))
    req = BrokerRequest(2, b"\0" * 8, request_frames()[3:])
    reply = benchmark(state.on_request, req)
    assert len(reply) == 5 and state.failed == 0


def test_client_decodes_a_reply(benchmark: BenchmarkFixture) -> None:
    state = WorkerState("qpu", lambda m: Payload(body=m.body, arrays=m.arrays))
    reply = state.on_request(BrokerRequest(2, b"\0" * 8, request_frames()[3:]))
    frames = [b"MDPC02", b"\x03", b"qpu", *(bytes(f) for f in reply[4:])]
    core = RequestCore(5.0)
    rid, message = benchmark(core.decode, frames)
    assert rid == 1 and np.array_equal(message.array, PAYLOAD)  # type: ignore[union-attr]
