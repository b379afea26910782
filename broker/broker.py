"""The Majordomo broker: one ROUTER, a plain poll loop, timers from one heap.

The hot path is: non-blocking receive, parse the envelope, hand the body frames on
unchanged (zero-copy for large frames). Heartbeats, worker expiry and request expiry are
entries in one heap ordered by due time (:mod:`broker.timers`), and the poll timeout is
the time until the head of that heap falls due. Nothing there runs once per message.
While messages come close together (a tight request loop), the broker polls for the next
one before it sleeps, which saves its kernel wake-up; how long is fitted to the gaps it
observes, and to its own handling time per message, at most ``spin_us``
(:mod:`client.wire.spin`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any, Final

import msgpack
import zmq

from broker.auth import BrokerAuth
from broker.config import BrokerConfig
from broker.endpoints import IpcClaim, check_exposure, ipc_path, owner_only_umask, resolve_group
from broker.errors import ModelRefused
from broker.model_store import ModelStore
from broker.registry import (
    DONE,
    ERROR,
    EXPIRED,
    IN_FLIGHT,
    LANE_OUTCOMES,
    LOST,
    MALFORMED_REASONS,
    OK,
    OUTCOMES,
    QUEUED,
    REDISPATCHED,
    REFUSED,
    CountsByService,
    LaneOpen,
    Request,
    Service,
    SessionEntry,
    WorkerEntry,
    is_error_reply,
)
from broker.timers import EXPIRE_REQUEST, EXPIRE_SESSION, EXPIRE_WORKER, HEARTBEAT, Timers
from client.wire import (
    C_FINAL,
    C_PARTIAL,
    EMPTY,
    ERR_BAD_MODEL,
    ERR_MALFORMED,
    ERR_NO_WORKER,
    ERR_QUEUE_FULL,
    ERR_SESSION_LOST,
    ERR_SHUTDOWN,
    ERR_TOO_LARGE,
    ERR_UNKNOWN_MODEL,
    ERR_UNKNOWN_SESSION,
    ERR_WORKER_LOST,
    KIND_ERROR,
    KIND_REPLY,
    MAX_FRAMES,
    MAX_MESSAGE_BYTES,
    MDPC01,
    MDPC02,
    MDPW01,
    MDPW02,
    MMI_INSTANCE,
    MMI_NOT_FOUND,
    MMI_NOT_IMPLEMENTED,
    MMI_OK,
    MMI_PREFIX,
    MMI_SERVICE,
    MMI_STATS,
    NL_MODEL_GET,
    NL_MODEL_PUT,
    NL_PREFIX,
    NL_SESSION,
    NL_SESSION_CLOSE,
    NL_SESSION_OPEN,
    PLAIN_PEER_HEARTBEAT_MS,
    W1_REQUEST,
    W_REQUEST,
    ArraySpec,
    ClientRequest,
    ErrorInfo,
    Frame,
    Header,
    ProtocolError,
    WorkerHeartbeat,
    WorkerReady,
    WorkerReply,
    array_spec,
    body_size,
    encode_client_reply,
    encode_header,
    encode_worker_disconnect,
    encode_worker_heartbeat,
    frames_to_arrays,
    parse_header,
    parse_peer_message,
)
from client.wire.header import KIND_LANE
from client.wire.lanes import IOX2, lane_refusal, lane_request, new_lane_name
from client.wire.spin import SpinPolicy
from client.wire.trace import stamp_reply
from client.wire.transport import configure, poll, poll_items, send_frames, spin_readable

log = logging.getLogger("nearloop.broker")

_RCVMORE: Final = zmq.RCVMORE
_MS: Final = 1_000_000
_LOG_EVERY: Final = 1000

CURVE_KEEPALIVE_IDLE_S: Final = 5
"""With CURVE, a tcp connection idle this long is probed by TCP keepalive (then every
second, three times): one whose peer is gone is closed, which frees its routing id for the
peer's next connection."""

TOKEN_FORMAT: Final = b"%016x"
"""The client address a worker's REQUEST carries: the broker's dispatch counter as 16
lowercase hex digits, fresh for every dispatch (PROTOCOL.md §2.5). It is printable, has no
NUL byte and is 16 bytes long (a 17th digit would take 2**64 dispatches), so peers that
keep the address as a C string, or that rewrite 17-byte frames starting with NUL and
33-byte frames starting with ``@`` (the zguide's C++ ``zmsg``), echo it intact."""


