"""Sessions: requests that the broker pins to one worker, which may keep state for them.

:class:`SessionState` is what both clients keep for a session, and the schema of its
requests (``nl.session.open``, ``nl.session``, ``nl.session.close``, PROTOCOL.md §3.9).
The session a client hands out adds only how it waits: :class:`~client.Session` for
:class:`~client.Client`, :class:`~client.AsyncSession` for :class:`~client.AsyncClient`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from client.connection import Connection, LaneRoute
from client.errors import ClientClosed, LaneUnavailable, ProtocolError, SessionLost
from client.lane.support import lane_support_missing
from client.messages import Message
from client.wire import NL_SESSION, NL_SESSION_CLOSE, NL_SESSION_OPEN
from client.wire.lanes import LaneMode, check_lane_mode, lane_ask

if TYPE_CHECKING:
    from client.lane.session_lane import SessionLane

log = logging.getLogger("nearloop.session")

Transport = Literal["shm", "zmq"]

SESSION_SERVICE: Final = NL_SESSION.decode()
"""The service every request of a session is sent to; the header names the session."""
OPEN_SERVICE: Final = NL_SESSION_OPEN.decode()
CLOSE_SERVICE: Final = NL_SESSION_CLOSE.decode()


class LanePlan(NamedTuple):
    """What a session asks the broker for, by its ``lane=`` mode: the ``lane`` field of
    ``nl.session.open`` (None: ask for none), or why it asks for none."""

    mode: LaneMode
    ask: dict[str, Any] | None
    why_not: str | None

    @classmethod
    def of(cls, lane: object) -> LanePlan:
        """The plan for ``lane`` (``"auto"``, ``"off"``, ``"require"``); raises
        ValueError for anything else, LaneUnavailable for ``require`` without the extra."""
        mode = check_lane_mode(lane)
        if mode == "off":
            return cls(mode, None, "lane='off'")
        missing = lane_support_missing()
        if missing is not None:
            if mode == "require":
                raise LaneUnavailable(f"lane='require', but {missing}")
            return cls(mode, None, missing)
        from client.lane import identity
        from client.lane.host import host_identity

        return cls(mode, lane_ask(host_identity(), identity.user_identity()), None)


class OpenReply(NamedTuple):
    """What the broker's ``nl.session.open`` reply says."""

    session: int
    service: str
    worker: str
    lane: str | None
    """The lane's name, if the worker made one."""
    lane_refused: str | None
    """Why there is no lane, if one was asked for."""


