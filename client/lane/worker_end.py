"""The worker's end of a lane: :class:`LaneServer`, one per session the broker gave a lane.

The worker creates the lane when the broker asks (PROTOCOL.md §3.10), then serves the
session's requests from it, beside its ZeroMQ socket. It wakes a client that sleeps, and
frees the lane when the client closes it or dies.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

from client.lane.framing import pack, unpack
from client.lane.iox import INITIAL_SLICE_BYTES, iox, lane_services, peer_dead
from client.wire import Frame

ATTACH_TIMEOUT_NS: Final = 30 * 1_000_000_000
"""A lane whose client has not attached this long after it was made is freed."""
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

    def receive(self) -> LaneRequest | None:
        """The next request, or None. Raises ProtocolError for one that does not parse
        (the caller answers it with an error)."""
        active = self.server.receive()
        if active is None:
            return None
        data = ctypes.string_at(active.payload_ptr, active.header.number_of_elements)
        msg = unpack(data)
        return LaneRequest(self, active, msg.frames, msg.awake_until_ns)

    def respond(
        self, req: LaneRequest, body: Sequence[Frame], final: bool, awake_until_ns: int
    ) -> None:
        """Send a reply (a PARTIAL, or the FINAL, which ends ``req``); wake the client if
        it may have stopped polling."""
        active = req.active
        data = pack(body, awake_until_ns, final)
        sample = active.loan_slice_uninit(len(data))
        ctypes.memmove(sample.payload_ptr, data, len(data))
        sample.assume_init().send()
        if final:
            active.delete()
            self.served += 1
        if time.monotonic_ns() >= req.client_awake_until_ns - WAKE_MARGIN_NS:
            self.notifier.notify()

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
        if peer_dead(self.services.calls):
            return True
        # The client's notifier lives exactly as long as its end (see LaneClient).
        clients: int = self.services.wake_worker.dynamic_config.number_of_notifiers
        if clients:
            self.attached = True
        elif not self.attached:
            return now_ns - self.created_ns > ATTACH_TIMEOUT_NS
        return clients == 0

    def close(self) -> None:
        """Drop the worker's end; with the client's gone too, iceoryx2 removes the lane."""
        if self.closed:
            return
        self.closed = True
        for port in (self.server, self.listener, self.notifier):
            port.delete()
        self.services = None  # type: ignore[assignment]  # dropping it removes the lane

    def __repr__(self) -> str:
        return f"LaneServer({self.name!r}, session={self.session}, served={self.served})"
