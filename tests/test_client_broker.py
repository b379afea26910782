"""Client, AsyncClient and Worker through a real broker process, over ipc:// and tcp://.

The same tests run on the sync Client and on the AsyncClient (on uvloop): only the
``caller`` fixture differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from client import (
    AsyncClient,
    Client,
    Message,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    WorkerError,
)
from client.wire import MAX_MESSAGE_BYTES
from tests.conftest import BrokerProc, Stack, wait_for_workers

pytestmark = pytest.mark.timeout(60)


class Caller:
    """One interface over Client and AsyncClient, so each test runs on both."""

    def __init__(self, endpoint: str, kind: str) -> None:
        self.kind = kind
        if kind == "sync":
            self.sync: Client | None = Client(endpoint, timeout=10)
        else:
            self.sync = None
            import uvloop

            self.loop = uvloop.new_event_loop()
            self.aclient = AsyncClient(endpoint, timeout=10)

    def request(
        self, service: str, body: Any = None, *arrays: Any, timeout: float | None = None
    ) -> Message:
        if self.sync is not None:
            return self.sync.request(service, body, *arrays, timeout=timeout)
        return self.loop.run_until_complete(
            self.aclient.request(service, body, *arrays, timeout=timeout)
        )

    def many(self, service: str, bodies: list[Any]) -> list[Message]:
        """Pipeline: every request in flight before the first reply is read."""
        if self.sync is not None:
            pend = [self.sync.submit(service, b) for b in bodies]
            return [p.result() for p in pend]

        async def go() -> list[Message]:
            return list(await asyncio.gather(*(self.aclient.request(service, b) for b in bodies)))

        return self.loop.run_until_complete(go())

    @property
    def late_replies(self) -> int:
        return self.sync.late_replies if self.sync is not None else self.aclient.late_replies

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        else:
            self.loop.run_until_complete(self.aclient.close())
            self.loop.close()


@pytest.fixture(params=["ipc", "tcp"])
def broker(request: pytest.FixtureRequest, stack: Stack) -> BrokerProc:
    return stack.broker(request.param)


@pytest.fixture(params=["sync", "async"])
def caller(request: pytest.FixtureRequest, broker: BrokerProc) -> Iterator[Caller]:
    c = Caller(broker.endpoint, request.param)
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
    t0 = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no worker"):
        caller.request("nobody-home", 1, timeout=1.0)
    assert time.monotonic() - t0 < 1.0


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


def test_mmi_service(stack: Stack, broker: BrokerProc) -> None:
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint) as c:
        assert c.service_available("echo")
        assert not c.service_available("nope")

    async def go() -> bool:
        async with AsyncClient(broker.endpoint) as ac:
            return await ac.service_available("echo")

    import client

    assert client.run(go())
