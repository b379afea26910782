"""The asyncio :class:`AsyncClient`, and :func:`run`, which prefers uvloop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import msgpack
import numpy.typing as npt
import zmq

from client.errors import ClientClosed, ProtocolError, RemoteError, RequestTimeout
from client.messages import Message
from client.request_core import DEFAULT_SPIN_US, RequestCore
from client.wire import MMI_OK, MMI_SERVICE, MMI_STATS, Frame
from client.wire.transport import (
    connect_dealer,
    poll,
    poll_items,
    recv_frames,
    send_frames,
    yield_cpu,
)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


class AsyncClient:
    """An asyncio nearloop client, sharing its core with :class:`~client.Client`.

    It sends on the socket directly (a non-blocking send needs no event loop) and reads
    replies from a reader callback on the socket's file descriptor, so a reply costs one
    loop wake-up and no task switch beyond resolving the caller's future.

    A caller waiting on a reply first polls for it for up to ``spin_us`` microseconds, as
    :class:`~client.Client` does, but cooperatively: between polls it yields to the event
    loop, which runs every other ready task and polls its own I/O without sleeping, and
    then yields the CPU. ``spin_us=0`` turns it off.

    >>> async def main():                                               # doctest: +SKIP
    ...     async with AsyncClient("ipc:///tmp/nl.sock") as c:
    ...         return (await c.request("echo", {"x": 1})).body
    >>> run(main())                                                     # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 5.0,
        spin_us: int = DEFAULT_SPIN_US,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._core = RequestCore(timeout, spin_us)
        self._context: zmq.Context[Any] = context or zmq.Context.instance()
        sock = connect_dealer(self._context, endpoint, stable_identity=True)
        self._sock: zmq.Socket[bytes] | None = sock
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._items = poll_items(sock)
        self._futures: dict[
            int, tuple[asyncio.Future[Message], Callable[[Message], None] | None]
        ] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.malformed_replies = 0
        self.partials_ignored = 0

    @property
    def late_replies(self) -> int:
        """Replies that arrived after their caller had timed out, and were dropped."""
        return self._core.late_replies

    async def request(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
        on_partial: Callable[[Message], None] | None = None,
    ) -> Message:
        """Send a request and await its final reply. Raises RemoteError or RequestTimeout.

        ``on_partial`` is called with each PARTIAL reply (MDP/0.2) that comes first; without
        it they are counted in ``partials_ignored``.
        """
        t = self._core.timeout_of(timeout)
        rid, frames = self._core.build(service, body, arrays, t)
        return await self._call(service, rid, frames, t, on_partial)

    async def service_available(self, service: str, *, timeout: float | None = None) -> bool:
        """``mmi.service`` (RFC 8): does ``service`` have workers?"""
        rid, frames = self._core.build_mmi(MMI_SERVICE.decode(), service.encode())
        reply = await self._call(MMI_SERVICE.decode(), rid, frames, self._core.timeout_of(timeout))
        return bool(reply.body[0] == MMI_OK)

    async def broker_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The broker's counters (``mmi.stats``)."""
        rid, frames = self._core.build_mmi(MMI_STATS.decode(), b"")
        reply = await self._call(MMI_STATS.decode(), rid, frames, self._core.timeout_of(timeout))
        stats: dict[str, Any] = msgpack.unpackb(reply.body[1])
        return stats

    async def _call(
        self,
        service: str,
        rid: int,
        frames: list[Frame],
        timeout: float,
        on_partial: Callable[[Message], None] | None = None,
    ) -> Message:
        sock = self._socket()
        loop = self._loop
        if loop is None:
            loop = self._attach()
        fut: asyncio.Future[Message] = loop.create_future()
        self._futures[rid] = (fut, on_partial)
        timer = loop.call_later(timeout, self._expire, rid, service, timeout)
        try:
            send_frames(sock, frames)
            if self._core.spin_ns:
                await self._spin(fut, time.monotonic_ns() + self._core.spin_ns)
            # ZMQ_FD is edge-triggered: a send or a poll can consume the read edge, so look
            # once now.
            if not fut.done() and poll(self._items, 0):
                loop.call_soon(self._on_readable)
            return await fut
        finally:
            timer.cancel()
            self._futures.pop(rid, None)

    async def _spin(self, fut: asyncio.Future[Message], until_ns: int) -> None:
        items = self._items
        while not fut.done():
            if poll(items, 0):
                self._on_readable()
                continue
            if time.monotonic_ns() >= until_ns:
                return
            await asyncio.sleep(0)
            yield_cpu()

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        self._loop = loop
        return loop

    def _expire(self, rid: int, service: str, timeout: float) -> None:
        entry = self._futures.get(rid)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(RequestTimeout(service, rid, timeout))

    def _on_readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while poll(self._items, 0):
            frames = recv_frames(sock, 0, 4)
            try:
                rid, outcome = self._core.decode(frames)
            except ProtocolError:
                self.malformed_replies += 1
                continue
            entry = self._futures.get(rid)
            if entry is None or entry[0].done():
                self._core.late_replies += 1
            elif isinstance(outcome, RemoteError):
                entry[0].set_exception(outcome)
            elif outcome.partial:
                if entry[1] is None:
                    self.partials_ignored += 1
                    continue
                try:
                    entry[1](outcome)
                except Exception as exc:  # the caller's callback failed: its call fails
                    entry[0].set_exception(exc)
            else:
                entry[0].set_result(outcome)

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise ClientClosed(f"client for {self.endpoint} is closed")
        return self._sock

    async def close(self) -> None:
        """Close the socket; callers still waiting get ClientClosed."""
        sock = self._sock
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        for fut, _ in self._futures.values():
            if not fut.done():
                fut.set_exception(ClientClosed(f"client for {self.endpoint} closed"))
        self._sock = None
        sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"{len(self._futures)} in flight"
        return f"AsyncClient({self.endpoint!r}, {state})"
