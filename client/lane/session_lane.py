"""A session's lane on the client side: :class:`SessionLane` sends the session's requests
over shared memory and hands each reply to its call, waiting by polling, then sleeping
on the lane's event (a blocking wait, or an asyncio one that sleeps in a thread)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy.typing as npt

from client.connection import TTL_SHARE, Call
from client.errors import RequestTimeout, remote_error
from client.lane.client_end import LIVENESS_CHECK_NS, LaneClient, WorkerGone
from client.lane.framing import LaneMessage
from client.lane.host import host_identity
from client.messages import Message
from client.wire import (
    ERR_SESSION_LOST,
    KIND_ERROR,
    KIND_REQUEST,
    ProtocolError,
    arrays_to_frames,
    check_body_size,
    encode_header,
    frames_to_arrays,
    parse_header,
)
from client.wire.transport import yield_cpu


class SessionLane:
    """The client's end of one session's lane, and the session's calls in flight on it.

    ``spin_ns``: a wait polls this long before it sleeps (the client's ``spin_us``).
    """

    def __init__(self, name: str, session: int, service: str, spin_ns: int) -> None:
        self.end = LaneClient(name, spin_ns)
        self.name = name
        self.session = session
        self.service = service
        self.calls: dict[int, Call] = {}
        self.malformed_replies = 0
        self.lost: str | None = None
        """Why the worker's end is gone; every request fails with SessionLost after."""
        self._next_check_ns = 0

    def send(self, call: Call, body: Any, arrays: Sequence[npt.NDArray[Any]]) -> None:
        """Send ``call``'s request (its id and timeout are set) over the lane; a lane
        whose worker has gone fails the call at once with SessionLost."""
        specs, inline, frames = arrays_to_frames(arrays)
        header = encode_header(
            id=call.id,
            kind=KIND_REQUEST,
            ts={"client_send": time.monotonic_ns()},
            ttl_ms=int(call.timeout * TTL_SHARE * 1000),
            arrays=specs,
            body=body,
            session=self.session,
            inline=inline,
        )
        msg = [header, *frames]
        if frames:
            check_body_size(msg)
        call._lane = self
        if self.lost is not None:
            call._on_final(self._lost_error())
            return
        self.end.send(call.id, msg)
        self.calls[call.id] = call

    def deliver(self) -> bool:
        """Hand every reply that has arrived to its call; True if any did."""
        got = self.end.poll()
        for rid, msg in got:
            self._deliver_one(rid, msg)
        return bool(got)

    def fail_if_worker_gone(self) -> bool:
        """With calls in flight, fail them with SessionLost if the worker's end has gone;
        True if it did (their errors were delivered).

        For callers that deliver without waiting on a call (``Client.receive``, awaiting
        a long request's PARTIALs), which never sleep on the lane, where :meth:`wait`
        looks. It looks at most every ``LIVENESS_CHECK_NS``: a look costs a few hundred µs.
        """
        if not self.calls or self.lost is not None:
            return False
        now = time.monotonic_ns()
        if now < self._next_check_ns:
            return False
        self._next_check_ns = now + LIVENESS_CHECK_NS
        return not self.check_worker()

    def _deliver_one(self, rid: int, msg: LaneMessage) -> None:
        received_ns = time.monotonic_ns()
        try:
            header = parse_header(msg.frames[0]) if msg.frames else None
            if header is None:
                raise ProtocolError("lane reply has no header")
            if header.kind == KIND_ERROR and header.error is not None:
                e = header.error
                outcome: Message | Exception = remote_error(
                    self.service, e.type, e.message, e.traceback
                )
            else:
                arrays = frames_to_arrays(header.arrays, msg.frames[1:], header.inline)
                # A lane joins two processes of one host: the worker's clock is ours.
                hosts = {"worker": host_identity()}
                outcome = Message(header, arrays, not msg.final, received_ns, hosts)
        except ProtocolError:
            self.malformed_replies += 1
            if msg.final:
                self.calls.pop(rid, None)
            return
        if not msg.final and isinstance(outcome, Message):
            call = self.calls.get(rid)
            if call is not None:
                call._on_partial(outcome)
            return
        done = self.calls.pop(rid, None)
        if done is not None:
            done._on_final(outcome)

    def check_worker(self) -> bool:
        """Look whether the worker's end is still there (a dead worker's resources are
        removed on the way); if it has gone, fail every call in flight with SessionLost.
        True while it is there. For a caller that waits on many lanes at once (a stream),
        which :meth:`deliver` alone never tells of a worker that died."""
        if self.lost is None:
            try:
                self.end.check_worker()
            except WorkerGone as exc:
                self._lose(str(exc))
        return self.lost is None

    def _lose(self, why: str) -> None:
        """The worker's end is gone: fail every call in flight with SessionLost."""
        self.lost = why
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call._on_final(self._lost_error())

    def _lost_error(self) -> Exception:
        return remote_error(
            self.service,
            ERR_SESSION_LOST,
            f"session {self.session}: {self.lost}; the session's state went with it: "
            "open a new session",
        )

    def _step(self, call: Call, spin_until_ns: int) -> int | None:
        """Poll once; None if the wait goes on polling, else when it may sleep until.
        Raises RequestTimeout at the call's deadline."""
        end = self.end
        t = time.monotonic_ns()
        if self.deliver() or call._outcome is not None:
            return None
        if t >= call.deadline_ns:
            self.calls.pop(call.id, None)
            raise RequestTimeout(self.service, call.id, call.timeout)
        if t < spin_until_ns or not end.may_sleep(t):
            return None
        # Events that came while polling are stale; one more look after clearing them
        # catches a reply sent in between, which might not have sent an event.
        end.drain_wakeups()
        if self.deliver() or call._outcome is not None:
            return None
        return call.deadline_ns

    def wait(self, call: Call) -> None:
        """Block until ``call`` is done (polling first); RequestTimeout at its deadline."""
        spin_until = time.monotonic_ns() + self.end.spin_ns
        while call._outcome is None:
            until = self._step(call, spin_until)
            if until is None:
                yield_cpu()  # the worker may share this CPU: let it run first
            else:
                self._sleep(until)

    async def wait_async(self, call: Call) -> None:
        """As :meth:`wait`, for asyncio: polls yield to the loop, and the sleep happens
        in a worker thread (iceoryx2 releases the GIL while it waits)."""
        loop = asyncio.get_running_loop()
        spin_until = time.monotonic_ns() + self.end.spin_ns
        while call._outcome is None:
            until = self._step(call, spin_until)
            if until is None:
                await asyncio.sleep(0)
                continue
            try:
                await loop.run_in_executor(None, self.end.sleep, until)
            except WorkerGone as exc:
                self._lose(str(exc))

    def _sleep(self, until_ns: int) -> None:
        try:
            self.end.sleep(until_ns)
        except WorkerGone as exc:
            self._lose(str(exc))

    def close(self) -> None:
        """Drop the client's end: the worker frees the lane. Calls in flight are abandoned."""
        self.calls.clear()
        self.end.close()

    def __repr__(self) -> str:
        state = f"lost: {self.lost}" if self.lost else f"{len(self.calls)} in flight"
        return f"SessionLane({self.name!r}, session={self.session}, {state})"
