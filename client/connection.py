"""A client's connection to its broker, and the calls in flight on it: the one core that
:class:`~client.Client` and :class:`~client.AsyncClient` share.

A :class:`Connection` owns the DEALER socket, the request ids, the default timeout and
spin budget (checked once), and the table of calls in flight. It builds every request a
client sends (plain, in a session, MMI, the model store), decodes each reply and hands it
to its :class:`Call`, and counts the replies it had to drop. It never waits: each client
waits its own way (blocking on the socket, or on asyncio) and hands the connection what
it received.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, Self, TypeVar

import msgpack
import numpy as np
import numpy.typing as npt
import zmq

from client.errors import (
    BrokerLost,
    BrokerUnreachable,
    ClientClosed,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    SessionBrokerLost,
    remote_error,
)
from client.link import LinkWatch
from client.messages import Message
from client.wire import (
    KIND_ERROR,
    KIND_REPLY,
    KIND_REQUEST,
    MMI_INSTANCE,
    MMI_OK,
    MMI_PREFIX,
    MMI_SERVICE,
    MMI_STATS,
    NL_MODEL_GET,
    NL_MODEL_PUT,
    NL_PREFIX,
    NL_SESSION,
    Frame,
    Header,
    arrays_to_frames,
    check_body_size,
    encode_client_request,
    encode_header,
    frames_to_arrays,
    model_hash,
    parse_broker_reply,
    parse_header,
)
from client.wire.curve import CurveSpec, load_curve
from client.wire.trace import NO_HOSTS, mark_traced, read_hosts
from client.wire.transport import connect_dealer, recv_frames, send_frames

DEFAULT_SPIN_US: Final = 1000
"""How long a waiting client polls for a reply before it sleeps in the kernel: long
enough to cover a parameter-loop call (an H2 energy through the broker, ~0.5 ms on the
2-core development VM), which a shorter spin would outlast and then still pay the
wake-up."""

LANE_RECEIVE_SLICE_S: Final = 0.001
"""A client with lanes, waiting for any reply, looks at its lanes at least this often
(seconds) while it sleeps on its socket."""

TTL_SHARE: Final = 0.9
"""The broker may queue a request for this share of the caller's timeout, so that a
``no_worker`` error still reaches the caller before its own deadline."""

_NS: Final = 1_000_000_000
_MMI_SERVICE: Final = MMI_SERVICE.decode()
_MMI_STATS: Final = MMI_STATS.decode()
_MMI_INSTANCE: Final = MMI_INSTANCE.decode()
_MODEL_PUT: Final = NL_MODEL_PUT.decode()
_MODEL_GET: Final = NL_MODEL_GET.decode()
_BROKER_PREFIXES: Final = (MMI_PREFIX.decode(), NL_PREFIX.decode())
_SESSION: Final = NL_SESSION.decode()
_MMI_PREFIX: Final = MMI_PREFIX.decode()
_MODEL_PREFIX: Final = "nl.model."


def answered_by_broker(service: str) -> bool:
    """True for the services the broker answers itself: ``mmi.*``, and ``nl.*`` but
    ``nl.session``, whose requests go on to a session's worker.

    >>> [answered_by_broker(s) for s in ("mmi.stats", "nl.model.put", "nl.session", "qpu")]
    [True, True, False, False]
    """
    return service.startswith(_BROKER_PREFIXES) and service != _SESSION


def idempotent_by_nature(service: str) -> bool:
    """True for the broker's own services that are safe to send twice, and so are re-sent
    after a broker restart without being asked: ``mmi.*`` (read-only) and the model store
    (a model is stored under its content's hash).

    >>> [idempotent_by_nature(s) for s in ("mmi.stats", "nl.model.put", "nl.session.open")]
    [True, True, False]
    """
    return service.startswith((_MMI_PREFIX, _MODEL_PREFIX))


class _Owner(Protocol):
    """What a call needs of the client that sent it: its connection."""

    @property
    def _conn(self) -> Connection[Any]: ...


class LaneRoute(Protocol):
    """What a call that travels on a session's lane needs of it
    (:class:`client.lane.session_lane.SessionLane`)."""

    calls: dict[int, Any]

    def deliver(self) -> bool: ...

    def fail_if_worker_gone(self) -> bool: ...

    def wait(self, call: Any) -> None: ...

    async def wait_async(self, call: Any) -> None: ...

    def close(self) -> None: ...


class Call:
    """A request in flight: its id, service, deadline, and what has come back for it.

    Each client's pending reply (:class:`~client.PendingReply`,
    :class:`~client.AsyncPendingReply`) is one of these, and adds how to wait for it.
    """

    __slots__ = (
        "_client",
        "_lane",
        "_outcome",
        "_partials",
        "deadline_ns",
        "id",
        "on_done",
        "resend",
        "service",
        "session",
        "timeout",
    )

    def __init__(self, client: _Owner, rid: int, service: str, timeout: float) -> None:
        self._client = client
        self.id = rid
        self.service = service
        self.timeout = timeout
        self.deadline_ns = time.monotonic_ns() + int(timeout * _NS)
        self._outcome: Message | Exception | None = None
        self._partials: list[Message] | None = None  # made on the first PARTIAL
        self.on_done: Callable[[Self], None] | None = None
        """Called, while the client receives, when the final reply (or error) arrives."""
        self._lane: LaneRoute | None = None  # set when it travels on a session's lane
        self.resend: list[Frame] | None = None
        """The request's frames, kept when it is idempotent: sent again if the connection
        to the broker drops while it is in flight."""
        self.session: int | None = None
        """The session it was sent in, through the broker."""

    @property
    def done(self) -> bool:
        """True once the final reply (or error) has arrived."""
        return self._outcome is not None

    @property
    def outcome(self) -> Message | Exception | None:
        """The final reply, or the error it carried; None until it has arrived. Unlike
        waiting for the result, this never raises (for an ``on_done`` callback)."""
        return self._outcome

    @property
    def partials(self) -> list[Message]:
        """PARTIAL replies received so far, in arrival order."""
        if self._partials is None:
            self._partials = []
        return self._partials

    def abandon(self) -> None:
        """Stop waiting: a reply that arrives later is counted as late and dropped."""
        if self._lane is not None:
            self._lane.calls.pop(self.id, None)
        else:
            self._client._conn.forget(self)

    def _on_partial(self, message: Message) -> None:
        if self._partials is None:
            self._partials = [message]
        else:
            self._partials.append(message)

    def _on_final(self: Self, outcome: Message | Exception) -> None:
        self._outcome = outcome
        if self.on_done is not None:
            self.on_done(self)

    def _take(self) -> Message:
        """The final reply, or raise the error it carried (call only once done)."""
        outcome = self._outcome
        if isinstance(outcome, Message):
            return outcome
        if outcome is None:
            raise RuntimeError(f"request {self.id} has no reply yet")
        raise outcome

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id}, service={self.service!r}, done={self.done})"


CallT = TypeVar("CallT", bound=Call)


class Connection(Generic[CallT]):
    """A DEALER connected to a broker, the request ids, and the calls in flight on it.

    ``call_type`` is the class of the calls this connection's client hands out; every
    ``submit_*`` method registers one and sends its request at once, without waiting.
    """

    def __init__(
        self,
        endpoint: str,
        call_type: type[CallT],
        *,
        timeout: float,
        spin_us: int,
        context: zmq.Context[Any] | None,
        curve: CurveSpec | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if type(spin_us) is not int or spin_us < 0:
            raise ValueError(f"spin_us must be an integer >= 0, got {spin_us!r}")
        self.endpoint = endpoint
        self.default_timeout = timeout
        self.spin_ns = spin_us * 1000
        """How long a caller polls for its reply before sleeping (0: it sleeps at once)."""
        self.calls: dict[int, CallT] = {}
        """The calls in flight, by request id."""
        self.lanes: list[LaneRoute] = []
        """The lanes of this client's open sessions, whose replies bypass the socket."""
        self.late_replies = 0
        """Replies that arrived for a call no one waits for any more (timed out, abandoned)."""
        self.malformed_replies = 0
        """Replies that could not be decoded, and were dropped."""
        self.trace = False
        """Whether requests ask the broker for its timestamps (PROTOCOL.md §3.2.2)."""
        self.resent = 0
        """Idempotent requests sent again because the connection dropped while they were
        in flight."""
        self.lost_in_flight = 0
        """Requests failed with :class:`~client.errors.BrokerLost` at a drop."""
        self._call_type = call_type
        self._ids = itertools.count(1)
        ctx: zmq.Context[Any] = context or zmq.Context.instance()
        keys = None if curve is None else load_curve(curve)  # a bad key file fails here
        # A routing id of its own keeps replies coming across a reconnect, where the broker
        # hands the id over. A CURVE broker hands nothing over (PROTOCOL.md §1.2.1): there a
        # reconnect that claimed the id while the broker still held the old connection
        # would be parked for good, so the broker names each connection afresh.
        sock, self.watch = LinkWatch.watching(
            ctx,
            lambda hook: connect_dealer(
                ctx, endpoint, stable_identity=keys is None, curve=keys, before_connect=hook
            ),
        )
        """The socket's monitor: it says when the connection to the broker dropped."""
        self.sock: zmq.Socket[bytes] | None = sock
        """The socket; None once closed."""
        self.restarts = 0
        """How many times this client found its broker's state gone after a drop (a new
        broker, or, with CURVE, a new connection the broker does not know): the calls in
        flight then failed or went again, and the sessions opened before are lost."""
        self.owner: Any = None
        """The client this connection serves (its probes are that client's calls)."""
        self._stable_id = keys is None
        self._suspects: dict[int, CallT] = {}  # in flight at a drop, until the probe says
        self._instance: bytes | None = None  # the broker's, as mmi.instance last said
        self._probe: CallT | None = None
        self._after_drop = False  # the probe in flight asks after a drop
        self._settled_id = 0
        self._sent_id = 0
        """Every call up to this id was sent before a look at the monitor that found no
        drop: sent before any later drop, so certainly on the old connection."""
        if self._stable_id:
            self._send_probe()  # which broker this is, to know a new one after a drop

    @property
    def drops(self) -> int:
        """How many times the connection to the broker dropped (and ZeroMQ reconnected)."""
        return self.watch.drops

    # --- building requests (pure) ------------------------------------------------------

    def timeout_of(self, timeout: float | None) -> float:
        """The effective timeout in seconds, checked."""
        t = self.default_timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {t}")
        return t

    def build(
        self,
        service: str,
        body: Any,
        arrays: Sequence[npt.NDArray[Any]],
        timeout: float,
        session: int | None = None,
    ) -> tuple[int, list[Frame]]:
        """A new request id and the frames to send. Raises before sending anything bad.

        ``session`` goes into the header: the broker routes ``nl.session`` requests by it.
        """
        rid = next(self._ids)
        specs, inline, frames = arrays_to_frames(arrays)
        header = encode_header(
            id=rid,
            kind=KIND_REQUEST,
            ts={"client_send": time.monotonic_ns()},
            ttl_ms=int(timeout * TTL_SHARE * 1000),
            arrays=specs,
            body=body,
            session=session,
            inline=inline,
        )
        if self.trace:
            header = mark_traced(header)
        msg_body = [header, *frames]
        if frames:  # a lone header is bounded by encode_header
            check_body_size(msg_body)
        return rid, encode_client_request(2, service.encode(), msg_body)

    def build_mmi(self, service: str, argument: bytes) -> tuple[int, list[Frame]]:
        """An MMI request (RFC 8); our header rides after the argument and is echoed back."""
        rid = next(self._ids)
        header = encode_header(id=rid, kind=KIND_REQUEST)
        return rid, encode_client_request(2, service.encode(), [argument, header])

    # --- sending -----------------------------------------------------------------------

    def socket(self) -> zmq.Socket[bytes]:
        """The socket; raises ClientClosed once the connection is closed."""
        sock = self.sock
        if sock is None:
            raise ClientClosed(f"client for {self.endpoint} is closed")
        return sock

    def submit(
        self,
        client: _Owner,
        service: str,
        body: Any,
        arrays: Sequence[npt.NDArray[Any]],
        timeout: float | None,
        session: int | None = None,
        idempotent: bool = False,
    ) -> CallT:
        """Send a request for ``client``; returns its call, registered. An ``idempotent``
        request is sent again if the connection to the broker drops while it is in flight;
        any other fails with :class:`~client.errors.BrokerLost` then."""
        t = self.timeout_of(timeout)
        rid, frames = self.build(service, body, arrays, t, session)
        call = self._call_type(client, rid, service, t)
        call.session = session
        if idempotent or idempotent_by_nature(service):
            call.resend = frames
        return self._send(call, frames)

    def new_call(self, client: _Owner, service: str, timeout: float | None) -> CallT:
        """A call with a fresh request id, not yet sent nor registered (a lane sends it)."""
        return self._call_type(client, next(self._ids), service, self.timeout_of(timeout))

    def submit_mmi(
        self, client: _Owner, service: str, argument: bytes, timeout: float | None
    ) -> CallT:
        """Send an MMI request (``mmi.service``, ``mmi.stats``)."""
        t = self.timeout_of(timeout)
        rid, frames = self.build_mmi(service, argument)
        call = self._call_type(client, rid, service, t)
        call.resend = frames  # read-only: safe to send again
        return self._send(call, frames)

    def submit_service_query(self, client: _Owner, service: str, timeout: float | None) -> CallT:
        """Ask whether ``service`` has workers (``mmi.service``); see :func:`service_status`."""
        return self.submit_mmi(client, _MMI_SERVICE, service.encode(), timeout)

    def submit_stats_query(self, client: _Owner, timeout: float | None) -> CallT:
        """Ask for the broker's counters (``mmi.stats``); see :func:`broker_stats_of`."""
        return self.submit_mmi(client, _MMI_STATS, b"", timeout)

    def submit_model_put(
        self, client: _Owner, text: bytes, timeout: float | None
    ) -> tuple[str, CallT]:
        """Store a noise model in the broker (``nl.model.put``); returns its hash and call."""
        h = model_hash(text)
        array = np.frombuffer(text, dtype=np.uint8)
        return h, self.submit(client, _MODEL_PUT, {"hash": h}, (array,), timeout)

    def submit_model_get(self, client: _Owner, h: str, timeout: float | None) -> CallT:
        """Fetch the model stored under hash ``h`` (``nl.model.get``); see :func:`model_text_of`."""
        return self.submit(client, _MODEL_GET, {"hash": h}, (), timeout)

    def _send(self, call: CallT, frames: list[Frame]) -> CallT:
        sock = self.socket()
        if self.watch.pending():  # a drop before this send fails the calls sent before it
            self.check_link()
        else:
            self._settled_id = call.id - 1
        self.calls[call.id] = call
        send_frames(sock, frames)
        self._sent_id = call.id
        return call

    def look_at_link(self) -> None:
        """A waiter's look at the monitor: a drop is handled (:meth:`check_link`). With a
        stable routing id, no drop means every call sent so far reached the broker that
        is up now (a later drop that turns out a new broker has lost them). With CURVE a
        reset connection to the same broker can still carry a call sent just before its
        drop was seen, so there only a send settles the calls before it."""
        if self.watch.pending():
            self.check_link()
        elif self._stable_id:
            self._settled_id = self._sent_id

    # --- the connection to the broker --------------------------------------------------

    def check_link(self) -> bool:
        """Read the socket's monitor; True if the connection to the broker dropped since
        the last look. Then every call in flight through the broker has lost its reply
        (the broker that held it is gone): an idempotent one is sent again (ZeroMQ queues
        it until the connection is back), any other fails with
        :class:`~client.errors.BrokerLost` (a session's with
        :class:`~client.errors.SessionBrokerLost`). Calls on a lane are not touched."""
        drops, _ups = self.watch.take()
        if not drops:
            return False
        sock = self.socket()
        while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:  # what came before the drop
            self.deliver(recv_frames(sock, zmq.NOBLOCK, 4))
        probe, self._probe = self._probe, None
        if probe is not None:
            self.forget(probe)  # its answer went with the connection; ask again
        in_flight = list(self.calls.values())
        if not self._stable_id:
            # With CURVE the broker names each connection: replies to the old one are
            # lost whether or not the broker is new.
            self._broker_lost(in_flight)
            return True
        # A stable routing id: a broker that outlived the drop still routes the replies
        # here (ROUTER_HANDOVER); a new one has lost the requests. Ask which broker it
        # is (``mmi.instance``): the calls in flight wait for the answer.
        self._suspects.update((c.id, c) for c in in_flight)
        self._after_drop = True
        self._send_probe()
        return True

    def _send_probe(self) -> None:
        rid, frames = self.build_mmi(_MMI_INSTANCE, b"")
        self._probe = call = self._call_type(self.owner, rid, _MMI_INSTANCE, self.default_timeout)
        call.on_done = self._on_probe
        self.calls[call.id] = call
        send_frames(self.socket(), frames)

    def _on_probe(self, probe: Call) -> None:
        """The broker answered ``mmi.instance``. After a drop, a broker other than the one
        before it is new: the calls in flight at the drop have lost their replies."""
        if probe is not self._probe:
            return
        self._probe = None
        outcome = probe.outcome
        instance = None  # no answer, or an older broker without mmi.instance
        if isinstance(outcome, Message) and len(outcome.body) >= 2 and outcome.body[0] == MMI_OK:
            instance = bytes(outcome.body[1])
        before, self._instance = self._instance, instance
        suspects, self._suspects = self._suspects, {}
        after_drop, self._after_drop = self._after_drop, False
        if after_drop and (instance is None or instance != before):  # unknown: the worst
            self._broker_lost([c for c in suspects.values() if c.id in self.calls])

    def _broker_lost(self, in_flight: list[CallT]) -> None:
        """The broker's state is gone: re-send the idempotent calls, fail the others.

        A call sent after the last look at the monitor that found no drop may have gone
        on the new connection instead (ZeroMQ queues what the dead connection had not
        taken): it is not failed, and waits for its reply until its own timeout."""
        self.restarts += 1
        sock = self.socket()
        now = time.monotonic_ns()
        settled = self._settled_id
        for call in in_flight:
            frames = call.resend
            if frames is not None:
                if call.deadline_ns > now:  # past it, its wait raises RequestTimeout
                    send_frames(sock, frames)
                    self.resent += 1
                continue
            if call.id > settled:
                continue  # it may have gone on the new connection
            self.calls.pop(call.id, None)
            self.lost_in_flight += 1
            call._on_final(self._lost_error(call))

    def _lost_error(self, call: Call) -> BrokerLost:
        if call.session is not None:
            return SessionBrokerLost(self.endpoint, call.service, call.id, call.session)
        return BrokerLost(self.endpoint, call.service, call.id)

    # --- receiving ---------------------------------------------------------------------

    def decode(
        self, frames: list[Frame], received_ns: int = 0
    ) -> tuple[int, Message | RemoteError]:
        """Decode one reply into (request id, Message or the RemoteError to raise);
        ``received_ns`` is when it arrived (the Message's ``client_recv``)."""
        reply = parse_broker_reply(frames)
        body = reply.body
        if not body:
            raise ProtocolError("reply has no body")
        if reply.service.startswith(MMI_PREFIX):
            header = parse_header(body[-1])
            fields = [bytes(f) for f in body[:-1]]
            mmi = Header(id=header.id, kind=KIND_REPLY, body=fields)
            return header.id, Message(mmi, (), False)
        header = parse_header(body[0])
        if header.kind == KIND_ERROR and header.error is not None:
            e = header.error
            service = reply.service.decode(errors="replace")
            return header.id, remote_error(service, e.type, e.message, e.traceback)
        arrays = frames_to_arrays(header.arrays, body[1:], header.inline)
        hosts = read_hosts(body[0]) if self.trace else NO_HOSTS
        return header.id, Message(header, arrays, not reply.final, received_ns, hosts)

    def deliver(self, frames: list[Frame]) -> bool:
        """Decode one reply and hand it to its call: a PARTIAL to ``_on_partial``, a final
        reply or error to ``_on_final``, after which the call is no longer in flight. A
        reply for no call in flight is counted late, an undecodable one malformed. False
        only for the answer to the connection's own ``mmi.instance`` probe, which no
        caller waits for."""
        received_ns = time.monotonic_ns()
        try:
            rid, outcome = self.decode(frames, received_ns)
        except ProtocolError:
            self.malformed_replies += 1  # an undecodable reply cannot be matched: drop it
            return True
        if isinstance(outcome, Message) and outcome.partial:
            call = self.calls.get(rid)
            if call is None:
                self.late_replies += 1
            else:
                call._on_partial(outcome)
            return True
        done = self.calls.pop(rid, None)
        if done is None:
            self.late_replies += 1
            return True
        probe = done is self._probe
        done._on_final(outcome)
        return not probe

    def deliver_lanes(self) -> bool:
        """Hand every reply waiting on the client's lanes to its call; True if any. When
        none came, fail the calls of a lane whose worker has gone
        (``fail_if_worker_gone``): that error is delivered too."""
        got = False
        for lane in self.lanes:
            got = lane.deliver() or got
        if not got:
            for lane in self.lanes:
                got = lane.fail_if_worker_gone() or got
        return got

    def forget(self, call: Call) -> None:
        """Take ``call`` out of flight: a reply that comes for it later is counted late."""
        self.calls.pop(call.id, None)

    def timed_out(self, call: Call) -> RequestTimeout:
        """Forget ``call``, whose deadline has passed, and return the error to raise:
        :class:`BrokerUnreachable` for a service the broker answers itself."""
        self.forget(call)
        if answered_by_broker(call.service):
            return BrokerUnreachable(self.endpoint, call.service, call.id, call.timeout)
        return RequestTimeout(call.service, call.id, call.timeout)

    def close(self) -> None:
        """Close the socket and drop the ends of the sessions' lanes (their workers free
        them). Calls still in flight stay registered, and get no reply."""
        lanes, self.lanes = self.lanes, []
        for lane in lanes:
            lane.close()
        if self.sock is not None:
            self.watch.close()
            self.sock.close(linger=0)
            self.sock = None


