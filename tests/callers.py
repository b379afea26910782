"""One blocking interface over :class:`client.Client` and :class:`client.AsyncClient`, so
that a test runs on both clients: decorated ``@both_clients``, it takes ``client_kind``
and builds its :class:`Caller` from it.

The async side runs each call to completion on the caller's own uvloop loop, so a test
reads the same whichever client it drives; everything it checks goes through the real
client (its waits, reader callback, sessions and streams).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import uvloop

from client import (
    AsyncClient,
    AsyncPendingReply,
    AsyncSession,
    AsyncStream,
    BlockResult,
    Client,
    Message,
    PendingReply,
    Session,
    Stream,
    StreamStats,
)
from client.wire.lanes import LaneMode

CLIENT_KINDS = ["sync", "async"]
"""The blocking Client and the AsyncClient."""

both_clients = pytest.mark.parametrize("client_kind", CLIENT_KINDS)
"""Run the test once on each client, its ``client_kind`` argument saying which."""

T = TypeVar("T")


class Caller:
    """A Client, or an AsyncClient and the loop it runs on, behind one blocking API."""

    def __init__(self, endpoint: str, kind: str, **options: Any) -> None:
        self.kind = kind
        self.sync: Client | None = None
        if kind == "sync":
            self.sync = Client(endpoint, **options)
        else:
            self.loop = uvloop.new_event_loop()
            self.aclient = AsyncClient(endpoint, **options)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine of the async client to completion."""
        return self.loop.run_until_complete(coro)

    def request(
        self, service: str, body: Any = None, *arrays: Any, timeout: float | None = None
    ) -> Message:
        if self.sync is not None:
            return self.sync.request(service, body, *arrays, timeout=timeout)
        return self.run(self.aclient.request(service, body, *arrays, timeout=timeout))

    def submit(
        self, service: str, body: Any = None, *arrays: Any, timeout: float | None = None
    ) -> Pending:
        if self.sync is not None:
            return Pending(self, self.sync.submit(service, body, *arrays, timeout=timeout))
        return Pending(self, self.aclient.submit(service, body, *arrays, timeout=timeout))

    def many(self, service: str, bodies: list[Any]) -> list[Message]:
        """Pipeline: every request in flight before the first reply is read."""
        if self.sync is not None:
            pend = [self.sync.submit(service, b) for b in bodies]
            return [p.result() for p in pend]

        async def go() -> list[Message]:
            return list(await asyncio.gather(*(self.aclient.request(service, b) for b in bodies)))

        return self.run(go())

    def receive(self, timeout: float) -> bool:
        if self.sync is not None:
            return self.sync.receive(timeout)
        return self.run(self.aclient.receive(timeout))

    def service_available(self, service: str, *, timeout: float | None = None) -> bool:
        if self.sync is not None:
            return self.sync.service_available(service, timeout=timeout)
        return self.run(self.aclient.service_available(service, timeout=timeout))

    def broker_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        if self.sync is not None:
            return self.sync.broker_stats(timeout=timeout)
        return self.run(self.aclient.broker_stats(timeout=timeout))

    def put_model(self, text: bytes, *, timeout: float | None = None) -> str:
        if self.sync is not None:
            return self.sync.put_model(text, timeout=timeout)
        return self.run(self.aclient.put_model(text, timeout=timeout))

    def fetch_model(self, h: str, *, timeout: float | None = None) -> bytes:
        if self.sync is not None:
            return self.sync.fetch_model(h, timeout=timeout)
        return self.run(self.aclient.fetch_model(h, timeout=timeout))

    def open_session(
        self, service: str, *, lane: LaneMode = "off", timeout: float | None = None
    ) -> CallerSession:
        """A session; through the broker unless ``lane`` says otherwise (the tests of
        the broker's own session rules need it)."""
        if self.sync is not None:
            return CallerSession(self, self.sync.open_session(service, lane=lane, timeout=timeout))
        opening = self.aclient.open_session(service, lane=lane, timeout=timeout)
        return CallerSession(self, self.run(opening))

    def session(self, session_id: int, service: str, worker: str) -> CallerSession:
        """A session object for an id this client may not own (to test the broker's checks)."""
        if self.sync is not None:
            return CallerSession(self, Session(self.sync, session_id, service, worker))
        return CallerSession(self, AsyncSession(self.aclient, session_id, service, worker))

    def stream(self, service: str, model: Any, **options: Any) -> CallerStream:
        if self.sync is not None:
            return CallerStream(self, Stream(self.sync, service, model, **options))
        return CallerStream(
            self, self.run(AsyncStream.open(self.aclient, service, model, **options))
        )

    @property
    def late_replies(self) -> int:
        return self.sync.late_replies if self.sync is not None else self.aclient.late_replies

    @property
    def spin_us(self) -> int:
        return self.sync.spin_us if self.sync is not None else self.aclient.spin_us

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        else:
            self.run(self.aclient.close())
            self.loop.close()

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Pending:
    """A PendingReply or an AsyncPendingReply."""

    def __init__(self, caller: Caller, call: PendingReply | AsyncPendingReply) -> None:
        self.caller = caller
        self.call = call

    @property
    def partials(self) -> list[Message]:
        return self.call.partials

    @property
    def done(self) -> bool:
        return self.call.done

    def result(self) -> Message:
        if isinstance(self.call, PendingReply):
            return self.call.result()
        return self.caller.run(self.call.result())


