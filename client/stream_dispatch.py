"""Where a stream's blocks go: one shared-memory lane per co-located decoder worker, and
the broker for the rest, each with credit.

A :class:`Route` is one way to a decoder: a lane session pinned to one worker, or the
broker, which balances its blocks over the service's workers by their credit. The
:class:`Dispatcher` gives each block to the route with the most room, so a slow worker
holds only its own credit's worth and never holds up the others. It never waits and
never sends: the stream sends, and tells it what went where and what came back.

Why the broker, not a session, for a worker on another host: the broker already
balances by credit, re-dispatches a dead worker's blocks, and uses a worker that joins
later; a session over ZeroMQ would add nothing but a pinning that fails with the worker.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final, Literal, Protocol

from client.lane.iox import MAX_IN_FLIGHT

Transport = Literal["shm", "zmq"]

LANE_CHECK_NS: Final = 50_000_000
"""How often a stream looks whether its lanes' workers are still there (as a wait on one
request over a lane does)."""


class LaneSessionLike(Protocol):
    """What a route needs of a session (:class:`~client.Session` or
    :class:`~client.AsyncSession`)."""

    worker: str
    lane: Transport
    closed: bool

    @property
    def lost(self) -> bool: ...

    def submit(self, body: Any = None, *arrays: Any, timeout: float | None = None) -> Any: ...

    def check_lane(self) -> bool: ...


class Route:
    """One way to the decoders: a lane session to one worker (``session`` set), or the
    broker (``session`` None). ``credit`` is how many blocks it may hold at once."""

    __slots__ = ("calls", "credit", "lost", "name", "session", "transport")

    def __init__(self, session: LaneSessionLike | None, credit: int) -> None:
        self.session = session
        self.transport: Transport = "zmq" if session is None else "shm"
        self.name = "broker" if session is None else session.worker
        self.credit = credit
        self.calls: set[int] = set()
        """Ids of the requests in flight on it (the worker still holds their credit)."""
        self.lost: str | None = None
        """Why the route is gone (its worker died or left); it takes no more blocks."""

    @property
    def room(self) -> int:
        """Blocks it can take now."""
        return 0 if self.lost is not None else max(0, self.credit - len(self.calls))

    def __repr__(self) -> str:
        state = f"lost: {self.lost}" if self.lost else f"{len(self.calls)}/{self.credit}"
        return f"Route({self.transport}, {self.name}, {state})"


class Dispatcher:
    """The routes of one stream and what each holds.

    ``lanes``: the lane sessions, one per co-located worker. ``broker_workers``: how many
    of the service's workers have no lane (their blocks go through the broker).
    ``use_broker``: whether blocks may go through the broker at all (not with
    ``lane="require"``); when every lane is lost it takes them all.

    Each worker's credit is its share of the window (at least 1, and at most what a lane
    holds in flight); the broker's is that share times its workers. Without lanes, the
    broker's credit is the whole window, and the stream behaves as it always did.
    """

    def __init__(
        self,
        lanes: list[LaneSessionLike],
        *,
        broker_workers: int,
        use_broker: bool,
        window: int,
    ) -> None:
        self.window = window
        self.lanes = [Route(s, 1) for s in lanes]
        self.broker: Route | None = Route(None, 1) if use_broker else None
        self.broker_workers = broker_workers
        self._by_call: dict[int, Route] = {}
        self._next_check_ns = time.monotonic_ns() + LANE_CHECK_NS
        self._share()

    def _share(self) -> None:
        """Split the window over the workers still there."""
        live = [r for r in self.lanes if r.lost is None]
        workers = len(live) + (self.broker_workers if self.broker is not None else 0)
        per_worker = min(MAX_IN_FLIGHT, max(1, math.ceil(self.window / max(1, workers))))
        for r in live:
            r.credit = per_worker
        if self.broker is not None:
            if live:
                self.broker.credit = per_worker * self.broker_workers
            else:
                self.broker.credit = self.window

    @property
    def live(self) -> bool:
        """True while some route can take blocks (now or once it has room)."""
        return self.broker is not None or any(r.lost is None for r in self.lanes)

    def pick(self) -> Route | None:
        """The route with the most room for one more block (a lane before the broker on a
        tie), or None if every one is full or gone."""
        best: Route | None = None
        best_free = 0.0
        for r in self.lanes:
            if r.room and r.room / r.credit > best_free:
                best, best_free = r, r.room / r.credit
        b = self.broker
        if b is not None and b.room and b.room / b.credit > best_free:
            best = b
        return best

    def sent(self, route: Route, call_id: int) -> None:
        """A request went out on ``route``."""
        route.calls.add(call_id)
        self._by_call[call_id] = route

    def done(self, call_id: int) -> Route | None:
        """Request ``call_id`` is answered or let go: its credit is free. Its route, or
        None if it was not sent through here."""
        route = self._by_call.pop(call_id, None)
        if route is not None:
            route.calls.discard(call_id)
        return route

    def lose(self, route: Route, why: str) -> bool:
        """``route``'s worker has gone: it takes no more blocks, and the others share the
        window. True if this is news."""
        if route.lost is not None or route.session is None:
            return False
        route.lost = why
        self._share()
        return True

    def check_lanes(self, now_ns: int) -> None:
        """Every :data:`LANE_CHECK_NS`, look whether each lane's worker is still there;
        a gone one fails its calls with SessionLost, through their ``on_done``."""
        if now_ns < self._next_check_ns:
            return
        self._next_check_ns = now_ns + LANE_CHECK_NS
        for r in self.lanes:
            if r.lost is None and r.session is not None:
                r.session.check_lane()

    def next_check_ns(self) -> int | None:
        """When :meth:`check_lanes` next looks, if any lane is still in use."""
        if any(r.lost is None for r in self.lanes):
            return self._next_check_ns
        return None

    def __repr__(self) -> str:
        routes = [*self.lanes, *([self.broker] if self.broker is not None else [])]
        return f"Dispatcher({', '.join(map(repr, routes))})"
