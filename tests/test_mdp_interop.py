"""Plain MDP/0.1 and MDP/0.2 peers, written from the RFCs, against ``python -m broker``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

import client
from client import AsyncClient, Client, Message
from tests.conftest import BrokerProc, Stack, broker_stats, wait_for_workers, wait_until
from tests.peers.cstring_worker import CStringWorker
from tests.peers.mdp_rfc import PlainWorker, V1Client, V2Client, echo

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["ipc", "tcp"])
def broker(request: pytest.FixtureRequest, stack: Stack) -> BrokerProc:
    return stack.broker(request.param, "--request-ttl-ms", "500")


@pytest.fixture
def workers(zctx: zmq.Context[Any]) -> Iterator[list[PlainWorker]]:
    started: list[PlainWorker] = []
    yield started
    for w in started:
        w.stop()


def start(workers: list[PlainWorker], w: PlainWorker) -> PlainWorker:
    w.start()
    workers.append(w)
    return w


@pytest.mark.parametrize("client_version", [1, 2])
@pytest.mark.parametrize("worker_version", [1, 2])
def test_plain_client_and_worker_of_either_version(
    broker: BrokerProc,
    zctx: zmq.Context[Any],
    workers: list[PlainWorker],
    client_version: int,
    worker_version: int,
) -> None:
    start(workers, PlainWorker(zctx, broker.endpoint, b"echo", echo, version=worker_version))
    wait_for_workers(broker.endpoint, "echo", 1)
    body = [b"hello", b"", b"\x00\xff" * 100]
    for _ in range(20):
        if client_version == 1:
            assert V1Client(zctx, broker.endpoint).request(b"echo", body) == body
        else:
            assert V2Client(zctx, broker.endpoint).request(b"echo", body) == ([], body)


@pytest.mark.parametrize("version", [1, 2])
def test_a_worker_that_keeps_the_address_as_a_c_string_answers_every_request(
    broker: BrokerProc, zctx: zmq.Context[Any], workers: list[PlainWorker], version: int
) -> None:
    """The zguide's C++ worker keeps the client address as a C string (PROTOCOL.md §2.5);
    an address with a NUL byte in it would come back cut short, and go unanswered."""
    w = start(workers, CStringWorker(zctx, broker.endpoint, b"cstr", echo, version=version))
    wait_for_workers(broker.endpoint, "cstr", 1)
    v1, v2 = V1Client(zctx, broker.endpoint), V2Client(zctx, broker.endpoint)
    for i in range(100):
        body = [b"request %d" % i, b"\x00binary\x00"]
        assert v1.request(b"cstr", body) == body
        assert v2.request(b"cstr", body) == ([], body)
    # The worker counts a request after sending its reply, so the last count may land
    # just after the client has the reply.
    wait_until(lambda: w.served == 200, 10, "the worker counted 200 requests")
    assert broker_stats(broker.endpoint)["stale_replies"] == 0


def test_v2_partials_reach_a_v2_client_and_v1_client_gets_only_the_final(
    broker: BrokerProc, zctx: zmq.Context[Any], workers: list[PlainWorker]
) -> None:
    def stream(body: list[bytes]) -> list[list[bytes]]:
        return [[b"part", bytes([i])] for i in range(3)] + [[b"done"]]

    start(workers, PlainWorker(zctx, broker.endpoint, b"stream", stream, version=2))
    wait_for_workers(broker.endpoint, "stream", 1)
    partials, final = V2Client(zctx, broker.endpoint).request(b"stream", [b"go"])
    assert partials == [[b"part", bytes([i])] for i in range(3)] and final == [b"done"]
    assert V1Client(zctx, broker.endpoint).request(b"stream", [b"go"]) == [b"done"]
    assert broker_stats(broker.endpoint)["partials_dropped_v01"] == 3


def test_nearloop_client_against_a_plain_worker(
    broker: BrokerProc, zctx: zmq.Context[Any], workers: list[PlainWorker]
) -> None:
    start(workers, PlainWorker(zctx, broker.endpoint, b"echo", echo, version=1))
    with Client(broker.endpoint) as c:
        r = c.request("echo", {"k": [1, 2]})
    assert r.body == {"k": [1, 2]}  # the plain worker echoed our header back


def test_mmi_service_from_a_plain_client(
    broker: BrokerProc, zctx: zmq.Context[Any], workers: list[PlainWorker]
) -> None:
    start(workers, PlainWorker(zctx, broker.endpoint, b"echo", echo, version=2))
    wait_for_workers(broker.endpoint, "echo", 1)
    v1 = V1Client(zctx, broker.endpoint)
    assert v1.request(b"mmi.service", [b"echo"]) == [b"200"]
    assert v1.request(b"mmi.service", [b"nope"]) == [b"404"]
    assert v1.request(b"mmi.whatever", [b"x"]) == [b"501"]
    assert V2Client(zctx, broker.endpoint).request(b"mmi.service", [b"echo"]) == ([], [b"200"])


@pytest.mark.parametrize("client_version", [1, 2])
def test_plain_client_gets_an_error_reply_when_no_worker_comes(
    broker: BrokerProc, zctx: zmq.Context[Any], client_version: int
) -> None:
    if client_version == 1:
        body = V1Client(zctx, broker.endpoint).request(b"nobody", [b"x"])
    else:
        _partials, body = V2Client(zctx, broker.endpoint).request(b"nobody", [b"x"])
    (frame,) = body
    err = msgpack.unpackb(frame)
    assert err["kind"] == "error" and err["error"]["type"] == "no_worker"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("version", [1, 2])
def test_plain_worker_heartbeating_at_the_rfc_rate_is_not_dropped(
    stack: Stack, zctx: zmq.Context[Any], workers: list[PlainWorker], version: int
) -> None:
    """The reference code heartbeats every 2.5 s; the broker's own interval is 250 ms."""
    broker = stack.broker("ipc", "--heartbeat-ms", "100")
    w = start(workers, PlainWorker(zctx, broker.endpoint, b"slowbeat", echo, version=version))
    wait_for_workers(broker.endpoint, "slowbeat", 1)
    # Across 3 of its heartbeat intervals (30 of the broker's) it stays registered...
    deadline_beats = w.heartbeats_sent + 3
    from tests.conftest import wait_until

    wait_until(lambda: w.heartbeats_sent >= deadline_beats, 15, "three RFC-rate heartbeats")
    stats = broker_stats(broker.endpoint)
    assert stats["workers_expired"] == 0 and stats["services"]["slowbeat"]["workers"] == 1
    assert w.disconnects == 0 and w.heartbeats_received >= 3
    # ...and serves.
    assert V2Client(zctx, broker.endpoint).request(b"slowbeat", [b"x"]) == ([], [b"x"])


