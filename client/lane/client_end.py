"""The client's end of a lane: :class:`LaneClient` sends a session's requests over shared
memory and collects the replies, polling first and then sleeping on an event."""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from typing import Any, Final

from client.lane.framing import LaneMessage, pack, pack_ack, unpack
from client.lane.iox import (
    INITIAL_SLICE_BYTES,
    MAX_RESPONSES_BUFFERED,
    iox,
    lane_services,
    peer_dead,
)
from client.lane.worker_end import WAKE_MARGIN_NS
from client.wire import Frame

ACK_EVERY: Final = MAX_RESPONSES_BUFFERED // 2
"""The client acknowledges the replies it has read after this many."""
LIVENESS_CHECK_NS: Final = 50_000_000
"""While it sleeps, the client looks this often whether the worker is still there."""
CLOSE_WAIT_NS: Final = 200_000_000
"""On close, how long the client waits for the worker to free its end first."""


class WorkerGone(Exception):
    """The lane's worker has closed its end or died; the text says which."""


class LaneClient:
    """The client's end of lane ``name``, which the worker has made.

    ``spin_ns`` is how long a wait polls before it sleeps; requests tell the worker so,
    and the worker wakes the client with an event only for a reply that comes later.
    """

    def __init__(self, name: str, spin_ns: int) -> None:
        iceoryx2 = iox()
        self.name = name
        self.spin_ns = spin_ns
        self.services = lane_services(name, create=False)
        self.client = (
            self.services.calls.client_builder()
            .initial_max_slice_len(INITIAL_SLICE_BYTES)
            .allocation_strategy(iceoryx2.AllocationStrategy.PowerOfTwo)
            .backpressure_strategy(iceoryx2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self.notifier = self.services.wake_worker.notifier_builder().create()
        self.listener = self.services.wake_client.listener_builder().create()
        self.pending: dict[int, Any] = {}
        """The iceoryx2 ``PendingResponse`` of each request in flight, by request id."""
        self.awake_until_ns = 0
        """The client polls until this time (the latest it told the worker)."""
        self.worker_awake_until_ns = 0
        """The worker polls until this time (the latest it told the client)."""
        self.closed = False
        self.replies_read = 0
        """Replies read so far; the worker holds replies while it has sent
        MAX_RESPONSES_BUFFERED more than this end has acknowledged."""
        self._acked = 0
        self._next_check_ns = 0

    def send(self, rid: int, body: Sequence[Frame]) -> None:
        """Send request ``rid`` (its header and array frames); wake the worker if it may
        have stopped polling. (A worker that has gone is found by the wait.)"""
        self.awake_until_ns = awake = time.monotonic_ns() + self.spin_ns
        data = pack(body, awake)
        sample = self.client.loan_slice_uninit(len(data))
        ctypes.memmove(sample.payload_ptr, data, len(data))
        self.pending[rid] = sample.assume_init().send()
        if time.monotonic_ns() >= self.worker_awake_until_ns - WAKE_MARGIN_NS:
            self.notifier.notify()

    def poll(self) -> list[tuple[int, LaneMessage]]:
        """Every reply that has arrived, as (request id, message), copied out of shared
        memory; a request whose FINAL came is no longer in flight."""
        got = []
        done = []
        for rid, pending in self.pending.items():
            while (resp := pending.receive()) is not None:
                data = ctypes.string_at(resp.payload_ptr, resp.header.number_of_elements)
                resp.delete()
                msg = unpack(data)
                if msg.awake_until_ns > self.worker_awake_until_ns:
                    self.worker_awake_until_ns = msg.awake_until_ns
                got.append((rid, msg))
                if msg.final:
                    done.append(rid)
                    break
        for rid in done:
            self.pending.pop(rid).delete()
        if got:
            self.replies_read += len(got)
            if self.replies_read - self._acked >= ACK_EVERY:
                self._ack()
        return got

    def _ack(self) -> None:
        """Tell the worker how many replies this end has read, so it may send more."""
        data = pack_ack(self.replies_read)
        sample = self.client.loan_slice_uninit(len(data))
        ctypes.memmove(sample.payload_ptr, data, len(data))
        sample.assume_init().send().delete()  # no reply comes to an acknowledgement
        self._acked = self.replies_read
        if time.monotonic_ns() >= self.worker_awake_until_ns - WAKE_MARGIN_NS:
            self.notifier.notify()

    def may_sleep(self, checked_at_ns: int) -> bool:
        """True if a poll that began at ``checked_at_ns`` and found nothing lets the
        client sleep: the worker wakes it for every reply sent after that time."""
        return checked_at_ns >= self.awake_until_ns

    def sleep(self, until_ns: int) -> None:
        """Sleep until the worker's event or ``until_ns``; raises :class:`WorkerGone`
        when the worker has gone (checked every :data:`LIVENESS_CHECK_NS`)."""
        now = time.monotonic_ns()
        if now >= self._next_check_ns:
            self._next_check_ns = now + LIVENESS_CHECK_NS
            self.check_worker()
        wait_ns = min(until_ns, self._next_check_ns) - now
        if wait_ns > 0:
            self.listener.timed_wait(iox().Duration.from_nanos(wait_ns))

    def drain_wakeups(self) -> None:
        """Consume events that arrived while the client was polling anyway."""
        self.listener.try_wait()

    def check_worker(self) -> None:
        """Raise :class:`WorkerGone` if the worker has closed its end or died."""
        if peer_dead(self.services.calls) or not self._worker_attached():
            raise WorkerGone(self._gone_text())

    def _worker_attached(self) -> bool:
        # The worker's notifier lives exactly as long as its end.
        notifiers: int = self.services.wake_client.dynamic_config.number_of_notifiers
        return notifiers > 0

    def _gone_text(self) -> str:
        return f"the worker's end of lane {self.name} is gone (the worker stopped or died)"

    def close(self) -> None:
        """Drop the client's end: the worker sees it and frees the lane."""
        if self.closed:
            return
        self.closed = True
        for pending in self.pending.values():
            pending.delete()
        self.pending.clear()
        # Say goodbye (the notifier's end), and let the worker free its end before this
        # client port goes: iceoryx2's first server call after its client has gone
        # stalls for ~300 ms, past the worker's heartbeats.
        self.notifier.notify()
        self.notifier.delete()
        deadline_ns = time.monotonic_ns() + CLOSE_WAIT_NS
        while self._worker_attached() and time.monotonic_ns() < deadline_ns:
            if peer_dead(self.services.calls):
                break
            self.listener.timed_wait(iox().Duration.from_nanos(1_000_000))
        for port in (self.client, self.listener):
            port.delete()
        self.services = None  # type: ignore[assignment]  # dropping it removes the lane

    def __repr__(self) -> str:
        return f"LaneClient({self.name!r}, {len(self.pending)} in flight)"
