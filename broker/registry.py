"""The broker's bookkeeping: services, workers, sessions and requests. No sockets here."""

from __future__ import annotations

from collections import deque
from typing import Final

from client.wire import (
    KIND_ERROR,
    MAX_HEADER_BYTES,
    Frame,
    ProtocolError,
    WorkerOptions,
    parse_header,
)
from client.wire.histogram import NsHistogram
from client.wire.trace import has_trace_mark, is_traced

QUEUED: Final = 0
IN_FLIGHT: Final = 1
DONE: Final = 2

# --- what became of requests (nearloop_requests_total, PROTOCOL.md §4.9) --------------------

OUTCOMES: Final = ("ok", "error", "expired", "refused", "lost", "redispatched")
"""The ``outcome`` label of ``nearloop_requests_total``, in the order of the indices below."""
LANE_OUTCOMES: Final = ("ok", "error")
"""The ``outcome`` label of ``nearloop_lane_requests_total``."""
OK: Final = 0
ERROR: Final = 1
EXPIRED: Final = 2
REFUSED: Final = 3
LOST: Final = 4
REDISPATCHED: Final = 5

OTHER_SERVICES: Final = b"(other)"
"""The service name counts go under once the broker counts ``max_services`` names, so that
the ``service`` label stays bounded whatever names clients send."""

MALFORMED_REASONS: Final = (
    "too_many_frames",
    "not_mdp",
    "bad_request",
    "bad_worker_command",
    "reserved_service",
    "too_many_services",
)
"""The ``reason`` label of ``nearloop_malformed_total``: a fixed set (the free text of each
case goes to the log). In order: more frames than any message may have; not an MDP/0.1 or
MDP/0.2 client or worker message; a client REQUEST that breaks MDP or nearloop rules (its
service name, the header of an ``nl.*`` request); a worker command that does (unknown
command, reply without address, bad READY options); a READY for an ``mmi.*`` or ``nl.*``
name; a READY for a new service while the broker holds ``max_services``."""


def is_error_reply(body: list[Frame]) -> bool:
    """Whether a reply body is a nearloop error reply: its first frame is a valid header of
    kind ``error``. A plain MDP body that is not a nearloop header is not.

    Cheap on the hot path: an error header holds the bytes ``error`` (its kind, in any
    msgpack string encoding), so a reply without them is told apart by one substring
    search; only a header that has them is parsed.

    >>> from client.wire import ErrorInfo, encode_header
    >>> is_error_reply([encode_header(id=1, kind="error", error=ErrorInfo("t", "m"))])
    True
    >>> is_error_reply([encode_header(id=1, kind="reply", body="error")])
    False
    >>> is_error_reply([b"error"])
    False
    """
    if not body:
        return False
    first = body[0]
    if len(first) > MAX_HEADER_BYTES:
        return False
    raw = first if type(first) is bytes else bytes(first)  # a zmq.Frame from MDP/0.1
    if b"error" not in raw:
        return False
    try:
        return parse_header(raw).kind == KIND_ERROR
    except ProtocolError:
        return False


class ServiceCounts:
    """What became of one service's requests (indexed by :data:`OUTCOMES`), and the time
    from the broker's receipt of each answered one to its forwarding of the FINAL. The loop
    only adds to them; the metrics exporter reads them from its own thread."""

    __slots__ = ("lane_outcomes", "latency", "outcomes")

    def __init__(self) -> None:
        self.outcomes = [0] * len(OUTCOMES)
        self.latency = NsHistogram()
        self.lane_outcomes = [0, 0]
        """FINAL replies its workers sent on lanes, ok and error, as their heartbeats told
        (lane requests never pass the broker)."""