class ClientBase(Generic[CallT]):
    """What :class:`~client.Client` and :class:`~client.AsyncClient` share: the endpoint,
    the :class:`Connection` under them, and what it counts. They differ only in how they
    wait."""

    def __init__(self, conn: Connection[CallT]) -> None:
        self.endpoint = conn.endpoint
        self._conn = conn
        conn.owner = self

    @property
    def spin_us(self) -> int:
        """How long a wait for a reply polls before it sleeps, in microseconds."""
        return self._conn.spin_ns // 1000

    @property
    def trace(self) -> bool:
        """Whether this client's requests ask for a trace: set it True, and the broker
        adds its timestamps to their replies, which :meth:`Message.trace
        <client.messages.Message.trace>` cuts into hops. Off by default: a traced reply
        costs the broker a header re-encode."""
        return self._conn.trace

    @trace.setter
    def trace(self, on: bool) -> None:
        self._conn.trace = bool(on)

    @property
    def late_replies(self) -> int:
        """Replies that arrived after their caller had timed out, and were dropped."""
        return self._conn.late_replies

    @property
    def malformed_replies(self) -> int:
        """Replies that could not be decoded, and were dropped."""
        return self._conn.malformed_replies

    def link_counts(self) -> dict[str, int]:
        """What this client saw of its broker (PROTOCOL.md §3.11): ``drops`` of the
        connection, ``restarts`` (the broker's state found gone after a drop), requests
        ``resent`` (declared idempotent) and ``lost_in_flight`` (failed with
        :class:`~client.errors.BrokerLost`)."""
        conn = self._conn
        return {
            "drops": conn.drops,
            "restarts": conn.restarts,
            "resent": conn.resent,
            "lost_in_flight": conn.lost_in_flight,
        }

    def __repr__(self) -> str:
        conn = self._conn
        state = "closed" if conn.sock is None else f"{len(conn.calls)} in flight"
        return f"{type(self).__name__}({self.endpoint!r}, {state})"