def open_body(service: str, lane: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body of an ``nl.session.open`` request for a session on ``service``, asking
    for a lane (``lane``, from :func:`client.wire.lanes.lane_ask`) or not."""
    return {"service": service} if lane is None else {"service": service, "lane": lane}


def read_open_reply(reply: Message) -> OpenReply:
    """The session, service, pinned worker and lane from an ``nl.session.open`` reply.

    >>> from client.wire import Header
    >>> read_open_reply(Message(Header(id=1, kind="reply", body={"x": 1})))
    Traceback (most recent call last):
    ...
    client.wire.errors.ProtocolError: nl.session.open replied {'x': 1}, not ...
    """
    body = reply.body
    if not (
        isinstance(body, dict)
        and type(body.get("session")) is int
        and isinstance(body.get("service"), str)
        and isinstance(body.get("worker"), str)
    ):
        raise ProtocolError(
            f"{OPEN_SERVICE} replied {body!r}, not {{'session': int, 'service': str, "
            "'worker': str}"
        )
    lane, refused = body.get("lane"), body.get("lane_refused")
    return OpenReply(
        body["session"],
        body["service"],
        body["worker"],
        lane if isinstance(lane, str) else None,
        refused if isinstance(refused, str) else None,
    )


class SessionState:
    """A session the broker has pinned to one worker of ``service`` (affinity).

    Every request sent through it goes to that worker, so the worker may keep state from
    one request to the next, and a long request may stream PARTIAL replies (see
    :attr:`client.connection.Call.partials`). If that worker dies or leaves, the broker
    fails every request of the session, in flight or sent later, with
    :class:`~client.errors.SessionLost` as soon as it notices (within the worker's
    ``liveness`` heartbeats); a request never waits past its own timeout either.

    A session is the broker's state: if the client's connection to the broker drops (the
    broker restarted), the session is lost with it. Its requests in flight through the
    broker fail with :class:`~client.errors.SessionBrokerLost` (a ``SessionLost``), and
    any request sent later raises :class:`~client.errors.SessionLost` without being sent:
    open a new session. Closing a lost session only frees its lane.
    """

    def __init__(self, session_id: int, service: str, worker: str) -> None:
        self.id = session_id
        self.service = service
        self.worker = worker
        """The hex ZeroMQ identity of the pinned worker, as the broker knows it."""
        self.closed = False
        self.lane: Transport = "zmq"
        """Which transport the session's requests use: ``"shm"``, a shared-memory lane
        to the worker, or ``"zmq"``, through the broker."""
        self.lane_refused: str | None = None
        """Why the session has no lane, if it asked for one."""
        self._lane: SessionLane | None = None
        self._lanes: list[LaneRoute] = []  # the client's, once this session has a lane
        self._conn: Connection[Any] | None = None  # the client's, to see a drop
        self._drops_at_open = 0

    def _watch_link(self, conn: Connection[Any]) -> None:
        """Remember the client's connection, and how often it had dropped, at the open."""
        self._conn = conn
        self._drops_at_open = conn.drops

    @property
    def lost(self) -> bool:
        """True once the client's connection to the broker has dropped since the session
        opened: a session does not outlive its connection (the broker that held it may be
        a new one, and a session over a lane cannot wait to find out). Open a new one."""
        conn = self._conn
        if conn is None or conn.sock is None:
            return False
        if conn.watch.pending():
            conn.check_link()
        return conn.drops != self._drops_at_open

    def _take_lane(
        self, plan: LanePlan, reply: OpenReply, spin_ns: int, lanes: list[LaneRoute]
    ) -> None:
        """Attach the lane the worker made, or note why there is none. Raises
        LaneUnavailable for ``lane="require"`` without one (the caller closes the session)."""
        why = plan.why_not
        if plan.ask is not None:
            if reply.lane is None:
                why = reply.lane_refused or "the broker offers no lanes (an older broker)"
            else:
                from client.lane.session_lane import SessionLane

                try:
                    self._lane = SessionLane(reply.lane, self.id, self.service, spin_ns)
                    self.lane = "shm"
                    self._lanes = lanes
                    lanes.append(self._lane)
                    return
                except Exception as exc:  # iceoryx2's errors have no common base
                    why = f"the lane could not be attached: {type(exc).__name__}: {exc}"
        self.lane_refused = why
        if plan.mode == "require":
            raise LaneUnavailable(f"session {self.id} on {self.service!r} has no lane: {why}")
        if plan.mode == "auto":
            log.info("session %d on %r goes through the broker: %s", self.id, self.service, why)

    def check_lane(self) -> bool:
        """For a session over a lane: look whether its worker is still there; if it has
        gone, every request in flight fails with :class:`~client.errors.SessionLost` now
        (each call's ``on_done`` runs). True while it is there, or if the session has no
        lane, or is closed (the broker watches that worker). A wait on one request looks
        by itself; a caller that only receives (:meth:`Client.receive`) looks with this."""
        return self.closed or self._lane is None or self._lane.check_worker()

    def _drop_lane(self) -> None:
        if self._lane is not None and self._lane in self._lanes:
            self._lanes.remove(self._lane)
            self._lane.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ClientClosed(f"session {self.id} on {self.service!r} is closed")
        if self.lost:
            endpoint = "" if self._conn is None else f" at {self._conn.endpoint}"
            raise SessionLost(
                f"session {self.id}: the connection to the broker{endpoint} dropped (a "
                "broker restart?) and the session went with it; open a new session",
                service=self.service,
            )

    def _close_lost(self) -> bool:
        """For a lost session: mark it closed and free its lane, without asking the broker
        (which no longer knows it). True if it was lost."""
        if self.closed or not self.lost:
            return False
        self.closed = True
        self._drop_lane()
        return True

    def _close_body(self) -> dict[str, Any] | None:
        """Mark the session closed; the body of the ``nl.session.close`` request to send,
        or None if it was closed already."""
        if self.closed:
            return None
        self.closed = True
        return {"session": self.id}

    def _log_close_failure(self, leaving_on: BaseException, failure: Exception) -> None:
        """A close that failed while a ``with`` block was left on an exception: logged, so
        that the block's own error (a call's timeout, say) is the one the caller sees."""
        log.warning(
            "session %d: not closed while leaving on %s: %s",
            self.id,
            type(leaving_on).__name__,
            failure,
        )

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pinned to {self.worker} over {self.lane}"
        return f"{type(self).__name__}({self.id}, service={self.service!r}, {state})"
