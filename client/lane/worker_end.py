"""The worker's end of a lane: :class:`LaneServer`, one per session the broker gave a lane.

The worker creates the lane when the broker asks (PROTOCOL.md §3.10), then serves the
session's requests from it, beside its ZeroMQ socket. It wakes a client that sleeps, and
frees the lane when the client closes it or dies.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from client.lane.framing import pack, unpack
from client.lane.iox import (
    INITIAL_SLICE_BYTES,
    MAX_RESPONSES_BUFFERED,
    iox,
    lane_services,
    peer_dead,
)
from client.wire import Frame

ATTACH_TIMEOUT_NS: Final = 30 * 1_000_000_000
"""A lane whose client has not attached this long after it was made is freed."""
MAX_BACKLOG: Final = 4096
"""Replies a worker holds for a client that reads none of them; past this the lane is
taken to be broken and freed (its client's calls fail with SessionLost)."""
WAKE_MARGIN_NS: Final = 20_000
"""A peer said it polls until time t; a message sent later than t minus this margin wakes
it with an event, in case it has just gone to sleep."""


class LaneRequest(NamedTuple):
    """One request read off a lane: its body frames (header, arrays), copied out of
    shared memory, and what the reply needs."""

    lane: LaneServer
    active: Any
    """The iceoryx2 ``ActiveRequest``: the replies go back on it."""
    body: list[memoryview]
    client_awake_until_ns: int


class LaneServer:
    """The worker's end of lane ``name``, made for session ``session``."""

    def __init__(self, name: str, session: int) -> None:
        iceoryx2 = iox()
        self.name = name
        self.session = session
        self.services = lane_services(name, create=True)
        self.server = (
            self.services.calls.server_builder()
            .initial_max_slice_len(INITIAL_SLICE_BYTES)
            .allocation_strategy(iceoryx2.AllocationStrategy.PowerOfTwo)
            .backpressure_strategy(iceoryx2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self.listener = self.services.wake_worker.listener_builder().create()
        self.notifier = self.services.wake_client.notifier_builder().create()
        self.attached = False
        """True once the client has opened its end."""
        self.created_ns = time.monotonic_ns()
        self.served = 0
        self.closed = False
        # Replies sent and replies the client says it has read: never more than
        # MAX_RESPONSES_BUFFERED apart, so that iceoryx2's send never waits for a reader
        # (it would hold the worker, heartbeats and all). The rest wait in the backlog.
        self.sent = 0
        self.acked = 0
        self.backlog: deque[tuple[LaneRequest, bytes, bool]] = deque()
        self.unfinished: dict[int, Any] = {}
        """The ActiveRequests without their FINAL yet, by id(): a reply deferred for a
        client that is gone would keep the lane's memory alive; closing drops them."""

    @property
    def overflowing(self) -> bool:
        """True when the client has left :data:`MAX_BACKLOG` replies unread."""
        return len(self.backlog) > MAX_BACKLOG

    def receive(self) -> LaneRequest | None:
        """The next request, or None. Raises ProtocolError for one that does not parse
        (the caller answers it with an error). A client's acknowledgements are taken in
        on the way, and release held replies."""
        while True:
            active = self.server.receive()
            if active is None:
                return None
            data = ctypes.string_at(active.payload_ptr, active.header.number_of_elements)
            msg = unpack(data)
            if not msg.ack:
                self.unfinished[id(active)] = active
                return LaneRequest(self, active, msg.frames, msg.awake_until_ns)
            active.delete()
            if msg.awake_until_ns > self.acked:
                self.acked = msg.awake_until_ns
                self._send_backlog()

    def respond(
        self, req: LaneRequest, body: Sequence[Frame], final: bool, awake_until_ns: int
    ) -> None:
        """Send a reply (a PARTIAL, or the FINAL, which ends ``req``), or hold it while
        the client has :data:`MAX_RESPONSES_BUFFERED` unread; wake the client if it may
        have stopped polling."""
        data = pack(body, awake_until_ns, final)
        if self.backlog or self.sent - self.acked >= MAX_RESPONSES_BUFFERED:
            self.backlog.append((req, data, final))
            return
        self._send(req, data, final)

    def _send(self, req: LaneRequest, data: bytes, final: bool) -> None:
        active = req.active
        sample = active.loan_slice_uninit(len(data))
        ctypes.memmove(sample.payload_ptr, data, len(data))
        sample.assume_init().send()
        self.sent += 1
        if final:
            del self.unfinished[id(active)]
            active.delete()
            self.served += 1
        if time.monotonic_ns() >= req.client_awake_until_ns - WAKE_MARGIN_NS:
            self.notifier.notify()

    def _send_backlog(self) -> None:
        backlog = self.backlog
        while backlog and self.sent - self.acked < MAX_RESPONSES_BUFFERED:
            self._send(*backlog.popleft())

    def drain_wakeups(self) -> None:
        """Consume the events that woke (or would wake) the worker."""
        self.listener.try_wait()

    def detached(self) -> bool:
        """True once a client that attached has closed its end (a cheap look, no port
        call; a client that died is found by :meth:`client_gone`)."""
        # The client's notifier lives exactly as long as its end (see LaneClient).
        if self.services.wake_worker.dynamic_config.number_of_notifiers:
            self.attached = True
            return False
        return self.attached

    def client_gone(self, now_ns: int) -> bool:
        """True once the client has closed its end, or died (whose resources this
        removes), or never attached within :data:`ATTACH_TIMEOUT_NS`."""
        if peer_dead(self.services.calls) or self.detached():
            return True
        return not self.attached and now_ns - self.created_ns > ATTACH_TIMEOUT_NS

    def close(self) -> None:
        """Drop the worker's end; with the client's gone too, iceoryx2 removes the lane."""
        if self.closed:
            return
        self.closed = True
        self.backlog.clear()
        for active in self.unfinished.values():
            active.delete()
        self.unfinished.clear()
        for port in (self.server, self.listener, self.notifier):
            port.delete()
        self.services = None  # type: ignore[assignment]  # dropping it removes the lane

    def __repr__(self) -> str:
        return f"LaneServer({self.name!r}, session={self.session}, served={self.served})"
