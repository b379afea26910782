"""Handler-based MDP/0.2 :class:`Worker`: credit, heartbeats, reconnect with bounded backoff.

:class:`WorkerState` turns a REQUEST into the reply frames and knows nothing of sockets,
so tests can step it in-process; :class:`Worker` is the plumbing around it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import zmq

from client.errors import ProtocolError, RemoteError
from client.lane.support import lane_support_missing
from client.link import LinkWatch
from client.messages import Message, Payload
from client.wire import (
    DEFAULT_HEARTBEAT_MS,
    DEFAULT_LIVENESS,
    ERR_MALFORMED,
    ERR_WORKER,
    KIND_ERROR,
    KIND_REPLY,
    BrokerDisconnect,
    BrokerRequest,
    ErrorInfo,
    Frame,
    Header,
    WorkerOptions,
    arrays_to_frames,
    check_body_size,
    encode_header,
    encode_worker_disconnect,
    encode_worker_heartbeat,
    encode_worker_ready,
    encode_worker_reply,
    frames_to_arrays,
    parse_broker_to_worker,
    parse_header,
)
from client.wire.curve import CurveSpec, load_curve
from client.wire.header import KIND_LANE
from client.wire.lanes import IOX2, is_lane_name
from client.wire.transport import (
    connect_dealer,
    poll,
    poll_items,
    recv_by,
    recv_frames,
    send_frames,
    wait_readable,
    yield_cpu,
)

if TYPE_CHECKING:
    from client.lane.hub import LaneHub
    from client.lane.worker_end import LaneRequest

log = logging.getLogger("nearloop.worker")

Handler = Callable[[Message], Any]
"""Takes the request; returns a :class:`Payload`, a numpy array, or a msgpack-able body."""

BatchHandler = Callable[[list[Message]], Sequence[Any]]
"""Takes several requests; returns one result (as a :data:`Handler` would) or one
exception per request, in order."""

_MS = 1_000_000
_POLLIN: Final = int(zmq.POLLIN)
_EVENTS: Final = int(zmq.EVENTS)
DROPPED: Final = "the connection to the broker dropped"
"""Why a connection ended when its socket monitor saw it drop (a broker restart)."""
DEFAULT_LANE_SPIN_US: Final = 1000
"""After a lane request, a worker polls its lanes this long before it sleeps."""
BATCH_SPIN_MAX_US: Final = 1000
"""A batch's wait for more requests polls without sleeping for up to this long: on a VM,
a 50 µs sleep in the kernel costs ~170 µs (timer slack, then an idle vCPU's wake-up)."""


class Reply(NamedTuple):
    """A reply the worker sends: to a broker REQUEST or a lane's request, PARTIAL or FINAL,
    and its body frames (header, arrays)."""

    to: BrokerRequest | LaneRequest
    final: bool
    body: list[Frame]
    error: bool = False
    """An error reply (the handler raised, or the request could not be read)."""

    def frames(self) -> list[Frame]:
        """The PARTIAL or FINAL a broker REQUEST gets (without the identity frame)."""
        to = self.to
        if not isinstance(to, BrokerRequest):
            raise TypeError("a lane's reply goes on its lane, not to the broker")
        return encode_worker_reply(to.version, self.final, to.address, self.body)


_LANE_SERVED, _LANE_READABLE, _LANE_DUE, _LANE_SPIN = range(4)


def _one(message: Message) -> int:
    return 1


def _no_handler(message: Message) -> Any:
    raise RuntimeError("this worker serves batches only")


class DeferredReply:
    """The reply to a request that the worker answers later: PARTIALs, then one FINAL.

    A handler gets one from :meth:`WorkerState.defer` and returns it; the request then
    keeps its credit slot until :meth:`finish` or :meth:`fail`. Use it on the worker's
    thread only (handlers and the ``idle`` callback run there): what it builds is sent
    when the handler or the callback returns. After a reconnect the broker no longer
    knows the request, so a reply built for an earlier connection is dropped and
    :attr:`open` turns False.
    """

    __slots__ = ("_connection", "_message", "_recv_ns", "_req", "_state", "done", "partials")

    def __init__(
        self, state: WorkerState, req: BrokerRequest | LaneRequest, message: Message, recv_ns: int
    ) -> None:
        self._state = state
        self._req = req
        self._message = message
        self._recv_ns = recv_ns
        self._connection = state.connection
        self.done = False
        self.partials = 0
        """PARTIAL replies sent so far."""

    @property
    def message(self) -> Message:
        """The request being answered."""
        return self._message

    @property
    def open(self) -> bool:
        """True until the FINAL is sent or what it came on has ended: the connection to
        the broker, or for a lane's request, the lane."""
        req = self._req
        if isinstance(req, BrokerRequest):
            return not self.done and self._connection == self._state.connection
        return not self.done and not req.lane.closed

    def partial(self, result: Any) -> bool:
        """Queue a PARTIAL reply (a result as a handler returns one); False if not open."""
        if not self.open:
            return False
        self.partials += 1
        return self._queue(
            self._state.reply(self._req, self._message, result, self._recv_ns, final=False)
        )

    def finish(self, result: Any) -> bool:
        """Queue the FINAL reply; False if not open."""
        if not self.open:
            return False
        self.done = True
        return self._queue(self._state.reply(self._req, self._message, result, self._recv_ns))

    def fail(self, exc: BaseException) -> bool:
        """Queue an error FINAL, as if a handler had raised ``exc``; False if not open."""
        if not self.open:
            return False
        self.done = True
        return self._queue(self._state._failure(self._req, self._message, exc))

    def _queue(self, reply: Reply) -> bool:
        self._state.outbox.append(reply)
        return True

    def __repr__(self) -> str:
        state = "done" if self.done else ("open" if self.open else "stale")
        return f"DeferredReply(id={self._message.id}, {state}, partials={self.partials})"


class WorkerState:
    """Runs the handler on requests and builds the FINAL replies. No I/O.

    A handler exception becomes an error reply that carries its text and traceback; the
    worker keeps serving. A :class:`~client.errors.RemoteError` (any subclass, say
    :class:`~client.errors.BadBlock`) is a refusal the handler means to send: its
    ``type`` goes on the wire, without a traceback.
    """

    def __init__(
        self, service: str, handler: Handler, batch_handler: BatchHandler | None = None
    ) -> None:
        self.service = service
        self.handler = handler
        self.batch_handler = batch_handler
        self.served = 0
        self.failed = 0
        self.outbox: list[Reply] = []
        """Replies that deferred replies built, for the worker loop to send."""
        self.lanes: LaneHub | None = None
        """The worker's lanes, if it serves any: the broker's lane requests go there."""
        self.connection = 0
        """Counts the worker's connections to the broker; a new one makes deferred replies
        stale."""
        self._current: tuple[BrokerRequest | LaneRequest, Message, int] | None = None

    def defer(self) -> DeferredReply:
        """Inside a handler: the current request's :class:`DeferredReply`. Return it, and
        the request is answered later, by it."""
        if self._current is None:
            raise RuntimeError("defer() works only inside a handler, on the worker's thread")
        return DeferredReply(self, *self._current)

    def parse(self, req: BrokerRequest | LaneRequest) -> Message | Reply:
        """The request's Message, or the reply already due: an error if it cannot be read,
        the answer to the broker's request to make a lane."""
        header = None
        try:
            if not req.body:
                raise ProtocolError("request has no nearloop header frame")
            body = req.body
            header = parse_header(body[0])
            if header.kind == KIND_LANE and type(req) is BrokerRequest:
                return self.make_lane(req, header)
            return Message(header, frames_to_arrays(header.arrays, body[1:], header.inline))
        except Exception as exc:  # ProtocolError, or a numpy error on a hostile spec
            self.failed += 1
            rid = 0 if header is None else header.id
            return self._error(req, rid, ERR_MALFORMED, f"{self.service}: {exc}", None)

    def make_lane(self, req: BrokerRequest, header: Header) -> Reply:
        """Make the lane the broker asks for (PROTOCOL.md §3.10); the reply says whether."""
        arg = header.body
        name = arg.get("name") if isinstance(arg, dict) else None
        if self.lanes is None:
            why = f"{self.service}: this worker serves no lanes"
            return self._error(req, header.id, ERR_MALFORMED, why, None)
        if not isinstance(name, str) or not is_lane_name(name) or header.session is None:
            why = f"{self.service}: a lane request needs a lane name and a session"
            return self._error(req, header.id, ERR_MALFORMED, why, None)
        try:
            self.lanes.open(name, header.session)
        except Exception as exc:  # iceoryx2's errors have no common base
            why = f"{self.service}: {type(exc).__name__}: {exc}"
            return self._error(req, header.id, ERR_WORKER, why, None)
        return Reply(req, True, [encode_header(id=header.id, kind=KIND_REPLY, body={"lane": name})])

    def on_request(self, req: BrokerRequest | LaneRequest) -> Reply | None:
        """The reply to one request; None if the handler deferred it."""
        recv_ns = time.monotonic_ns()
        message = self.parse(req)
        if isinstance(message, Reply):
            return message
        self._current = (req, message, recv_ns)
        try:
            result = self.handler(message)
        except Exception as exc:
            return self._failure(req, message, exc)
        finally:
            self._current = None
        if isinstance(result, DeferredReply):
            return None
        return self.reply(req, message, result, recv_ns)

    def on_batch(self, batch: list[tuple[BrokerRequest | LaneRequest, Message]]) -> list[Reply]:
        """The replies to several parsed requests, handled in one call of the batch
        handler (which returns one result, or one exception, per message)."""
        recv_ns = time.monotonic_ns()
        if self.batch_handler is None:
            raise RuntimeError(f"{self.service}: no batch handler")
        messages = [m for _, m in batch]
        try:
            results = list(self.batch_handler(messages))
            if len(results) != len(messages):
                raise RuntimeError(
                    f"batch handler returned {len(results)} results for {len(messages)} requests"
                )
        except Exception as exc:
            results = [exc] * len(messages)
        return [
            self._failure(req, message, result)
            if isinstance(result, BaseException)
            else self.reply(req, message, result, recv_ns)
            for (req, message), result in zip(batch, results, strict=True)
        ]

    def reply(
        self,
        req: BrokerRequest | LaneRequest,
        message: Message,
        result: Any,
        recv_ns: int,
        *,
        final: bool = True,
    ) -> Reply:
        """The FINAL (or PARTIAL) reply for a handler's ``result``."""
        header = message.header
        try:
            out = Payload.of(result)
            ts = {**header.ts, "worker_recv": recv_ns, "worker_send": time.monotonic_ns()}
            specs, inline, frames = arrays_to_frames(out.arrays)
            hdr = encode_header(
                id=header.id, kind=KIND_REPLY, ts=ts, arrays=specs, body=out.body, inline=inline
            )
            reply: list[Frame] = [hdr, *frames]
            if frames:  # a lone header is bounded by encode_header
                check_body_size(reply)
        except Exception as exc:
            return self._failure(req, message, exc)
        if final:
            self.served += 1
        return Reply(req, final, reply)

    def _failure(
        self, req: BrokerRequest | LaneRequest, message: Message, exc: BaseException
    ) -> Reply:
        self.failed += 1
        if isinstance(exc, RemoteError):
            return self._error(req, message.id, exc.type, f"{self.service}: {exc}", None)
        text = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(exc, limit=20))
        return self._error(req, message.id, ERR_WORKER, text, tb)

    @staticmethod
    def _error(
        req: BrokerRequest | LaneRequest, rid: int, err_type: str, message: str, tb: str | None
    ) -> Reply:
        hdr = encode_header(id=rid, kind=KIND_ERROR, error=ErrorInfo(err_type, message, tb))
        return Reply(req, True, [hdr], error=True)