def test_silent_plain_worker_is_expired(stack: Stack, zctx: zmq.Context[Any]) -> None:
    """A worker that READYs and then says nothing is dropped after liveness x 2.5 s."""
    broker = stack.broker("ipc", "--liveness", "1")
    sock = zctx.socket(zmq.DEALER)
    sock.connect(broker.endpoint)
    sock.send_multipart([b"MDPW02", b"\x01", b"mute"])
    wait_for_workers(broker.endpoint, "mute", 1)
    wait_for_workers(broker.endpoint, "mute", 0, timeout=10)
    assert broker_stats(broker.endpoint)["workers_expired"] == 1
    sock.close()


def test_nearloop_clients_receive_partials(
    broker: BrokerProc, zctx: zmq.Context[Any], workers: list[PlainWorker]
) -> None:
    """A worker that streams: three PARTIALs, then the FINAL (each echoes our header)."""

    def stream(body: list[bytes]) -> list[list[bytes]]:
        return [body] * 4

    start(workers, PlainWorker(zctx, broker.endpoint, b"stream", stream, version=2))
    with Client(broker.endpoint) as c:
        pending = c.submit("stream", {"n": 1})
        final = pending.result()
    assert not final.partial and len(pending.partials) == 3
    assert all(m.partial and m.id == final.id for m in pending.partials)

    seen: list[Message] = []

    async def go() -> Message:
        async with AsyncClient(broker.endpoint) as ac:
            return await ac.request("stream", {"n": 2}, on_partial=seen.append)

    final = client.run(go())
    assert len(seen) == 3 and all(m.partial for m in seen) and final.body == {"n": 2}
