"""Client, AsyncClient and Worker through a real broker process, over ipc:// and tcp://.

The same tests run on the sync Client and on the AsyncClient (on uvloop): only the
``caller`` fixture differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest
import uvloop

from client import (
    AsyncClient,
    BrokerUnreachable,
    ClientClosed,
    Message,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    UnknownModel,
    WorkerError,
)
from client.wire import MAX_MESSAGE_BYTES, model_hash
from tests.callers import CLIENT_KINDS, Caller
from tests.conftest import BrokerProc, Stack, wait_for_workers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["ipc", "tcp"])
def broker(request: pytest.FixtureRequest, stack: Stack) -> BrokerProc:
    return stack.broker(request.param)


@pytest.fixture(params=CLIENT_KINDS)
def caller(request: pytest.FixtureRequest, broker: BrokerProc) -> Iterator[Caller]:
    c = Caller(broker.endpoint, request.param, timeout=10)
    yield c
    c.close()


def test_request_reply(stack: Stack, broker: BrokerProc, caller: Caller) -> None:
    stack.worker(broker.endpoint)
    r = caller.request("echo", {"x": 1, "s": "é"})
    assert r.body["echo"] == {"x": 1, "s": "é"}
    assert not r.partial and r.arrays == ()
    assert set(r.header.ts) >= {"client_send", "worker_recv", "worker_send"}


ARRAYS = [
    np.arange(7, dtype=np.float64),
    np.arange(12, dtype=np.int16).reshape(3, 4),
    np.array([[True, False]]),
    np.zeros((0, 5), dtype=np.uint8),
    np.array(3.5 + 1j, dtype=np.complex64),
    np.random.default_rng(1).integers(0, 255, size=(1024, 1024), dtype=np.uint8),  # 1 MiB
    np.random.default_rng(2).standard_normal((300, 500)).astype(">f4"),
]


def test_arrays_of_several_dtypes_and_shapes(
    stack: Stack, broker: BrokerProc, caller: Caller
) -> None:
    stack.worker(broker.endpoint)
    r = caller.request("echo", {"n": len(ARRAYS)}, *ARRAYS)
    assert len(r.arrays) == len(ARRAYS)
    for sent, got in zip(ARRAYS, r.arrays, strict=True):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)
    base = r.arrays[5]
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)  # a view over the received zmq frame: no copy


def test_pipelining_matches_every_reply(stack: Stack, broker: BrokerProc, caller: Caller) -> None:
    stack.worker(broker.endpoint, "echo", "--credit", "4")
    stack.worker(broker.endpoint, "echo", "--credit", "4")
    wait_for_workers(broker.endpoint, "echo", 2)
    replies = caller.many("echo", list(range(300)))
    assert [r.body["echo"] for r in replies] == list(range(300))
    assert len({r.body["pid"] for r in replies}) == 2  # credit spread the load over both


def test_handler_exception_is_an_error_reply_and_worker_goes_on(
    stack: Stack, broker: BrokerProc, caller: Caller
) -> None:
    stack.worker(broker.endpoint)
    with pytest.raises(WorkerError) as exc:
        caller.request("echo", {"op": "fail", "msg": "bad parameters"})
    assert "ValueError: bad parameters" in exc.value.message
    assert exc.value.traceback is not None and "nl_worker.py" in exc.value.traceback
    assert caller.request("echo", 5).body["echo"] == 5


def test_no_worker_gives_an_error_within_the_deadline(broker: BrokerProc, caller: Caller) -> None:
    # The broker's no_worker reply, not the caller's own RequestTimeout: it came first.
    with pytest.raises(ServiceUnavailable, match="no worker"):
        caller.request("nobody-home", 1, timeout=5.0)


def test_timeout_raises_and_the_late_reply_is_counted(
    stack: Stack, broker: BrokerProc, caller: Caller
) -> None:
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    with pytest.raises(RequestTimeout):
        caller.request("echo", {"op": "sleep", "s": 0.6}, timeout=0.2)
    # The next call reads the late reply on its way to its own.
    assert caller.request("echo", 1).body["echo"] == 1
    assert caller.late_replies == 1


def test_oversized_request_is_refused_before_sending(broker: BrokerProc, caller: Caller) -> None:
    too_big = np.zeros(MAX_MESSAGE_BYTES + 1, dtype=np.uint8)
    with pytest.raises(PayloadTooLarge):
        caller.request("echo", None, too_big)


def test_mmi_service(stack: Stack, broker: BrokerProc, caller: Caller) -> None:
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    assert caller.service_available("echo")
    assert not caller.service_available("nope")
    assert caller.broker_stats()["services"]["echo"]["workers"] == 1


def test_the_model_store_keeps_a_model_by_its_hash(broker: BrokerProc, caller: Caller) -> None:
    text = b"error(0.125) D0 L0\nerror(0.25) D0 D1\n"
    h = caller.put_model(text)
    assert h == model_hash(text)
    assert caller.fetch_model(h) == text
    with pytest.raises(UnknownModel, match="holds no model"):
        caller.fetch_model("0" * 64)


def test_receive_hands_each_reply_to_its_pending_request(
    stack: Stack, broker: BrokerProc, caller: Caller
) -> None:
    stack.worker(broker.endpoint, "echo", "--credit", "4")
    wait_for_workers(broker.endpoint, "echo", 1)
    assert not caller.receive(0.05)  # nothing in flight: it times out
    pending = [caller.submit("echo", i) for i in range(5)]
    deadline = time.monotonic() + 20
    while not all(p.done for p in pending) and time.monotonic() < deadline:
        caller.receive(1.0)
    assert [p.result().body["echo"] for p in pending] == list(range(5))
    assert caller.late_replies == 0


@pytest.mark.parametrize("client_kind", CLIENT_KINDS)
@pytest.mark.parametrize("call", ["broker_stats", "service_available", "put_model", "session"])
def test_a_call_the_broker_answers_says_when_no_broker_answered(
    stack: Stack, client_kind: str, call: str
) -> None:
    endpoint = stack.endpoint("ipc", "nobody-here")
    with Caller(endpoint, client_kind, timeout=0.2) as c:
        with pytest.raises(BrokerUnreachable) as info:
            if call == "broker_stats":
                c.broker_stats()
            elif call == "service_available":
                c.service_available("echo")
            elif call == "put_model":
                c.put_model(b"error(0.1) D0")
            else:
                c.open_session("echo")
        message = str(info.value)
        assert message == (
            f"no broker answered at {endpoint} within 0.2 s; "
            f"start one with: nearloop broker --bind {endpoint}"
        )
        assert isinstance(info.value, RequestTimeout) and info.value.endpoint == endpoint
        # A worker's service that times out may just be slow: that stays a plain timeout.
        with pytest.raises(RequestTimeout) as plain:
            c.request("echo", 1)
        assert not isinstance(plain.value, BrokerUnreachable)
        assert "no reply from service 'echo'" in str(plain.value)


def test_closing_an_async_client_fails_its_waiting_callers(
    stack: Stack, broker: BrokerProc
) -> None:
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)

    async def main() -> None:
        c = AsyncClient(broker.endpoint, timeout=30)
        waiting = asyncio.create_task(c.request("echo", {"op": "sleep", "s": 5}))
        asleep = asyncio.create_task(c.receive(30, spin=False))
        await asyncio.sleep(0.2)  # both are asleep on the loop by now, or still spinning
        await c.close()
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(waiting, 10)
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(asleep, 10)

    uvloop.run(main())


def test_async_partials_reach_on_partial_and_a_failing_callback_fails_its_call(
    stack: Stack, broker: BrokerProc
) -> None:
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    ticks = {"op": "ticks", "n": 3, "every_us": 2000}

    async def main() -> tuple[list[int], int, int]:
        async with AsyncClient(broker.endpoint, timeout=10) as c:
            seen: list[Message] = []
            final = await c.request("echo", ticks, on_partial=seen.append)
            assert final.body["ticks"] == 3

            def refuse(m: Message) -> None:
                raise KeyError(f"tick {m.body['tick']} refused")

            with pytest.raises(KeyError, match="tick 0 refused"):
                await c.request("echo", ticks, on_partial=refuse)
            # Its later PARTIALs and FINAL have no call any more: counted late, not lost.
            deadline = time.monotonic() + 10
            while c.late_replies < 3 and time.monotonic() < deadline:
                await c.receive(0.1)
            late = c.late_replies
            assert (await c.request("echo", ticks)).body["ticks"] == 3
            return [m.body["tick"] for m in seen], late, c.partials_ignored

    ticked, late, ignored = uvloop.run(main())
    assert ticked == [0, 1, 2]
    assert late == 3  # ticks 1 and 2, and the final
    assert ignored == 3  # the last call's, which had no on_partial