class Worker:
    """Serve one service: connect, READY with credit and heartbeat, answer requests.

    Requests run on the calling thread, one at a time; ``credit`` lets the broker queue
    that many at this worker so it never idles waiting for the next. A handler may
    answer later, with PARTIALs on the way, through :meth:`defer`. ``idle``, if given,
    is called on the same thread whenever no request is waiting; it returns in how many
    microseconds it wants to be called again (0: as soon as no request waits), or None
    to sleep until the next request. Continuous work, such as streaming shot batches
    to a session, runs there, between requests. A helper thread
    keeps heartbeating while a handler runs, so long handlers are fine; a frozen or dead
    process stops heartbeating and its requests go to another worker.
    ``curve=(worker_cert, broker_public_key)`` talks CURVE to a broker's tcp endpoint
    (:data:`client.wire.curve.CurveSpec`); the broker must hold its key in a worker
    allow-list for this service, or it answers READY with DISCONNECT.

    >>> w = Worker("tcp://127.0.0.1:5555", "echo", lambda m: m.body)   # doctest: +SKIP
    >>> w.run()                                                         # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        service: str,
        handler: Handler | None,
        *,
        batch_handler: BatchHandler | None = None,
        max_batch_weight: int = 1,
        batch_weight: Callable[[Message], int] | None = None,
        max_wait_us: int = 0,
        idle: Callable[[], int | None] | None = None,
        credit: int = 1,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        liveness: int = DEFAULT_LIVENESS,
        reconnect_min_ms: int = 10,
        reconnect_max_ms: int = 2000,
        lanes: bool = True,
        lane_spin_us: int = DEFAULT_LANE_SPIN_US,
        host: str | None = None,
        context: zmq.Context[Any] | None = None,
        curve: CurveSpec | None = None,
    ) -> None:
        if not 0 < reconnect_min_ms <= reconnect_max_ms:
            raise ValueError("need 0 < reconnect_min_ms <= reconnect_max_ms")
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a Worker exactly one of handler and batch_handler")
        if max_batch_weight < 1 or max_wait_us < 0:
            raise ValueError("need max_batch_weight >= 1 and max_wait_us >= 0")
        if liveness < 2:
            # While a handler runs, heartbeats come from a helper thread up to 1.5
            # intervals apart; one missed interval must not make a busy worker dead.
            raise ValueError("a Worker needs liveness >= 2")
        if lane_spin_us < 0:
            raise ValueError("need lane_spin_us >= 0")
        self.endpoint = endpoint
        self.service = service
        self._curve = None if curve is None else load_curve(curve)  # a bad file fails here
        self.state = WorkerState(service, handler or _no_handler, batch_handler)
        self.lanes_missing: str | None = "lanes=False" if not lanes else lane_support_missing()
        """Why the worker serves no lanes (None: it does)."""
        if self.lanes_missing is None:
            from client.lane.host import host_identity
            from client.lane.hub import LaneHub
            from client.lane.identity import user_identity

            self.state.lanes = LaneHub(lane_spin_us * 1000)
            self.options = WorkerOptions(
                credit=credit,
                heartbeat_ms=heartbeat_ms,
                liveness=liveness,
                declared=True,
                host=host or host_identity(),
                lanes=(IOX2,),
                user=user_identity(),
            )
        else:
            log.debug("%s: serving no lanes: %s", service, self.lanes_missing)
            self.options = WorkerOptions(
                credit=credit, heartbeat_ms=heartbeat_ms, liveness=liveness, declared=True
            )
        self.max_batch_weight = max_batch_weight
        self.batch_weight = batch_weight or _one
        self.max_wait_us = max_wait_us
        self.idle = idle
        self.reconnect_min_ms = reconnect_min_ms
        self.reconnect_max_ms = reconnect_max_ms
        self.connects = 0
        """READYs sent, one per connection."""
        self.registrations = 0
        """READYs the broker took (it answered them), each reported to ``on_ready``."""
        self._answered = False  # the broker has said anything on this connection
        self.drops = 0
        """Connections to the broker that dropped (the broker was killed or restarted):
        each is followed at once by a new connection and a new READY."""
        self._warned_at_ns = 0  # when it last warned that no broker answers (0: not since)
        self._context: zmq.Context[Any] = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._on_ready: Callable[[], None] | None = None
        self._io_lock = threading.Lock()
        self._sock: zmq.Socket[bytes] | None = None
        self._heartbeat = encode_worker_heartbeat(2)  # a Worker speaks MDP/0.2
        self._next_hb_ns = 0

    def defer(self) -> DeferredReply:
        """Inside a handler: answer the current request later; see :class:`DeferredReply`."""
        return self.state.defer()

    def stop(self) -> None:
        """Ask :meth:`run` to DISCONNECT and return; safe from other threads and signals."""
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop`, reconnecting with bounded exponential backoff.

        ``on_ready`` is called once per registration, when the broker first answers a
        READY (the broker sends a HEARTBEAT at once; any message but DISCONNECT counts),
        not when the READY is sent: a ZeroMQ send succeeds with no broker at all. While no
        broker answers, one warning says so and the worker keeps trying.

        A broker restart is seen at once (the socket's monitor reports the drop), and the
        worker sends READY again on a new connection without waiting: it is registered
        within RECONNECT_IVL_MAX_MS (100 ms) of the new broker binding its endpoint, plus
        a round trip. A broker that stops answering without dropping the connection (a
        network partition) is given up after ``liveness`` heartbeats.
        """
        self._on_ready = on_ready
        beats = threading.Thread(target=self._heartbeat_while_busy, daemon=True)
        beats.start()
        backoff_ms = self.reconnect_min_ms
        try:
            while not self._stop.is_set():
                served_before = self.state.served + self.state.failed
                started_ns = time.monotonic_ns()
                reason = self._serve_connection()
                if self._stop.is_set():
                    break
                if self.state.served + self.state.failed > served_before or reason == DROPPED:
                    backoff_ms = self.reconnect_min_ms  # a drop: READY again at once
                if self._answered or reason == DROPPED:
                    self._warned_at_ns = 0
                    log.warning("%s: %s; reconnecting in %d ms", self.service, reason, backoff_ms)
                else:
                    self._warn_no_broker(started_ns)  # said once, until one answers
                if self._stop.wait(backoff_ms / 1000):
                    break
                backoff_ms = min(self.reconnect_max_ms, backoff_ms * 2)
        finally:
            self._stop.set()
            beats.join()
            if self.state.lanes is not None:
                self.state.lanes.close_all()

    def _serve_connection(self) -> str:
        """One connection to the broker; returns why it ended."""
        # A random routing id of our own, not one the broker numbers, so that no peer can
        # guess it to claim this connection (the broker hands ids over). With CURVE the
        # broker hands nothing over: there the broker names each connection, as a
        # reconnect claiming an id still in use would be parked (PROTOCOL.md §1.2.1).
        sock = connect_dealer(
            self._context, self.endpoint, stable_identity=self._curve is None, curve=self._curve
        )
        watch = LinkWatch(sock, self._context)
        version = 2
        with self._io_lock:
            self._sock = sock
        self._io_lock.acquire()
        self.state.connection += 1  # replies deferred on an earlier connection go nowhere
        self.state.outbox.clear()
        self._answered = False
        try:
            send_frames(sock, encode_worker_ready(version, self.service.encode(), self.options))
            self.connects += 1
            return self._serve(sock, version, watch)
        finally:
            self._sock = None
            watch.close()
            if self._stop.is_set():
                with contextlib.suppress(zmq.ZMQError):
                    send_frames(sock, encode_worker_disconnect(version), zmq.NOBLOCK)
                sock.close(linger=100)
            else:
                sock.close(linger=0)
            self._io_lock.release()

    def _serve(self, sock: zmq.Socket[bytes], version: int, watch: LinkWatch) -> str:
        """The loop; runs holding ``_io_lock``, and lets go of it only inside the handler.

        ``watch`` is the socket's monitor: a dropped connection ends the loop at once
        (:data:`DROPPED`), and while the socket has never connected (no broker there yet)
        the loop waits on it, ZeroMQ retrying every RECONNECT_IVL_MAX_MS at most, rather
        than give up after ``liveness`` heartbeats: the READY it queued goes out the
        moment a broker binds."""
        hb_ns = self.options.heartbeat_ms * _MS
        ttl_ns = self.options.liveness * hb_ns
        state = self.state
        lock = self._io_lock
        now = time.monotonic_ns()
        broker_deadline = now + ttl_ns
        self._next_hb_ns = now + hb_ns
        items = [*poll_items(sock), (watch.monitor, _POLLIN)]
        started_ns = now
        hub = state.lanes
        idle = self.idle
        idle_due_ns: int | None = None
        registered = False
        while not self._stop.is_set():
            if watch.pending() and watch.take()[0]:
                self.drops += 1
                return DROPPED
            now = time.monotonic_ns()
            if now >= self._next_hb_ns:
                self._beat(sock, now)
            due = min(self._next_hb_ns, broker_deadline)
            if idle_due_ns is not None:
                due = min(due, idle_due_ns)
            wait_ns = max(0, due - now)
            found: bool
            if hub is not None and hub.lanes:
                step = self._wait_with_lanes(sock, hub, due)
                if step in (_LANE_SERVED, _LANE_SPIN):
                    if step == _LANE_SERVED and idle is not None:
                        idle_due_ns = 0  # the request may have started work for it
                    continue
                found = step == _LANE_READABLE
            # A sub-millisecond wait for the idle callback polls with µs precision.
            elif idle_due_ns is not None and wait_ns < _MS:
                found = wait_readable(sock, wait_ns, watch.monitor)
            else:
                found = bool(poll(items, -(-wait_ns // _MS))) and _readable(sock)
            if not found:
                if idle is not None and (idle_due_ns is None or time.monotonic_ns() >= idle_due_ns):
                    idle_due_ns = self._run_idle(sock, idle)
                # Only a poll that found nothing can tell the broker is silent: after a
                # long handler its heartbeats are waiting unread.
                if time.monotonic_ns() >= broker_deadline:
                    if watch.ups or watch.connected:
                        return f"broker silent for {self.options.liveness} heartbeats"
                    self._warn_no_broker(started_ns)  # none yet: keep waiting for one
                    broker_deadline = time.monotonic_ns() + ttl_ns
                continue
            frames = recv_frames(sock, 0, 5)
            broker_deadline = time.monotonic_ns() + ttl_ns
            self._answered = True
            try:
                msg = parse_broker_to_worker(frames, version)
            except ProtocolError as exc:
                self._dropped(exc)
                continue
            if not registered and type(msg) is not BrokerDisconnect:  # DISCONNECT: refused
                registered = True
                self._registered()
            if type(msg) is BrokerRequest:
                if state.batch_handler is not None:
                    if self._serve_batch(sock, version, msg):
                        return "broker sent DISCONNECT"
                    broker_deadline = time.monotonic_ns() + ttl_ns
                    continue
                lock.release()  # the heartbeat thread may use the socket while we compute
                try:
                    reply = state.on_request(msg)
                finally:
                    lock.acquire()
                if watch.pending() and watch.take()[0]:
                    # The request's broker is gone, and its client was told (BrokerLost)
                    # or sends it again: a new broker would refuse the reply.
                    self.drops += 1
                    return DROPPED
                self._flush(sock)
                if reply is not None:  # None when the handler deferred its reply
                    self._send_reply(sock, reply)
                if idle is not None:
                    idle_due_ns = 0  # the request may have started work for it
            elif type(msg) is BrokerDisconnect:
                return "broker sent DISCONNECT"
        return "stopped"

    def _serve_batch(self, sock: zmq.Socket[bytes], version: int, first: BrokerRequest) -> bool:
        """Gather requests, as a dynamic batcher does, until the batch weighs
        ``max_batch_weight``, holds ``credit`` requests, or ``max_wait_us`` has passed since
        the first; handle them in one call; reply to each. Heartbeats go out while it
        waits, however long that is. True if the broker said DISCONNECT meanwhile (the
        batch is still answered)."""
        state = self.state
        end = time.monotonic_ns() + self.max_wait_us * 1000
        spin_ns = min(self.max_wait_us, BATCH_SPIN_MAX_US) * 1000
        batch: list[tuple[BrokerRequest | LaneRequest, Message]] = []
        weight = 0
        disconnect = False
        msg: Any = first
        while True:
            if type(msg) is BrokerRequest:
                parsed = state.parse(msg)
                if isinstance(parsed, Reply):
                    self._send_reply(sock, parsed)
                else:
                    batch.append((msg, parsed))
                    weight += self.batch_weight(parsed)
            elif type(msg) is BrokerDisconnect:
                disconnect = True
                break
            if len(batch) >= self.options.credit or weight >= self.max_batch_weight:
                break
            msg = None
            now = time.monotonic_ns()
            if now >= self._next_hb_ns:
                self._beat(sock, now)
            if now >= end or self._stop.is_set():
                break
            frames = recv_by(sock, min(end, self._next_hb_ns), spin_ns, 5)
            if frames is None:
                continue
            try:
                msg = parse_broker_to_worker(frames, version)
            except ProtocolError as exc:
                self._dropped(exc)
        if batch:
            self._io_lock.release()
            try:
                replies = state.on_batch(batch)
            finally:
                self._io_lock.acquire()
            for reply in replies:
                self._send_reply(sock, reply)
        return disconnect

    def _run_idle(self, sock: zmq.Socket[bytes], idle: Callable[[], int | None]) -> int | None:
        """Run the idle callback without the I/O lock, send what it built, and return when
        (monotonic ns) it wants to run next, or None."""
        self._io_lock.release()
        try:
            again_us = idle()
        except Exception:
            log.exception(
                "%s: the idle callback failed; it runs after the next request", self.service
            )
            again_us = None
        finally:
            self._io_lock.acquire()
        self._flush(sock)
        return None if again_us is None else time.monotonic_ns() + max(0, again_us) * 1000

    def _warn_no_broker(self, started_ns: int) -> None:
        """No broker has answered this connection's READY, nor even connected: say so
        once (until one answers)."""
        if self._warned_at_ns:
            log.debug("%s: still no broker at %s", self.service, self.endpoint)
            return
        self._warned_at_ns = time.monotonic_ns()
        waited_ms = (self._warned_at_ns - started_ns) // _MS
        log.warning(
            "%s: no broker answered at %s after %d ms; still trying",
            self.service, self.endpoint, waited_ms,
        )  # fmt: skip

    def _registered(self) -> None:
        """The broker answered this connection's READY: report the registration."""
        self._warned_at_ns = 0
        self.registrations += 1
        if self._on_ready is not None:
            self._on_ready()

    def _flush(self, sock: zmq.Socket[bytes]) -> None:
        outbox = self.state.outbox
        for reply in outbox:
            self._send_reply(sock, reply)
        outbox.clear()

    def _send_reply(self, sock: zmq.Socket[bytes], reply: Reply) -> None:
        """Send a reply where its request came from: the broker, or a lane."""
        to = reply.to
        if isinstance(to, BrokerRequest):
            send_frames(sock, encode_worker_reply(to.version, reply.final, to.address, reply.body))
            return
        if to.lane.closed:
            return  # its client has gone; so has the lane
        hub = self.state.lanes
        assert hub is not None  # a lane request came through the hub
        to.lane.respond(to, reply.body, reply.final, hub.served(time.monotonic_ns()))
        if reply.final:
            hub.finals[reply.error] += 1

    def _serve_lanes(self, sock: zmq.Socket[bytes], hub: LaneHub) -> bool:
        """Handle every request waiting on the lanes (as one batch, for a batch handler);
        False if there was none."""
        reqs = hub.receive()
        if not reqs:
            return False
        hub.served(time.monotonic_ns())
        state = self.state
        replies: list[Reply | None] = []
        self._io_lock.release()  # the heartbeat thread may use the socket while we compute
        try:
            if state.batch_handler is None:
                replies = [state.on_request(req) for req in reqs]
            else:
                batch: list[tuple[BrokerRequest | LaneRequest, Message]] = []
                for req in reqs:
                    parsed = state.parse(req)
                    if isinstance(parsed, Reply):
                        replies.append(parsed)
                    else:
                        batch.append((req, parsed))
                if batch:
                    replies.extend(state.on_batch(batch))
        finally:
            self._io_lock.acquire()
        self._flush(sock)
        for reply in replies:
            if reply is not None:
                self._send_reply(sock, reply)
        return True

    def _wait_with_lanes(self, sock: zmq.Socket[bytes], hub: LaneHub, due_ns: int) -> int:
        """One step of the loop while the worker has lanes: serve what they hold, else
        poll until the spin ends, then sleep on the lanes and the socket together until
        ``due_ns``. Returns what happened: ``_LANE_SERVED``, ``_LANE_READABLE`` (the
        socket), ``_LANE_DUE`` (``due_ns`` came with nothing), or ``_LANE_SPIN`` (look
        again)."""
        if self._serve_lanes(sock, hub):
            return _LANE_SERVED
        now = time.monotonic_ns()
        hub.reap(now)
        if int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            return _LANE_READABLE
        if now >= due_ns:
            return _LANE_DUE
        if now < hub.awake_until_ns:
            yield_cpu()  # a lane's client may share this CPU: let it run first
        else:
            hub.sleep(sock, due_ns)
        return _LANE_SPIN

    def _dropped(self, exc: ProtocolError) -> None:
        log.warning("%s: dropped a malformed message from the broker: %s", self.service, exc)

    def _beat(self, sock: zmq.Socket[bytes], now_ns: int, flags: int = 0) -> None:
        """Send a HEARTBEAT and schedule the next. The caller holds ``_io_lock`` and has
        found one due (``now_ns >= _next_hb_ns``). The worker loop's own heartbeats tell
        the broker which lane sessions it has freed, and how many lane requests it has
        answered (PROTOCOL.md §3.10)."""
        hub = self.state.lanes
        closed: list[int] = []
        finals: tuple[int, int] | None = None
        if hub is not None and flags == 0:
            closed, finals = hub.take_closed(), hub.take_finals()
        if closed or finals is not None:
            frames = encode_worker_heartbeat(2, closed, lane_replies=finals)
        else:
            frames = self._heartbeat
        send_frames(sock, frames, flags)
        self._next_hb_ns = now_ns + self.options.heartbeat_ms * _MS

    def _heartbeat_while_busy(self) -> None:
        """Keep heartbeating while a long handler runs, so a busy worker is not taken for
        dead. A frozen or killed process stops this thread too, and is still detected."""
        hb_s = self.options.heartbeat_ms / 1000
        while not self._stop.wait(hb_s / 2):
            # The loop holds the lock except inside the handler: take it only then.
            if not self._io_lock.acquire(blocking=False):
                continue
            try:
                now = time.monotonic_ns()
                if self._sock is not None and now >= self._next_hb_ns:
                    self._beat(self._sock, now, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # a full pipe: the main loop will find out soon enough
            finally:
                self._io_lock.release()

    def __repr__(self) -> str:
        return (
            f"Worker({self.endpoint!r}, service={self.service!r}, credit={self.options.credit}, "
            f"heartbeat_ms={self.options.heartbeat_ms}, served={self.state.served})"
        )


def run_worker(endpoint: str, service: str, handler: Handler | None, **options: Any) -> Worker:
    """Build a :class:`Worker` and :func:`serve` it until SIGINT or SIGTERM."""
    return serve(Worker(endpoint, service, handler, **options))


def serve(worker: Worker) -> Worker:
    """Run ``worker`` until SIGINT or SIGTERM; print ``READY`` each time the broker takes
    its READY (see :meth:`Worker.run`)."""
    import signal

    def stop(signum: int, frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    worker.run(on_ready=lambda: print("READY", flush=True))
    return worker


def _readable(sock: zmq.Socket[bytes]) -> bool:
    return bool(int(sock.getsockopt(_EVENTS)) & _POLLIN)