class CountsByService:
    """:class:`ServiceCounts` per service name, kept after the service itself is forgotten
    (its counts must not go back), for at most ``limit`` names; the rest count together
    under :data:`OTHER_SERVICES`."""

    __slots__ = ("by_name", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.by_name: dict[bytes, ServiceCounts] = {}

    def of(self, name: bytes) -> ServiceCounts:
        """The counts of service ``name``."""
        counts = self.by_name.get(name)
        if counts is None:
            if len(self.by_name) >= self.limit:
                name = OTHER_SERVICES
                counts = self.by_name.get(name)
            if counts is None:
                counts = self.by_name[name] = ServiceCounts()
        return counts


class Request:
    """One client request, from arrival until its final reply or error."""

    __slots__ = (
        "arrival_ns",
        "attempts",
        "body",
        "client",
        "deadline_ns",
        "forwarded_ns",
        "lane_open",
        "service",
        "session",
        "state",
        "traced",
        "version",
    )

    def __init__(
        self, client: bytes, version: int, service: bytes, body: list[Frame], arrival_ns: int
    ) -> None:
        self.client = client
        self.version = version
        self.service = service
        self.body: list[Frame] | None = body
        self.arrival_ns = arrival_ns
        self.deadline_ns = 0  # 0: not yet known; read from the header only if it must wait
        self.state = QUEUED
        self.attempts = 0
        self.session: SessionEntry | None = None
        self.lane_open: LaneOpen | None = None
        """Set on the request that asks a worker to create a session's lane."""
        # An untraced request costs one prefix comparison; only a marked header is parsed.
        self.traced = bool(body) and has_trace_mark(body[0]) and is_traced(body[0])
        """Its header asks for the broker's timestamps (PROTOCOL.md §3.2.2)."""
        self.forwarded_ns = 0
        """When it was last handed to a worker; kept only for a traced request."""


class LaneOpen:
    """An ``nl.session.open`` that waits for the worker to create the session's lane: the
    broker answers it when the worker does (PROTOCOL.md §3.10)."""

    __slots__ = ("header_id", "result", "service", "version")

    def __init__(
        self, version: int, service: bytes, header_id: int, result: dict[str, object]
    ) -> None:
        self.version = version
        self.service = service
        self.header_id = header_id
        self.result = result


class WorkerEntry:
    """A registered worker: its credit, liveness and the requests it holds."""

    __slots__ = (
        "alive",
        "credit",
        "free",
        "heartbeat_ns",
        "identity",
        "inflight",
        "lane_replies",
        "last_seen_ns",
        "options",
        "pinned",
        "service",
        "sessions",
        "ttl_ns",
        "version",
        "waiting",
    )

    def __init__(
        self,
        identity: bytes,
        version: int,
        service: Service,
        options: WorkerOptions,
        heartbeat_ns: int,
        ttl_ns: int,
        now_ns: int,
    ) -> None:
        self.identity = identity
        self.version = version
        self.service = service
        self.options = options
        """What it declared at READY, its host and lanes among them."""
        self.credit = options.credit
        self.free = options.credit
        self.heartbeat_ns = heartbeat_ns
        self.ttl_ns = ttl_ns
        self.last_seen_ns = now_ns
        self.inflight: dict[bytes, Request] = {}
        self.lane_replies = (0, 0)
        """The FINAL replies it has sent on lanes (ok, error), as its last heartbeat said."""
        self.alive = True
        self.waiting = False
        self.sessions: dict[int, SessionEntry] = {}
        self.pinned: deque[Request] = deque()
        """Session requests waiting for this worker's credit (non-empty only while it has
        none), served before anything from the service queue."""

    def __repr__(self) -> str:
        return (
            f"WorkerEntry({self.identity.hex()}, service={self.service.name!r}, "
            f"MDP/0.{self.version}, credit={self.free}/{self.credit})"
        )


class Service:
    """A named service: its workers with free credit (LRU order) and its bounded queue."""

    __slots__ = ("counts", "n_queued", "name", "queue", "waiting", "workers")

    def __init__(self, name: bytes, counts: ServiceCounts | None = None) -> None:
        self.name = name
        self.counts = counts or ServiceCounts()
        """What became of its requests; shared with :class:`CountsByService`."""
        self.waiting: deque[WorkerEntry] = deque()
        self.queue: deque[Request] = deque()
        self.n_queued = 0
        self.workers = 0

    def take_worker(self) -> WorkerEntry:
        """Take one unit of credit from the least recently used worker that has some."""
        w = self.waiting[0]
        w.free -= 1
        self.waiting.popleft()
        if w.free:
            self.waiting.append(w)  # round-robin across workers that still have credit
        else:
            w.waiting = False
        return w

    def take_credit(self, w: WorkerEntry) -> None:
        """Take one unit of credit from ``w`` itself (a session request pinned to it)."""
        w.free -= 1
        if not w.free and w.waiting:
            self.waiting.remove(w)
            w.waiting = False

    def give_credit(self, w: WorkerEntry) -> None:
        """Return one unit of credit; a worker that had none rejoins at the back."""
        w.free += 1
        if not w.waiting:
            w.waiting = True
            self.waiting.append(w)

    def next_queued(self) -> Request | None:
        """Pop the oldest request still waiting (expired ones are skipped lazily)."""
        q = self.queue
        while q:
            r = q.popleft()
            if r.state == QUEUED:
                self.n_queued -= 1
                return r
        return None

    def compact(self) -> None:
        """Drop expired entries so the deque stays as bounded as n_queued."""
        q = self.queue
        while q and q[0].state != QUEUED:
            q.popleft()
        if len(q) > 2 * self.n_queued + 64:
            self.queue = deque(r for r in q if r.state == QUEUED)

    def __repr__(self) -> str:
        return (
            f"Service({self.name!r}, workers={self.workers}, "
            f"with_credit={len(self.waiting)}, queued={self.n_queued})"
        )


class SessionEntry:
    """A client's session, pinned to one worker. ``lost`` says why that worker is gone."""

    __slots__ = ("client", "id", "inflight", "lane", "last_used_ns", "lost", "service", "worker")

    def __init__(self, sid: int, client: bytes, worker: WorkerEntry, now_ns: int) -> None:
        self.id = sid
        self.client = client
        self.worker = worker
        self.service = worker.service.name
        self.inflight = 0
        self.last_used_ns = now_ns
        self.lost: str | None = None
        self.lane: str | None = None
        """The session's lane, once its worker has made one: its requests then go there,
        not through the broker, so it never expires idle."""

    def __repr__(self) -> str:
        state = f"lost: {self.lost}" if self.lost else f"on {self.worker.identity.hex()}"
        return (
            f"SessionEntry({self.id}, service={self.service!r}, {state}, inflight={self.inflight})"
        )
