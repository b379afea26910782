"""Spin-waits. A waiting caller polls for its reply for up to ``spin_us`` before it sleeps
in the kernel; the spin must never outlast a request's deadline, never lose or misroute a
reply, and, in the AsyncClient, never keep other tasks from running. The broker's spin
(whose decisions tests/test_spin_policy.py checks) must never stall its timers or lose a
message."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
import uvloop
import zmq

from broker.config import MAX_BROKER_SPIN_US, BrokerConfig
from client import AsyncClient, Client, RequestTimeout, ServiceUnavailable
from client.wire.transport import recv_by, spin_recv
from tests.conftest import Stack, run_module, wait_for_workers

pytestmark = pytest.mark.timeout(60)

LONG_SPIN_US = 30_000_000
SHORTER_THAN_LONG_SPIN_S = 20
"""The timeout of a test whose spin of LONG_SPIN_US must end early, at a deadline."""
"""30 s: far past every deadline below, so only the deadline can end these spins."""


@pytest.fixture
def echo_endpoint(stack: Stack) -> str:
    broker = stack.broker("ipc")
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    return broker.endpoint


def inproc_pair(zctx: zmq.Context[Any], name: str) -> tuple[zmq.Socket[Any], zmq.Socket[Any]]:
    """Two connected PAIR sockets: send on the first, receive on the second."""
    a, b = zctx.socket(zmq.PAIR), zctx.socket(zmq.PAIR)
    a.bind(f"inproc://{name}")
    b.connect(f"inproc://{name}")
    return a, b


def test_spin_recv_returns_a_waiting_message_and_none_once_time_is_up(
    zctx: zmq.Context[Any],
) -> None:
    a, b = inproc_pair(zctx, "spin")
    assert spin_recv(b, time.monotonic_ns() + 20_000_000, 1) is None
    a.send_multipart([b"head", b"x" * 100])
    frames = spin_recv(b, time.monotonic_ns() + 5_000_000_000, 1)
    assert frames is not None and frames[0] == b"head" and bytes(frames[1]) == b"x" * 100


@pytest.mark.timeout(SHORTER_THAN_LONG_SPIN_S)
@pytest.mark.parametrize("spin_ns", [0, 10_000_000, LONG_SPIN_US * 1000])
def test_recv_by_spins_then_sleeps_and_ends_at_its_deadline(
    zctx: zmq.Context[Any], spin_ns: int
) -> None:
    a, b = inproc_pair(zctx, f"recv-by-{spin_ns}")
    # A 30 s spin that ignored its 50 ms deadline would outlast this test's timeout.
    assert recv_by(b, time.monotonic_ns() + 50_000_000, spin_ns, 1) is None
    a.send_multipart([b"head", b"y" * 10])
    frames = recv_by(b, time.monotonic_ns() + 5_000_000_000, spin_ns, 1)
    assert frames is not None and frames[0] == b"head" and bytes(frames[1]) == b"y" * 10


@pytest.mark.timeout(SHORTER_THAN_LONG_SPIN_S)
@pytest.mark.parametrize("spin", [True, False])
def test_client_receive_spins_within_its_timeout(echo_endpoint: str, spin: bool) -> None:
    with Client(echo_endpoint, timeout=10, spin_us=LONG_SPIN_US) as c:
        assert not c.receive(0.1, spin=spin)  # nothing in flight: times out, not spins 30 s
        pending = c.submit("echo", 7)
        deadline = time.monotonic() + 10
        while not pending.done and time.monotonic() < deadline:
            c.receive(1.0, spin=spin)
        assert pending.result().body["echo"] == 7


@pytest.mark.parametrize("spin_us", [-1, 1.5, True])
def test_spin_us_must_be_an_integer_of_zero_or_more(spin_us: Any) -> None:
    with pytest.raises(ValueError, match="spin_us"):
        Client("inproc://unused", spin_us=spin_us)
    with pytest.raises(ValueError, match="spin_us"):
        AsyncClient("inproc://unused", spin_us=spin_us)


@pytest.mark.parametrize("spin_us", [0, 300, LONG_SPIN_US])
def test_client_gets_every_reply_whatever_it_spins(echo_endpoint: str, spin_us: int) -> None:
    x = np.arange(1000, dtype=np.float64)
    with Client(echo_endpoint, timeout=10, spin_us=spin_us) as c:
        for i in range(50):
            reply = c.request("echo", i, x)
            assert reply.body["echo"] == i
            np.testing.assert_array_equal(reply.arrays[0], x)
        pending = [c.submit("echo", i) for i in range(20)]
        assert [p.result().body["echo"] for p in pending] == list(range(20))


@pytest.mark.timeout(SHORTER_THAN_LONG_SPIN_S)
def test_client_spin_ends_at_the_request_deadline(echo_endpoint: str) -> None:
    with Client(echo_endpoint, timeout=10, spin_us=LONG_SPIN_US) as c:
        with pytest.raises(RequestTimeout):  # the spin alone would run 30 s
            c.request("echo", {"op": "sleep", "s": 0.6}, timeout=0.2)
        assert c.request("echo", 1).body["echo"] == 1
        assert c.late_replies == 1


@pytest.mark.timeout(SHORTER_THAN_LONG_SPIN_S)
def test_async_client_spin_ends_at_the_deadline_and_lets_other_tasks_run(
    echo_endpoint: str,
) -> None:
    async def main() -> tuple[int, list[int]]:
        async with AsyncClient(echo_endpoint, timeout=10, spin_us=LONG_SPIN_US) as c:
            ticks = 0
            done = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    await asyncio.sleep(0.01)
                    ticks += 1

            tick_task = asyncio.create_task(ticker())
            with pytest.raises(RequestTimeout):  # the spin alone would run 30 s
                await c.request("echo", {"op": "sleep", "s": 0.6}, timeout=0.3)
            # Two spinning callers at once: each reply reaches its own caller.
            replies = await asyncio.gather(c.request("echo", 1), c.request("echo", 2))
            done.set()
            await tick_task
            return ticks, [r.body["echo"] for r in replies]

    ticks, echoed = uvloop.run(main())
    assert echoed == [1, 2]
    # 0.3 s of spinning with a 10 ms ticker beside it: a spin that held the loop would
    # leave the ticker at zero or one.
    assert ticks >= 5


@pytest.mark.parametrize("spin_us", [-1, MAX_BROKER_SPIN_US + 1])
def test_broker_refuses_a_spin_out_of_range(spin_us: int) -> None:
    with pytest.raises(ValueError, match="spin_us"):
        BrokerConfig(endpoints=("inproc://unused",), spin_us=spin_us)
    done = run_module("broker", "--bind", "inproc://unused", "--spin-us", str(spin_us))
    assert done.returncode == 2 and "spin_us" in done.stderr


@pytest.mark.parametrize("spin_us", [0, MAX_BROKER_SPIN_US])
def test_broker_serves_a_tight_loop_and_keeps_its_timers_whatever_it_spins(
    stack: Stack, spin_us: int
) -> None:
    broker = stack.broker("ipc", "--spin-us", str(spin_us))
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    x = np.arange(256, dtype=np.int32)
    with Client(broker.endpoint, timeout=10, spin_us=0) as c:
        for i in range(300):  # close together: the broker's spin turns on, if it has one
            reply = c.request("echo", i, x)
            assert reply.body["echo"] == i
            np.testing.assert_array_equal(reply.arrays[0], x)
        # A request no worker takes must still expire on the broker's timer: its
        # no_worker reply comes before the client's own timeout would.
        with pytest.raises(ServiceUnavailable, match="no worker"):
            c.request("nobody-home", 1, timeout=5.0)
        assert c.request("echo", "after").body["echo"] == "after"
