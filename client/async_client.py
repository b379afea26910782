"""The asyncio :class:`AsyncClient`, its :class:`AsyncPendingReply` and
:class:`AsyncSession`: the :class:`~client.connection.Connection` core, waited on with
asyncio; and :func:`run`, which prefers uvloop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

import numpy.typing as npt
import zmq

from client.connection import (
    DEFAULT_SPIN_US,
    LANE_RECEIVE_SLICE_S,
    Call,
    ClientBase,
    Connection,
    broker_stats_of,
    model_text_of,
    service_status,
)
from client.errors import LaneUnavailable, NearloopError
from client.messages import Message
from client.session import (
    CLOSE_SERVICE,
    OPEN_SERVICE,
    SESSION_SERVICE,
    LanePlan,
    SessionState,
    open_body,
    read_open_reply,
)
from client.wire.curve import CurveSpec
from client.wire.lanes import LaneMode
from client.wire.transport import poll, poll_items, recv_frames, yield_cpu

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class AsyncPendingReply(Call):
    """A request of an :class:`AsyncClient` in flight. ``await`` :meth:`result` for its
    final reply.

    ``partials`` holds the PARTIAL replies received so far, unless ``on_partial`` is set:
    then each is passed to it instead, and if it raises, the call fails with that error.
    ``on_done`` is called when the final reply arrives. Await a reply from one task.
    """

    __slots__ = ("_future", "on_partial")
    _client: AsyncClient

    def __init__(self, client: AsyncClient, rid: int, service: str, timeout: float) -> None:
        super().__init__(client, rid, service, timeout)
        self.on_partial: Callable[[Message], None] | None = None
        self._future: asyncio.Future[None] | None = None  # made only if a wait must sleep

    async def result(self) -> Message:
        """The final reply. Raises RemoteError, or RequestTimeout at the request's deadline."""
        if self._outcome is None:
            await self._client._wait(self)
        return self._take()

    def _on_partial(self, message: Message) -> None:
        if self.on_partial is None:
            Call._on_partial(self, message)
            return
        try:
            self.on_partial(message)
        except Exception as exc:  # the caller's callback failed: its call fails
            self._client._conn.forget(self)
            self._on_final(exc)

    def _on_final(self, outcome: Message | Exception) -> None:
        Call._on_final(self, outcome)  # not super(): it would build an object per reply
        if self._future is not None:
            _wake(self._future)