class Broker:
    """A Majordomo MDP/0.1 + MDP/0.2 broker on one ROUTER socket.

    >>> b = Broker(BrokerConfig(endpoints=("inproc://doc",)))
    >>> b.close()
    """

    def __init__(self, config: BrokerConfig, context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.instance = os.urandom(8).hex().encode()
        """This broker's instance id (``mmi.instance``): a restarted broker has a new one."""
        self._own_context = context is None
        self.context: zmq.Context[Any] = context or zmq.Context()
        sock: zmq.Socket[bytes] = self.context.socket(zmq.ROUTER)
        configure(sock, linger_ms=config.linger_ms)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A client whose connection drops and comes back keeps its identity (nearloop
        # clients set one): the new connection takes it over, and replies still reach it.
        # Not with CURVE: there a peer must not take over a connection of another key by
        # claiming its routing id (it would receive that peer's replies or requests), so a
        # second connection with an id in use is refused instead, and TCP keepalives free
        # the id of a connection that died without closing. (Not ZMTP heartbeats: with
        # them libzmq stops reporting mechanism mismatches to the socket monitor.)
        if config.curve_secret is None:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, CURVE_KEEPALIVE_IDLE_S)
            sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 1)
            sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)
        sock.setsockopt(zmq.SNDHWM, config.sndhwm)
        sock.setsockopt(zmq.RCVHWM, config.rcvhwm)
        self.socket = sock
        self._ipc_claims: list[IpcClaim] = []
        self.endpoints: list[str] = []
        self.services: dict[bytes, Service] = {}
        self.workers: dict[bytes, WorkerEntry] = {}
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "malformed",
                "oversized",
                "queue_full",
                "expired",
                "undeliverable",
                "stale_replies",
                "unknown_worker",
                "workers_registered",
                "workers_expired",
                "workers_disconnected",
                "redispatched",
                "worker_lost",
                "partials_dropped_v01",
                "internal_errors",
                "services_refused",
                "sessions_opened",
                "sessions_closed",
                "sessions_lost",
                "sessions_expired",
                "lanes_opened",
                "lanes_closed",
                "roles_refused",
            ),
            0,
        )
        self.malformed: dict[str, int] = dict.fromkeys(MALFORMED_REASONS, 0)
        """Malformed messages by reason (``stats["malformed"]`` is their sum)."""
        self.counts = CountsByService(config.max_services)
        """What became of each service's requests, and their latency (PROTOCOL.md §4.9)."""
        self.auth_refused: dict[str, int] = {}
        """Handshakes refused, by mechanism name (:mod:`broker.auth` fills it)."""
        self.auth: BrokerAuth | None = None
        """CURVE authentication, if the config gives the broker a secret key."""
        self._identity_frame: zmq.Frame | None = None  # the last message's, with CURVE on
        if config.curve_secret is not None:
            try:
                self.auth = BrokerAuth(
                    self.context, secret_file=config.curve_secret,
                    allow_clients=config.allow_clients, allow_workers=config.allow_workers,
                    refused=self.auth_refused,
                )  # fmt: skip
            except BaseException:
                self.close()
                raise
        self.models = ModelStore()
        self.sessions: dict[int, SessionEntry] = {}
        self._session_ids = itertools.count(1)
        self.timers = Timers()
        self._tokens = itertools.count(1)
        self._stopping = False
        self._plain_ttl_ns = (
            config.liveness * max(PLAIN_PEER_HEARTBEAT_MS, config.heartbeat_ms) * _MS
        )
        self.spin = SpinPolicy(config.spin_us)
        """Whether, and how long, the loop polls for its next message before sleeping."""
        from client.lane.host import host_identity  # reads /proc: not at import

        self.host = host_identity()
        """This broker's host identity (§3.10), which traced replies carry (§3.2.2)."""

    def bind(self) -> list[str]:
        """Bind every configured endpoint; returns them resolved (tcp port 0 gets its port).

        With CURVE the tcp endpoints are CURVE servers and the others NULL
        (:meth:`BrokerAuth.curve_server`). Raises :class:`~broker.endpoints.EndpointRefused`
        for a tcp endpoint off loopback without CURVE or ``insecure``, and
        :class:`~broker.endpoints.IpcPathTaken` for an ipc path a live process holds; ipc
        sockets get mode 0600, or 0660 and ``ipc_group`` (:mod:`broker.endpoints`).
        """
        config, auth, endpoints = self.config, self.auth, self.config.endpoints
        for ep in endpoints:
            check_exposure(ep, curve=auth is not None, insecure=config.insecure)
        gid = None if config.ipc_group is None else resolve_group(config.ipc_group)
        if auth is not None:
            auth.start()
            auth.watch(self.socket)
        # With CURVE, the NULL endpoints are bound first (see BrokerAuth.curve_server).
        order = sorted(
            range(len(endpoints)),
            key=lambda i: auth is not None and endpoints[i].startswith("tcp://"),
        )
        resolved: dict[int, str] = {}
        for i in order:
            if auth is not None and endpoints[i].startswith("tcp://"):
                auth.curve_server(self.socket)
            resolved[i] = self._bind_one(endpoints[i], gid)
        self.endpoints.extend(resolved[i] for i in range(len(endpoints)))
        return self.endpoints

    def _bind_one(self, ep: str, gid: int | None) -> str:
        path = ipc_path(ep)
        claim = None if path is None else IpcClaim.take(ep, path)
        try:
            with owner_only_umask():
                self.socket.bind(ep)
            if claim is not None:
                claim.bound(gid)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if claim is not None:
            self._ipc_claims.append(claim)
        return self.socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        """Ask the loop to finish; safe from a signal handler."""
        self._stopping = True

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        """Serve until :meth:`stop`; then tell every waiting client and worker, and return."""
        sock = self.socket
        recv = sock.recv
        # With CURVE the identity frame is kept as a zmq.Frame: it carries the User-Id.
        recv_first = recv if self.auth is None else self._recv_identity
        more = sock.getsockopt
        items = poll_items(sock)
        handle = self._handle
        monotonic_ns = time.monotonic_ns
        cap_ms = self.config.heartbeat_ms
        spin = self.spin
        record = spin.record
        done = 0  # when the last message's handling ended
        heap = self.timers.heap
        while not self._stopping:
            try:
                now = monotonic_ns()
                if heap and heap[0][0] <= now:
                    self._run_timers(now)
                caught = spin.spinning and spin_readable(sock, done + spin.window_ns)
                if not caught and not poll(items, self.timers.timeout_ms(now, cap_ms)):
                    continue
                # Envelope frames arrive as bytes, body frames as zmq.Frames, never copied.
                # The body starts at frame 4 after the identity for clients (MDPC02, command,
                # service) and at frame 5 for MDP/0.2 workers (MDPW02, command, address,
                # empty); the MDP/0.1 worker's extra leading empty frame leaves its
                # delimiter uncopied, which costs nothing.
                frames: list[Frame] = [recv_first(0)]
                while more(_RCVMORE):
                    n = len(frames)
                    frames.append(recv(0, copy=n < 5 or (n == 5 and frames[1] == MDPW02)))
                now = monotonic_ns()
                gap = now - done
                handle(frames, now)
                done = monotonic_ns()
                record(gap, done - now)
            except Exception:
                # A bug must not take down every loop this broker serves.
                self.stats["internal_errors"] += 1
                log.exception("internal error; the broker goes on")
        self._shutdown()

    def _recv_identity(self, flags: int) -> bytes:
        frame = self.socket.recv(flags, copy=False)
        self._identity_frame = frame
        return frame.bytes

    def _handle(self, frames: list[Frame], now: int) -> None:
        if len(frames) > MAX_FRAMES + 6:  # identity + the longest envelope (0.1 worker)
            self._malformed(
                frames, "too_many_frames", f"{len(frames)} frames, max {MAX_FRAMES + 6}"
            )
            return
        ident = frames[0]
        try:
            msg = parse_peer_message(frames[1:])
        except ProtocolError as exc:
            self._malformed(frames, _malformed_reason(frames), str(exc))
            return
        if isinstance(msg, ClientRequest):
            self._on_request(ident, msg, now)
            return
        w = self.workers.get(ident)
        if w is not None:
            w.last_seen_ns = now
        if isinstance(msg, WorkerReply):
            self._on_reply(ident, w, msg, now)
        elif isinstance(msg, WorkerHeartbeat):
            if w is None:
                self._unknown_worker(ident, msg.version)
            else:
                if msg.lanes_closed:
                    self._on_lanes_closed(w, msg.lanes_closed)
                if msg.lane_replies is not None:
                    self._on_lane_replies(w, msg.lane_replies)
        elif isinstance(msg, WorkerReady):
            self._on_ready(ident, w, msg, now)
        elif w is not None:  # WorkerDisconnect
            self.stats["workers_disconnected"] += 1
            self._remove_worker(w, now, send_disconnect=False, why="disconnected")

    # --- clients ---------------------------------------------------------------------

    def _on_request(self, ident: bytes, msg: ClientRequest, now: int) -> None:
        name = msg.service
        if name.startswith(MMI_PREFIX):
            self._on_mmi(ident, msg)
            return
        if name.startswith(NL_PREFIX):
            self._on_internal(ident, msg, now)
            return
        if self._too_large(ident, msg, name):
            return
        svc = self.services.get(name)
        if svc is None:
            if len(self.services) >= self.config.max_services:
                self.stats["services_refused"] += 1
                self.counts.of(name).outcomes[REFUSED] += 1
                self._error(
                    ident, msg.version, name, msg.body, ERR_NO_WORKER,
                    f"no such service and the broker holds {len(self.services)} already",
                )  # fmt: skip
                return
            svc = self.services[name] = Service(name, self.counts.of(name))
        req = Request(ident, msg.version, name, msg.body, now)
        if svc.waiting and not svc.n_queued:
            self._dispatch(svc, req, now)
            return
        if svc.n_queued >= self.config.max_queue:
            self.stats["queue_full"] += 1
            svc.counts.outcomes[REFUSED] += 1
            self._error(
                ident, msg.version, name, msg.body, ERR_QUEUE_FULL,
                f"queue of {svc.n_queued} requests is full",
            )  # fmt: skip
            return
        self._enqueue(svc, req, now)
        self._drain(svc, now)

    def _too_large(self, ident: bytes, msg: ClientRequest, service: bytes) -> bool:
        """Refuse, with an error reply, a request whose body exceeds MAX_MESSAGE_BYTES."""
        size = body_size(msg.body)
        if size <= MAX_MESSAGE_BYTES:
            return False
        self.stats["oversized"] += 1
        self.counts.of(service).outcomes[REFUSED] += 1
        self._error(
            ident, msg.version, service, msg.body, ERR_TOO_LARGE,
            f"request body of {size} bytes exceeds {MAX_MESSAGE_BYTES}",
        )  # fmt: skip
        return True

    def _enqueue(self, svc: Service, req: Request, now: int, *, front: bool = False) -> None:
        if not req.deadline_ns:
            req.deadline_ns = req.arrival_ns + self._ttl_ms(req.body) * _MS
        req.state = QUEUED
        svc.n_queued += 1
        if front:
            svc.queue.appendleft(req)
        else:
            svc.queue.append(req)
        self.timers.push(req.deadline_ns, EXPIRE_REQUEST, req)

    def _ttl_ms(self, body: list[Frame] | None) -> int:
        """The request's ttl_ms from its nearloop header, else the broker default."""
        if body:
            try:
                ttl = parse_header(body[0]).ttl_ms
            except ProtocolError:
                ttl = None
            if ttl is not None:
                return min(ttl, self.config.max_ttl_ms)
        return self.config.request_ttl_ms

    def _dispatch(self, svc: Service, req: Request, now: int) -> None:
        self._send_request(svc.take_worker(), req, now)

    def _send_request(self, w: WorkerEntry, req: Request, now: int) -> None:
        """Hand ``req`` to ``w``, whose credit the caller has already taken."""
        token = TOKEN_FORMAT % next(self._tokens)
        w.inflight[token] = req
        req.state = IN_FLIGHT
        req.attempts += 1
        body = req.body or []
        if w.version == 2:
            frames = [w.identity, MDPW02, W_REQUEST, token, EMPTY, *body]
        else:
            frames = [w.identity, EMPTY, MDPW01, W1_REQUEST, token, EMPTY, *body]
        if req.traced:
            req.forwarded_ns = time.monotonic_ns()
        if not self._send(frames):
            # The worker is gone (ROUTER_MANDATORY told us): re-dispatch what it held.
            self._remove_worker(w, now, send_disconnect=False, why="could not be sent to")

    def _drain(self, svc: Service, now: int) -> None:
        while svc.waiting and svc.n_queued:
            req = svc.next_queued()
            if req is None:
                break
            self._dispatch(svc, req, now)

    def _on_mmi(self, ident: bytes, msg: ClientRequest) -> None:
        body = msg.body
        echo = body[1:]
        if msg.service == MMI_SERVICE:
            svc = self.services.get(bytes(body[0])) if body else None
            status = MMI_OK if svc is not None and svc.workers else MMI_NOT_FOUND
            reply: list[Frame] = [status, *echo]
        elif msg.service == MMI_STATS:
            reply = [MMI_OK, msgpack.packb(self.snapshot()), *echo]
        elif msg.service == MMI_INSTANCE:
            reply = [MMI_OK, self.instance, *echo]
        else:
            reply = [MMI_NOT_IMPLEMENTED, *echo]
        self._send([ident, *encode_client_reply(msg.version, True, msg.service, reply)])

    def _on_internal(self, ident: bytes, msg: ClientRequest, now: int) -> None:
        """nearloop's own services: the model store and sessions."""
        body = msg.body
        name = msg.service
        try:
            header = parse_header(body[0]) if body else None
        except ProtocolError as exc:
            self.stats["malformed"] += 1
            self.malformed["bad_request"] += 1
            self._error(ident, msg.version, name, [], ERR_MALFORMED, f"header: {exc}")
            return
        if header is None:
            why = f"{name.decode()} needs a nearloop header frame"
            self._error(ident, msg.version, name, body, ERR_MALFORMED, why)
            return
        if name == NL_SESSION:
            self._on_session_request(ident, msg, header, now)
        elif name in (NL_MODEL_PUT, NL_MODEL_GET):
            self._on_model(ident, msg, header)
        elif name == NL_SESSION_OPEN:
            self._open_session(ident, msg, header, now)
        elif name == NL_SESSION_CLOSE:
            self._close_session(ident, msg, header)
        else:
            why = f"no nearloop service {name.decode(errors='replace')!r}"
            self._error(ident, msg.version, name, body, ERR_NO_WORKER, why)

    def _reply(
        self,
        ident: bytes,
        msg: ClientRequest,
        header: Header,
        result: dict[str, Any],
        frames: tuple[Frame, ...] = (),
        specs: tuple[ArraySpec, ...] = (),
    ) -> None:
        """Answer a request to one of the broker's own services."""
        hdr = encode_header(id=header.id, kind=KIND_REPLY, arrays=specs, body=result)
        self._send([ident, *encode_client_reply(msg.version, True, msg.service, [hdr, *frames])])

    def _on_model(self, ident: bytes, msg: ClientRequest, header: Header) -> None:
        body = msg.body
        arg = header.body
        h = arg.get("hash") if isinstance(arg, dict) else None
        if not isinstance(h, str):
            why = f"{msg.service.decode()} needs a header whose body is {{'hash': str}}"
            self._error(ident, msg.version, msg.service, body, ERR_MALFORMED, why)
            return
        if msg.service == NL_MODEL_PUT:
            text = _model_text(header, body)
            if text is None:
                why = "nl.model.put takes one array of model text: uint8, one dimension"
                self._error(ident, msg.version, msg.service, body, ERR_BAD_MODEL, why)
                return
            try:
                self.models.put(h, text)
            except ModelRefused as exc:
                self._error(ident, msg.version, msg.service, body, ERR_BAD_MODEL, str(exc))
                return
            self._reply(ident, msg, header, {"hash": h, "bytes": len(text)})
            return
        text = self.models.get(h)
        if text is None:
            why = f"the broker holds no model {h[:80]!r}: register it with nl.model.put"
            self._error(ident, msg.version, msg.service, body, ERR_UNKNOWN_MODEL, why)
            return
        spec = array_spec("|u1", (len(text),))
        self._reply(ident, msg, header, {"hash": h, "bytes": len(text)}, (text,), (spec,))

    # --- sessions --------------------------------------------------------------------

    def _open_session(self, ident: bytes, msg: ClientRequest, header: Header, now: int) -> None:
        """Pin a new session to the worker of the service that holds the fewest sessions;
        give it a lane if the client asks and the worker shares its host (§3.10)."""
        arg = header.body
        name = arg.get("service") if isinstance(arg, dict) else None
        if not isinstance(name, str):
            why = "nl.session.open needs a header whose body is {'service': str}"
            self._error(ident, msg.version, msg.service, msg.body, ERR_MALFORMED, why)
            return
        if len(self.sessions) >= self.config.max_sessions:
            why = (
                f"the broker holds {len(self.sessions)} sessions, its maximum "
                "(--max-sessions): close sessions you no longer use"
            )
            self._error(ident, msg.version, msg.service, msg.body, ERR_QUEUE_FULL, why)
            return
        svc = self.services.get(name.encode())
        candidates = [w for w in self.workers.values() if w.service is svc]
        if not candidates:
            why = f"no worker of service {name[:255]!r} to pin a session to"
            self._error(ident, msg.version, msg.service, msg.body, ERR_NO_WORKER, why)
            return
        lane = lane_request(arg)
        if lane is not None:  # prefer a worker that can serve the lane
            candidates = [w for w in candidates if lane_refusal(w.options, lane) is None] or (
                candidates
            )
        w = min(candidates, key=lambda c: (len(c.sessions), -c.free))
        sess = SessionEntry(next(self._session_ids), ident, w, now)
        self.sessions[sess.id] = w.sessions[sess.id] = sess
        self.stats["sessions_opened"] += 1
        due = now + self.config.session_idle_ms * _MS
        self.timers.push(due, EXPIRE_SESSION, sess)
        result: dict[str, object] = {
            "session": sess.id,
            "service": name,
            "worker": w.identity.hex(),
        }
        if lane is None:
            self._reply(ident, msg, header, result)
            return
        refusal = lane_refusal(w.options, lane)
        if refusal is not None:
            result["lane"] = None
            result["lane_refused"] = f"worker {w.identity.hex()} {refusal}"
            self._reply(ident, msg, header, result)
            return
        # The worker makes the lane; its answer completes this open (_on_lane_opened).
        lane_name = new_lane_name()
        result["lane"] = lane_name
        body = encode_header(
            id=header.id,
            kind=KIND_LANE,
            session=sess.id,
            body={"op": "open", "name": lane_name, "transport": IOX2},
        )
        req = Request(ident, msg.version, sess.service, [body], now)
        req.session = sess
        req.lane_open = LaneOpen(msg.version, msg.service, header.id, result)
        sess.inflight += 1
        if w.free and not w.pinned:
            w.service.take_credit(w)
            self._send_request(w, req, now)
        else:
            w.pinned.append(req)

    def _on_lane_opened(self, req: Request, open_: LaneOpen, body: list[Frame]) -> None:
        """The worker answered a lane's creation: answer the client's ``nl.session.open``,
        with the lane, or with why there is none."""
        sess = req.session
        result = open_.result
        try:
            reply = parse_header(body[0]) if body else None
        except ProtocolError:
            reply = None
        if reply is None or reply.kind != KIND_REPLY:
            why = reply.error.message if reply is not None and reply.error else "no answer"
            result["lane_refused"] = f"the worker could not make the lane: {why}"[:500]
            result["lane"] = None
        elif sess is not None:
            sess.lane = str(result["lane"])
            self.stats["lanes_opened"] += 1
        hdr = encode_header(id=open_.header_id, kind=KIND_REPLY, body=result)
        frames = encode_client_reply(open_.version, True, open_.service, [hdr])
        self._send([req.client, *frames])

    def _on_lanes_closed(self, w: WorkerEntry, sids: tuple[int, ...]) -> None:
        """The worker freed these sessions' lanes (their clients closed them or died)."""
        for sid in sids:
            sess = w.sessions.get(sid)
            if sess is not None and sess.lane is not None:
                self._forget_session(sess)

    def _on_lane_replies(self, w: WorkerEntry, told: tuple[int, int]) -> None:
        """Count the lane replies ``w`` sent since its last report; a report that went
        back (it cannot, from a nearloop worker) is taken as the new start."""
        ok, error = told
        seen_ok, seen_error = w.lane_replies
        counts = w.service.counts.lane_outcomes
        counts[0] += max(0, ok - seen_ok)
        counts[1] += max(0, error - seen_error)
        w.lane_replies = told

    def _close_session(self, ident: bytes, msg: ClientRequest, header: Header) -> None:
        arg = header.body
        sid = arg.get("session") if isinstance(arg, dict) else None
        if type(sid) is not int:
            why = "nl.session.close needs a header whose body is {'session': int}"
            self._error(ident, msg.version, msg.service, msg.body, ERR_MALFORMED, why)
            return
        sess = self._session_of(ident, msg, sid)
        if sess is not None:
            self._forget_session(sess)
            self.stats["sessions_closed"] += 1
            self._reply(ident, msg, header, {"session": sid})

    def _session_of(self, ident: bytes, msg: ClientRequest, sid: int) -> SessionEntry | None:
        """The client's session ``sid``, or None once the client has its error reply."""
        sess = self.sessions.get(sid)
        if sess is None or sess.client != ident:
            why = (
                f"no session {sid} for this client: never opened, closed, or idle for more "
                f"than {self.config.session_idle_ms} ms"
            )
            self._error(ident, msg.version, msg.service, msg.body, ERR_UNKNOWN_SESSION, why)
            return None
        return sess

    def _on_session_request(
        self, ident: bytes, msg: ClientRequest, header: Header, now: int
    ) -> None:
        """Send the request to the session's worker, or queue it there for its credit."""
        if header.session is None:
            self.counts.of(NL_SESSION).outcomes[REFUSED] += 1
            why = "a request to nl.session needs the header's session field"
            self._error(ident, msg.version, msg.service, msg.body, ERR_MALFORMED, why)
            return
        sess = self._session_of(ident, msg, header.session)
        if sess is None:
            self.counts.of(NL_SESSION).outcomes[REFUSED] += 1
            return
        if sess.lost is not None:
            self.counts.of(sess.service).outcomes[LOST] += 1
            self._error(
                ident, msg.version, sess.service, msg.body, ERR_SESSION_LOST,
                _lost_text(sess),
            )  # fmt: skip
            return
        if self._too_large(ident, msg, sess.service):
            return
        w = sess.worker
        if len(w.pinned) >= self.config.max_queue:
            self.stats["queue_full"] += 1
            w.service.counts.outcomes[REFUSED] += 1
            self._error(
                ident, msg.version, sess.service, msg.body, ERR_QUEUE_FULL,
                f"{len(w.pinned)} session requests already wait for this session's worker",
            )  # fmt: skip
            return
        req = Request(ident, msg.version, sess.service, msg.body, now)
        req.session = sess
        sess.inflight += 1
        sess.last_used_ns = now
        if w.free and not w.pinned:
            w.service.take_credit(w)
            self._send_request(w, req, now)
        else:
            w.pinned.append(req)

    def _forget_session(self, sess: SessionEntry) -> None:
        if sess.lane is not None:  # closed by its client, freed by its worker, or lost
            sess.lane = None
            self.stats["lanes_closed"] += 1
        self.sessions.pop(sess.id, None)
        sess.worker.sessions.pop(sess.id, None)

    def _lose(self, req: Request, sess: SessionEntry) -> None:
        """Fail a request of a session whose worker is gone: its state went with it."""
        if req.lane_open is None:
            self.counts.of(sess.service).outcomes[LOST] += 1
        req.state = DONE
        sess.inflight -= 1
        self._fail(req, ERR_SESSION_LOST, _lost_text(sess))
        req.body = None

    def snapshot(self) -> dict[str, Any]:
        """Counters and registry sizes, as ``mmi.stats`` returns them."""
        return {
            **self.stats,
            "workers": len(self.workers),
            "models": len(self.models),
            "sessions": len(self.sessions),
            "model_bytes": self.models.nbytes,
            "auth_refused": dict(self.auth_refused),
            **(self.auth.snapshot() if self.auth is not None else {}),
            "services": {
                s.name.decode(): {"workers": s.workers, "queued": s.n_queued}
                for s in self.services.values()
            },
            "requests": {
                name.decode(): dict(zip(OUTCOMES, c.outcomes, strict=True))
                for name, c in self.counts.by_name.items()
            },
            "lane_requests": {
                name.decode(): dict(zip(LANE_OUTCOMES, c.lane_outcomes, strict=True))
                for name, c in self.counts.by_name.items()
                if any(c.lane_outcomes)
            },
        }

    # --- workers ---------------------------------------------------------------------

    def _on_ready(self, ident: bytes, w: WorkerEntry | None, msg: WorkerReady, now: int) -> None:
        if w is not None:  # a second READY is a protocol violation (RFC 18)
            self._remove_worker(w, now, send_disconnect=True, why="sent a second READY")
            return
        if self.auth is not None and self._identity_frame is not None:
            key = self.auth.refuses_ready(self._identity_frame, msg.service)
            if key is not None:
                self.stats["roles_refused"] += 1
                if self.auth.first_refusal(key):
                    log.warning(
                        "key %s may not serve %r: READY refused with DISCONNECT",
                        key.decode(), msg.service.decode(errors="replace"),
                    )  # fmt: skip
                self._send([ident, *encode_worker_disconnect(msg.version)])
                return
        if msg.service.startswith((MMI_PREFIX, NL_PREFIX)):
            why = "workers may not register mmi.* or nl.* services"
            self._malformed([ident], "reserved_service", why)
            self._send([ident, *encode_worker_disconnect(msg.version)])
            return
        svc = self.services.get(msg.service)
        if svc is None:
            if len(self.services) >= self.config.max_services:
                self.stats["services_refused"] += 1
                self._malformed([ident], "too_many_services", "too many services")
                self._send([ident, *encode_worker_disconnect(msg.version)])
                return
            svc = self.services[msg.service] = Service(msg.service, self.counts.of(msg.service))
        opts = msg.options
        if opts.declared:
            hb_ns = opts.heartbeat_ms * _MS
            ttl_ns = opts.liveness * hb_ns
        else:
            hb_ns = self.config.heartbeat_ms * _MS
            ttl_ns = self._plain_ttl_ns
        w = WorkerEntry(ident, msg.version, svc, opts, hb_ns, ttl_ns, now)
        self.workers[ident] = w
        svc.workers += 1
        w.waiting = True
        svc.waiting.append(w)
        self.stats["workers_registered"] += 1
        # An immediate HEARTBEAT tells the worker that a broker took its READY (a ZeroMQ
        # send succeeds with no peer at all); RFC 18 allows one at any time.
        self._send([ident, *encode_worker_heartbeat(msg.version)])
        self.timers.push(now + hb_ns, HEARTBEAT, w)
        self.timers.push(now + ttl_ns, EXPIRE_WORKER, w)
        log.info("worker registered: %r", w)
        self._drain(svc, now)

    def _on_reply(self, ident: bytes, w: WorkerEntry | None, msg: WorkerReply, now: int) -> None:
        if w is None:
            self._unknown_worker(ident, msg.version)
            return
        final = msg.final
        req = w.inflight.pop(msg.address, None) if final else w.inflight.get(msg.address)
        if req is None:
            self.stats["stale_replies"] += 1
            return
        body = msg.body
        if req.traced and body:
            body = _stamped(req, w, body, now, self.host)
        if req.lane_open is not None:
            if final:
                self._on_lane_opened(req, req.lane_open, body)
        elif req.version == 2:
            self._send([req.client, MDPC02, C_FINAL if final else C_PARTIAL, req.service, *body])
        elif final:
            self._send([req.client, EMPTY, MDPC01, req.service, *body])
        else:
            self.stats["partials_dropped_v01"] += 1  # MDP/0.1 clients take exactly one reply
        if final:
            if req.lane_open is None:
                counts = w.service.counts
                counts.latency.observe(time.monotonic_ns() - req.arrival_ns)
                counts.outcomes[ERROR if is_error_reply(msg.body) else OK] += 1
            req.state = DONE
            req.body = None
            if req.session is not None:
                req.session.inflight -= 1
            if w.pinned:  # the freed slot goes straight to a session request waiting for it
                self._send_request(w, w.pinned.popleft(), now)
                return
            svc = w.service
            svc.give_credit(w)
            if svc.n_queued:
                self._drain(svc, now)

    def _unknown_worker(self, ident: bytes, version: int) -> None:
        # RFC 18: a valid but unexpected command gets DISCONNECT, so the worker re-registers.
        self.stats["unknown_worker"] += 1
        self._send([ident, *encode_worker_disconnect(version)])

    def _remove_worker(self, w: WorkerEntry, now: int, *, send_disconnect: bool, why: str) -> None:
        """Forget ``w``: re-queue what it held, and fail its sessions (``why`` says what
        happened to it)."""
        if not w.alive:
            return
        w.alive = False
        self.workers.pop(w.identity, None)
        svc = w.service
        svc.workers -= 1
        if w.waiting:
            svc.waiting.remove(w)
            w.waiting = False
        if send_disconnect:
            self._send([w.identity, *encode_worker_disconnect(w.version)])
        held = list(w.inflight.values())
        w.inflight.clear()
        for sess in w.sessions.values():
            sess.lost = f"worker {w.identity.hex()} of service {svc.name.decode()!r} {why}"
            self.stats["sessions_lost"] += 1
        w.sessions.clear()  # lost sessions stay known, so their requests get session_lost
        pinned = list(w.pinned)
        w.pinned.clear()
        for req in pinned:
            if req.session is not None:
                self._lose(req, req.session)
        # Oldest first, at the front of the queue: they were accepted before anything queued.
        for req in reversed(held):
            if req.session is not None:  # its state lived on this worker: never re-sent
                self._lose(req, req.session)
                continue
            if req.attempts > self.config.max_redispatch:
                self.stats["worker_lost"] += 1
                svc.counts.outcomes[LOST] += 1
                req.state = DONE
                self._fail(
                    req, ERR_WORKER_LOST, f"{req.attempts} workers died holding this request"
                )
                continue
            self.stats["redispatched"] += 1
            svc.counts.outcomes[REDISPATCHED] += 1
            self._enqueue(svc, req, now, front=True)
        if held:
            log.warning("worker %s lost holding %d request(s)", w.identity.hex(), len(held))
        self._drain(svc, now)
        self._forget_if_idle(svc)

    def _forget_if_idle(self, svc: Service) -> None:
        """Drop a service with no workers and nothing queued, so names cannot pile up."""
        if not svc.workers and not svc.n_queued and self.services.get(svc.name) is svc:
            del self.services[svc.name]

    # --- timers ----------------------------------------------------------------------

    def _run_timers(self, now: int) -> None:
        timers = self.timers
        for kind, obj in timers.pop_due(now):
            if kind == EXPIRE_REQUEST:
                req: Request = obj
                if req.state == QUEUED:
                    self._expire_request(req)
            elif kind == EXPIRE_SESSION:
                self._expire_session(obj, now)
            elif kind == HEARTBEAT:
                w: WorkerEntry = obj
                if w.alive:
                    self._send([w.identity, *encode_worker_heartbeat(w.version)])
                    timers.push(now + w.heartbeat_ns, HEARTBEAT, w)
            else:
                w = obj
                if not w.alive:
                    continue
                expiry = w.last_seen_ns + w.ttl_ns
                if expiry > now:
                    timers.push(expiry, EXPIRE_WORKER, w)
                else:
                    self.stats["workers_expired"] += 1
                    log.warning("worker %r missed its heartbeats; removing it", w)
                    self._remove_worker(w, now, send_disconnect=True, why="missed its heartbeats")

    def _expire_session(self, sess: SessionEntry, now: int) -> None:
        if self.sessions.get(sess.id) is not sess:
            return  # closed already
        idle_ns = self.config.session_idle_ms * _MS
        if sess.lane is not None and sess.lost is None:
            # Its requests bypass the broker; its worker reports when the lane closes.
            self.timers.push(now + idle_ns, EXPIRE_SESSION, sess)
            return
        due = now + idle_ns if sess.inflight else sess.last_used_ns + idle_ns
        if due > now:
            self.timers.push(due, EXPIRE_SESSION, sess)
            return
        self._forget_session(sess)
        self.stats["sessions_expired"] += 1
        log.info("session %d expired after %d ms idle", sess.id, self.config.session_idle_ms)

    def _expire_request(self, req: Request) -> None:
        svc = self.services[req.service]
        req.state = DONE
        svc.n_queued -= 1
        svc.compact()
        self._forget_if_idle(svc)
        self.stats["expired"] += 1
        svc.counts.outcomes[EXPIRED] += 1
        self._fail(
            req, ERR_NO_WORKER,
            f"no worker of service {req.service.decode()!r} took the request within its deadline",
        )  # fmt: skip
        req.body = None

    # --- errors and sending ----------------------------------------------------------

    def _fail(self, req: Request, err_type: str, message: str) -> None:
        """Send ``req``'s client an error reply (:meth:`_error`) in place of its answer."""
        self._error(req.client, req.version, req.service, req.body or [], err_type, message)

    def _error(
        self,
        client: bytes,
        version: int,
        service: bytes,
        body: list[Frame],
        err_type: str,
        message: str,
    ) -> None:
        """Send an error reply: a FINAL whose body is one nearloop error header."""
        rid = 0
        if body:
            try:
                rid = parse_header(body[0]).id
            except ProtocolError:
                rid = 0
        hdr = encode_header(id=rid, kind=KIND_ERROR, error=ErrorInfo(err_type, message))
        self._send([client, *encode_client_reply(version, True, service, [hdr])])

    def _malformed(self, frames: list[Frame], reason: str, why: str) -> None:
        """Count and log a malformed message (``reason``: one of MALFORMED_REASONS; ``why``
        goes to the log and the error reply), and answer it if it looks like a request."""
        self.malformed[reason] += 1
        n = self.stats["malformed"] = self.stats["malformed"] + 1
        if n <= 10 or n % _LOG_EVERY == 0:
            log.warning("malformed message #%d dropped: %s", n, why)
        # Reply where a reply can be addressed: something that looks like a client request.
        if len(frames) >= 4:
            if frames[1] == MDPC02:
                self._send(self._error_frames(frames[0], 2, frames[3], why))
            elif frames[1] == EMPTY and len(frames) >= 4 and frames[2] == MDPC01:
                self._send(self._error_frames(frames[0], 1, frames[3], why))

    @staticmethod
    def _error_frames(client: bytes, version: int, service: Frame, why: str) -> list[Frame]:
        hdr = encode_header(id=0, kind=KIND_ERROR, error=ErrorInfo(ERR_MALFORMED, why))
        return [client, *encode_client_reply(version, True, bytes(service)[:255] or b"?", [hdr])]

    def _send(self, frames: list[Frame]) -> bool:
        try:
            send_frames(self.socket, frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            level, why = logging.WARNING, "is not reading (HWM reached)"
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            level, why = logging.INFO, "is gone"
        n = self.stats["undeliverable"] = self.stats["undeliverable"] + 1
        if n <= 10 or n % _LOG_EVERY == 0:
            log.log(level, "peer %s %s; message dropped", _hex(frames), why)
        return False

    # --- shutdown --------------------------------------------------------------------

    def _shutdown(self) -> None:
        pending = 0
        for w in list(self.workers.values()):
            for req in w.inflight.values():
                pending += 1
                self._fail(
                    req, ERR_SHUTDOWN, "the broker shut down while a worker held this request"
                )
            w.inflight.clear()
            for req in w.pinned:
                pending += 1
                self._fail(
                    req, ERR_SHUTDOWN,
                    "the broker shut down while this session request waited for its worker",
                )  # fmt: skip
            w.pinned.clear()
            self._send([w.identity, *encode_worker_disconnect(w.version)])
        for svc in self.services.values():
            while (queued := svc.next_queued()) is not None:
                pending += 1
                self._fail(
                    queued, ERR_SHUTDOWN, "the broker shut down while this request was queued"
                )
        log.info("broker stopped; %d pending request(s) answered with %s", pending, ERR_SHUTDOWN)

    def close(self) -> None:
        """Close the socket (and the context if the broker made it); remove its ipc socket
        files and their locks."""
        if self.auth is not None:
            self.auth.close(self.socket)
        self.socket.close()
        if self._own_context:
            self.context.term()
        while self._ipc_claims:
            self._ipc_claims.pop().release()


def _model_text(header: Header, body: list[Frame]) -> bytes | None:
    """The model text an ``nl.model.put`` carries (inline if short, else as a frame), or
    None if it carries anything but one 1-d uint8 array."""
    if len(header.arrays) != 1 or header.arrays[0].dtype != "|u1":
        return None
    if len(header.arrays[0].shape) != 1:
        return None
    try:
        (text,) = frames_to_arrays(header.arrays, body[1:], header.inline)
    except ProtocolError:
        return None
    return bytes(text.data)


def _malformed_reason(frames: list[Frame]) -> str:
    """The MALFORMED_REASONS entry for a message (identity first) that did not parse."""
    first = frames[1] if len(frames) > 1 else b""
    if first == EMPTY and len(frames) > 2:
        first = frames[2]  # MDP/0.1 starts with an empty frame
    if first in (MDPC01, MDPC02):
        return "bad_request"
    if first in (MDPW01, MDPW02):
        return "bad_worker_command"
    return "not_mdp"


def _stamped(req: Request, w: WorkerEntry, body: list[Frame], now: int, host: str) -> list[Frame]:
    """A traced request's reply with the broker's stamps in its header (unchanged if that
    is not a nearloop header)."""
    header = stamp_reply(
        body[0],
        recv_ns=req.arrival_ns,
        fwd_ns=req.forwarded_ns,
        reply_recv_ns=now,
        broker_host=host,
        worker_host=w.options.host,
        clock=time.monotonic_ns,
    )
    return body if header is None else [header, *body[1:]]


def _lost_text(sess: SessionEntry) -> str:
    return f"session {sess.id}: {sess.lost}; the session's state went with it: open a new session"


def _hex(frames: list[Frame]) -> str:
    return bytes(frames[0]).hex() if frames else "?"