# --- reading the replies of the broker's own services ----------------------------------


def service_status(reply: Message) -> bool:
    """What an ``mmi.service`` reply says: does the service have workers?"""
    fields = reply.body
    if not fields:
        raise ProtocolError(f"{_MMI_SERVICE} replied without a status code")
    return bool(fields[0] == MMI_OK)


def broker_stats_of(reply: Message) -> dict[str, Any]:
    """The counters an ``mmi.stats`` reply carries."""
    fields = reply.body
    if len(fields) < 2 or fields[0] != MMI_OK:
        raise ProtocolError(f"{_MMI_STATS} replied {fields[:1]!r} and {len(fields)} frames")
    try:
        stats = msgpack.unpackb(fields[1])
    except (ValueError, TypeError) as exc:  # msgpack's errors are ValueErrors
        raise ProtocolError(f"{_MMI_STATS} replied with bad msgpack: {exc}") from exc
    if not isinstance(stats, dict):
        raise ProtocolError(f"{_MMI_STATS} replied {type(stats).__name__}, not a map")
    return stats


def model_text_of(reply: Message) -> bytes:
    """The model text an ``nl.model.get`` reply carries."""
    if len(reply.arrays) != 1:
        raise ProtocolError(f"nl.model.get replied with {len(reply.arrays)} arrays, not 1")
    return bytes(reply.arrays[0])