class AsyncClient(ClientBase[AsyncPendingReply]):
    """An asyncio nearloop client, on the same core as :class:`~client.Client`.

    It sends on the socket directly (a non-blocking send needs no event loop) and reads
    replies from a reader callback on the socket's file descriptor, so a reply costs one
    loop wake-up and no task switch beyond waking its caller.

    A caller waiting on a reply first polls for it for up to ``spin_us`` microseconds, as
    :class:`~client.Client` does, but cooperatively: between polls it yields to the event
    loop, which runs every other ready task and polls its own I/O without sleeping, and
    then yields the CPU. ``spin_us=0`` turns it off.

    ``curve=(client_cert, broker_public_key)`` talks CURVE to a broker's tcp endpoint, as
    :class:`~client.Client` does.

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
        curve: CurveSpec | None = None,
    ) -> None:
        super().__init__(
            Connection(
                endpoint,
                AsyncPendingReply,
                timeout=timeout,
                spin_us=spin_us,
                context=context,
                curve=curve,
            )
        )
        sock = self._conn.socket()
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._link_fd = cast(int, self._conn.watch.monitor.getsockopt(zmq.FD))
        self._items = poll_items(sock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._received = 0  # messages taken off the socket, for receive()
        self._receivers: list[asyncio.Future[None]] = []
        self.partials_ignored = 0
        """PARTIAL replies to :meth:`request` calls made without ``on_partial``."""
        self._ignore_partial = self._count_ignored_partial  # bound once, not per request

    async def request(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
        on_partial: Callable[[Message], None] | None = None,
        idempotent: bool = False,
    ) -> Message:
        """Send a request and await its final reply. Raises RemoteError or RequestTimeout,
        or BrokerLost (``idempotent`` as for :meth:`submit`).

        ``on_partial`` is called with each PARTIAL reply (MDP/0.2) that comes first; without
        it they are counted in ``partials_ignored``.
        """
        call = self._submit(service, body, arrays, timeout, idempotent=idempotent)
        call.on_partial = self._ignore_partial if on_partial is None else on_partial
        if call._outcome is None:
            await self._wait(call)
        return call._take()

    def _count_ignored_partial(self, _message: Message) -> None:
        self.partials_ignored += 1

    def submit(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> AsyncPendingReply:
        """Send a request without waiting; ``await`` its :meth:`~AsyncPendingReply.result`.

        As :meth:`Client.submit <client.Client.submit>`: large arrays go without a copy,
        every request submitted is retired by its result or by ``abandon()``, and one in
        flight when the connection to the broker drops fails with
        :class:`~client.errors.BrokerLost` unless ``idempotent`` (then it is sent again).
        """
        return self._submit(service, body, arrays, timeout, idempotent=idempotent)

    def _submit(
        self,
        service: str,
        body: Any,
        arrays: tuple[npt.NDArray[Any], ...],
        timeout: float | None,
        session: int | None = None,
        *,
        idempotent: bool = False,
    ) -> AsyncPendingReply:
        call = self._conn.submit(self, service, body, arrays, timeout, session, idempotent)
        # ZMQ_FD is edge-triggered, and a send can consume the read edge of a reply that is
        # already here. The caller may not wait here, so if one is, have the loop read it.
        loop = self._loop
        if loop is not None and poll(self._items, 0):
            loop.call_soon(self._on_readable)
        return call

    async def open_session(
        self, service: str, *, lane: LaneMode = "auto", timeout: float | None = None
    ) -> AsyncSession:
        """Open an :class:`AsyncSession`: the broker pins it to one worker of ``service``,
        and every request sent through it goes to that worker; ``lane`` as for
        :meth:`Client.open_session <client.Client.open_session>`."""
        return await AsyncSession.open(self, service, lane=lane, timeout=timeout)

    async def service_available(self, service: str, *, timeout: float | None = None) -> bool:
        """``mmi.service`` (RFC 8): does ``service`` have workers?"""
        call = self._conn.submit_service_query(self, service, timeout)
        return service_status(await call.result())

    async def broker_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The broker's counters (``mmi.stats``)."""
        return broker_stats_of(await self._conn.submit_stats_query(self, timeout).result())

    async def put_model(self, text: bytes, *, timeout: float | None = None) -> str:
        """Store a noise model in the broker (``nl.model.put``); returns its content hash."""
        h, call = self._conn.submit_model_put(self, text, timeout)
        await call.result()
        return h

    async def fetch_model(self, h: str, *, timeout: float | None = None) -> bytes:
        """The model text the broker holds under hash ``h`` (``nl.model.get``).

        Raises :class:`~client.errors.UnknownModel` if it holds none.
        """
        return model_text_of(await self._conn.submit_model_get(self, h, timeout).result())

    async def receive(self, timeout: float, *, spin: bool = True) -> bool:
        """Wait up to ``timeout`` seconds (0: do not wait) for the next reply to any
        request, and hand it to its :class:`AsyncPendingReply`. True if a reply arrived.
        With ``spin``, the first ``spin_us`` of the wait polls cooperatively, as
        :meth:`request` does; without, the task sleeps at once. Other tasks' waits
        receive too: replies reach their calls whoever reads them. Replies on the
        client's sessions' lanes count too."""
        conn = self._conn
        if not conn.lanes:
            return await self._receive_socket(timeout, spin)
        until_ns = time.monotonic_ns() + int(timeout * 1e9)
        while True:
            if conn.deliver_lanes():
                return True
            left_s = (until_ns - time.monotonic_ns()) / 1e9
            if await self._receive_socket(max(0.0, min(left_s, LANE_RECEIVE_SLICE_S)), spin):
                return True
            spin = False
            if time.monotonic_ns() >= until_ns:
                return conn.deliver_lanes()

    async def _receive_socket(self, timeout: float, spin: bool) -> bool:
        until_ns = time.monotonic_ns() + int(timeout * 1e9)
        self._conn.socket()
        loop = self._loop or self._attach()
        seen = self._received
        self._on_readable()
        self._on_link()
        if self._received != seen:
            return True
        if spin and self._conn.spin_ns:
            await self._spin(None, min(until_ns, time.monotonic_ns() + self._conn.spin_ns))
            if self._received != seen:
                return True
            self._conn.socket()  # closed while spinning: ClientClosed
        left_ns = until_ns - time.monotonic_ns()
        if left_ns <= 0:
            return False
        fut: asyncio.Future[None] = loop.create_future()
        self._receivers.append(fut)
        timer = loop.call_later(left_ns / 1e9, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._receivers.remove(fut)
        self._conn.socket()  # raises ClientClosed if the client was closed meanwhile
        return self._received != seen

    async def _wait(self, call: AsyncPendingReply) -> None:
        """Receive until ``call`` is done; raise RequestTimeout at its deadline."""
        if call._lane is not None:
            await call._lane.wait_async(call)
            return
        conn = self._conn
        conn.socket()
        loop = self._loop or self._attach()
        if conn.spin_ns:
            until_ns = min(call.deadline_ns, time.monotonic_ns() + conn.spin_ns)
            await self._spin(call, until_ns)
            if call._outcome is not None:
                return
        # ZMQ_FD is edge-triggered: a send or a poll can consume the read edge, so look
        # once more before sleeping on it (and on the monitor's).
        self._on_readable()
        self._on_link()
        if call._outcome is not None:
            return
        conn.socket()  # closed while spinning: ClientClosed
        conn.look_at_link()  # no drop yet: the call went on the connection that is up
        if call._outcome is not None:
            return
        left_ns = call.deadline_ns - time.monotonic_ns()
        if left_ns > 0:
            fut = call._future = loop.create_future()
            timer = loop.call_later(left_ns / 1e9, _wake, fut)
            try:
                await fut
            finally:
                timer.cancel()
                call._future = None
            if call._outcome is not None:
                return
        conn.socket()  # raises ClientClosed if the client was closed meanwhile
        raise conn.timed_out(call)

    async def _spin(self, call: AsyncPendingReply | None, until_ns: int) -> None:
        """Poll for replies, yielding to the loop and then the CPU between polls, until
        ``call`` is done (without a call: until any reply arrives) or ``until_ns``."""
        items = self._items
        seen = self._received
        while (self._received == seen) if call is None else (call._outcome is None):
            if self._conn.sock is None:
                return  # closed meanwhile
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
        loop.add_reader(self._link_fd, self._on_link)
        self._loop = loop
        return loop

    def _on_link(self) -> None:
        """The socket's monitor has news: on a drop, the calls in flight through the broker
        fail with BrokerLost (their waiters wake) or go again."""
        conn = self._conn
        if conn.sock is not None and conn.watch.pending() and conn.check_link():
            for fut in self._receivers:
                _wake(fut)

    def _on_readable(self) -> None:
        conn = self._conn
        sock = conn.sock
        if sock is None:
            return
        items = self._items
        n = 0
        while poll(items, 0):
            if conn.deliver(recv_frames(sock, 0, 4)):
                n += 1
        if n:
            self._received += n
            for fut in self._receivers:
                _wake(fut)

    async def close(self) -> None:
        """Close the socket; callers still waiting get ClientClosed."""
        conn = self._conn
        if conn.sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_reader(self._link_fd)
        conn.close()
        for call in conn.calls.values():
            if call._future is not None:
                _wake(call._future)
        for fut in self._receivers:
            _wake(fut)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSession(SessionState):
    """A session of an :class:`AsyncClient`: see :class:`~client.session.SessionState`.

    >>> async with await client.open_session("qpu") as s:               # doctest: +SKIP
    ...     await s.request({"op": "describe", "circuit": cid})
    """

    def __init__(self, client: AsyncClient, session_id: int, service: str, worker: str) -> None:
        super().__init__(session_id, service, worker)
        self.client = client

    @classmethod
    async def open(
        cls,
        client: AsyncClient,
        service: str,
        *,
        lane: LaneMode = "auto",
        timeout: float | None = None,
    ) -> AsyncSession:
        """Ask the broker for a session on ``service`` (see :meth:`AsyncClient.open_session`);
        raises ServiceUnavailable if the service has no worker, QueueFull if the broker
        holds its maximum of sessions."""
        plan = LanePlan.of(lane)
        msg = await client.request(OPEN_SERVICE, open_body(service, plan.ask), timeout=timeout)
        reply = read_open_reply(msg)
        session = cls(client, reply.session, reply.service, reply.worker)
        session._watch_link(client._conn)
        try:
            session._take_lane(plan, reply, client._conn.spin_ns, client._conn.lanes)
        except LaneUnavailable:
            await session.close(timeout=timeout)
            raise
        return session

    def submit(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> AsyncPendingReply:
        """Send a request to the pinned worker without waiting; see :meth:`AsyncClient.submit`."""
        self._check_open()
        if self._lane is not None:
            call = self.client._conn.new_call(self.client, self.service, timeout)
            self._lane.send(call, body, arrays)
            return call
        return self.client._submit(SESSION_SERVICE, body, arrays, timeout, self.id)

    async def request(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> Message:
        """Send a request to the pinned worker and await its final reply."""
        return await self.submit(body, *arrays, timeout=timeout).result()

    async def close(self, *, timeout: float | None = None) -> None:
        """Tell the broker to forget the session. Idempotent; the worker is not told, so
        end any long request of the session first."""
        if self._close_lost():
            return
        body = self._close_body()
        if body is not None:
            try:
                await self.client.request(CLOSE_SERVICE, body, timeout=timeout)
            finally:
                self._drop_lane()

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except NearloopError as failure:
            self._log_close_failure(exc, failure)