class CallerSession:
    """A Session or an AsyncSession."""

    def __init__(self, caller: Caller, session: Session | AsyncSession) -> None:
        self.caller = caller
        self.session = session

    @property
    def id(self) -> int:
        return self.session.id

    @property
    def service(self) -> str:
        return self.session.service

    @property
    def worker(self) -> str:
        return self.session.worker

    @property
    def closed(self) -> bool:
        return self.session.closed

    def submit(self, body: Any = None, *arrays: Any, timeout: float | None = None) -> Pending:
        return Pending(self.caller, self.session.submit(body, *arrays, timeout=timeout))

    def request(self, body: Any = None, *arrays: Any, timeout: float | None = None) -> Message:
        return self.submit(body, *arrays, timeout=timeout).result()

    def close(self) -> None:
        if isinstance(self.session, Session):
            self.session.close()
        else:
            self.caller.run(self.session.close())

    def __enter__(self) -> CallerSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CallerStream:
    """A Stream or an AsyncStream."""

    def __init__(self, caller: Caller, stream: Stream | AsyncStream) -> None:
        self.caller = caller
        self.stream = stream

    @property
    def stats(self) -> StreamStats:
        return self.stream.stats

    @property
    def backlog(self) -> int:
        return self.stream.backlog

    @property
    def model_hash(self) -> str:
        return self.stream.model_hash

    @model_hash.setter
    def model_hash(self, value: str) -> None:
        self.stream.model_hash = value

    def send(self, detections: npt.NDArray[np.uint8], *, timeout: float | None = None) -> int:
        if isinstance(self.stream, Stream):
            return self.stream.send(detections, timeout=timeout)
        return self.caller.run(self.stream.send(detections, timeout=timeout))

    def poll(self, timeout: float = 0.0) -> list[BlockResult]:
        if isinstance(self.stream, Stream):
            return self.stream.poll(timeout)
        return self.caller.run(self.stream.poll(timeout))

    def drain(self, timeout: float) -> list[BlockResult]:
        if isinstance(self.stream, Stream):
            return self.stream.drain(timeout)
        return self.caller.run(self.stream.drain(timeout))

    def switch_model(self, model: Any) -> str:
        if isinstance(self.stream, Stream):
            return self.stream.switch_model(model)
        return self.caller.run(self.stream.switch_model(model))

    @property
    def lanes(self) -> list[str]:
        return self.stream.lanes

    def close(self) -> None:
        if isinstance(self.stream, Stream):
            self.stream.close()
        else:
            self.caller.run(self.stream.close())

    def __enter__(self) -> CallerStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
