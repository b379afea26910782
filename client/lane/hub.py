"""A worker's lanes: :class:`LaneHub` makes them when the broker asks, reads their
requests beside the worker's ZeroMQ socket, frees those whose clients have gone, and
sleeps on all of them and the socket at once."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import zmq

from client.lane.iox import iox, remove_dead_nodes
from client.lane.worker_end import LaneRequest, LaneServer
from client.wire import ProtocolError

log = logging.getLogger("nearloop.lane")

REAP_EVERY_NS: Final = 50_000_000
"""How often the worker looks whether its lanes' clients are still there."""


class LaneHub:
    """The lanes one worker serves, by session id.

    ``spin_ns``: after each request, the worker polls its lanes this long before it
    sleeps, and tells the client so with each reply.
    """

    def __init__(self, spin_ns: int) -> None:
        self.spin_ns = spin_ns
        self.lanes: dict[int, LaneServer] = {}
        self.awake_until_ns = 0
        """The worker polls its lanes until this time (the latest it told a client)."""
        self.closed_sessions: list[int] = []
        """Sessions whose lanes were freed since the broker was last told."""
        self.finals = [0, 0]
        """FINAL replies sent on the lanes since the worker started: ok, error."""
        self._finals_told = (0, 0)
        self._waitset: Any = None
        self._guards: list[Any] = []
        self._fd: int | None = None
        self._next_reap_ns = 0

    def open(self, name: str, session: int) -> None:
        """Make lane ``name`` for ``session`` (the broker asked); raises if it cannot."""
        if session in self.lanes:
            raise ProtocolError(f"session {session} has a lane already")
        remove_dead_nodes()  # what killed peers left, before this worker adds more
        self.lanes[session] = LaneServer(name, session)
        self._waitset = None
        log.debug("lane %s opened for session %d", name, session)

    def receive(self) -> list[LaneRequest]:
        """Every request waiting on any lane, oldest lane first; malformed ones are
        logged and dropped (no header: nothing to address an error to)."""
        got = []
        for sid, lane in list(self.lanes.items()):
            if lane.detached():
                # Free it before touching its server port: iceoryx2's first port call
                # after a client has left stalls for ~300 ms, past a worker's heartbeats.
                self.close(sid)
                continue
            while True:
                try:
                    req = lane.receive()
                except ProtocolError as exc:
                    log.warning("lane %s: dropped a malformed request: %s", lane.name, exc)
                    continue
                if req is None:
                    break
                got.append(req)
        return got

    def served(self, now_ns: int) -> int:
        """Record activity at ``now_ns``; returns the time until which the worker now
        polls, which its replies tell the clients."""
        self.awake_until_ns = until = now_ns + self.spin_ns
        return until

    def reap(self, now_ns: int) -> None:
        """Free the lanes whose clients have gone (checked every :data:`REAP_EVERY_NS`)."""
        if now_ns < self._next_reap_ns:
            return
        self._next_reap_ns = now_ns + REAP_EVERY_NS
        for sid, lane in list(self.lanes.items()):
            if lane.overflowing:
                log.warning(
                    "lane %s: its client left %d replies unread; freeing the lane",
                    lane.name, len(lane.backlog),
                )  # fmt: skip
                self.close(sid)
            elif lane.client_gone(now_ns):
                self.close(sid)

    def close(self, session: int) -> None:
        """Free one session's lane, and note it for the broker."""
        lane = self.lanes.pop(session, None)
        if lane is not None:
            lane.close()
            self.closed_sessions.append(session)
            # The wait set's guards hold the lane's listener, which keeps its event
            # service (and its files) alive: drop them with the wait set.
            self._guards.clear()
            self._waitset = None
            log.debug("lane %s freed (session %d)", lane.name, session)

    def take_finals(self) -> tuple[int, int] | None:
        """The lanes' FINAL replies so far (ok, error), if they changed since the last
        call (for the next HEARTBEAT: the broker counts lane traffic it never sees)."""
        finals = (self.finals[0], self.finals[1])
        if finals == self._finals_told:
            return None
        self._finals_told = finals
        return finals

    def take_closed(self) -> list[int]:
        """The sessions freed since the last call (for the next HEARTBEAT)."""
        closed, self.closed_sessions = self.closed_sessions, []
        return closed

    def sleep(self, sock: zmq.Socket[bytes], until_ns: int) -> None:
        """Sleep until a lane's client or the broker sends something, or ``until_ns``.

        Events that came while the worker polled anyway are consumed first, then the lanes
        and the socket are looked at once more, so a request that came in between is not
        slept through. The socket's file descriptor signals edges, not levels: reading
        ``zmq.EVENTS`` re-arms it.
        """
        iceoryx2 = iox()
        fd = int(sock.getsockopt(zmq.FD))
        if self._waitset is None or fd != self._fd:
            self._build_waitset(iceoryx2, fd)
        for lane in self.lanes.values():
            lane.drain_wakeups()
        if any(lane.server.has_requests for lane in self.lanes.values()):
            return
        if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            return
        wait_ns = until_ns - time.monotonic_ns()
        if wait_ns > 0:
            self._waitset.wait_and_process_with_timeout(iceoryx2.Duration.from_nanos(wait_ns))

    def _build_waitset(self, iceoryx2: Any, fd: int) -> None:
        self._guards.clear()
        ws = (
            iceoryx2.WaitSetBuilder.new()
            .signal_handling_mode(iceoryx2.SignalHandlingMode.Disabled)
            .create(iceoryx2.ServiceType.Ipc)
        )
        self._guards.append(ws.attach_notification_fd(iceoryx2.FileDescriptor.non_owning_new(fd)))
        for lane in self.lanes.values():
            self._guards.append(ws.attach_notification(lane.listener))
        self._waitset = ws
        self._fd = fd

    def close_all(self) -> None:
        """Free every lane (the worker is stopping)."""
        for sid in list(self.lanes):
            self.close(sid)
        self._guards.clear()
        self._waitset = None

    def __len__(self) -> int:
        return len(self.lanes)
