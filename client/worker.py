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
from collections.abc import Callable
from typing import Any

import zmq

from client.errors import ProtocolError
from client.messages import Message, Payload
from client.protocol import (
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
from client.transport import connect_dealer, poll, poll_items, recv_frames, send_frames

log = logging.getLogger("nearloop.worker")

Handler = Callable[[Message], Any]
"""Takes the request; returns a :class:`Payload`, a numpy array, or a msgpack-able body."""

_MS = 1_000_000


class WorkerState:
    """Runs the handler on one request and builds the FINAL reply. No I/O.

    A handler exception becomes an error reply that carries its text and traceback; the
    worker keeps serving.
    """

    def __init__(self, service: str, handler: Handler) -> None:
        self.service = service
        self.handler = handler
        self.served = 0
        self.failed = 0

    def on_request(self, req: BrokerRequest) -> list[Frame]:
        """The reply frames (without identity) for one REQUEST."""
        recv_ns = time.monotonic_ns()
        header = None
        try:
            if not req.body:
                raise ProtocolError("request has no nearloop header frame")
            body = req.body
            header = parse_header(body[0])
            message = Message(header, frames_to_arrays(header.arrays, body[1:]))
        except Exception as exc:  # ProtocolError, or a numpy error on a hostile spec
            self.failed += 1
            rid = 0 if header is None else header.id
            return self._error(req, rid, ERR_MALFORMED, f"{self.service}: {exc}", None)
        try:
            out = Payload.of(self.handler(message))
            ts = {**header.ts, "worker_recv": recv_ns, "worker_send": time.monotonic_ns()}
            specs, frames = arrays_to_frames(out.arrays)
            hdr = encode_header(id=header.id, kind=KIND_REPLY, ts=ts, arrays=specs, body=out.body)
            reply: list[Frame] = [hdr, *frames]
            if frames:  # a lone header is bounded by encode_header
                check_body_size(reply)
        except Exception as exc:
            self.failed += 1
            text = f"{type(exc).__name__}: {exc}"
            return self._error(req, header.id, ERR_WORKER, text, traceback.format_exc(limit=20))
        self.served += 1
        return encode_worker_reply(req.version, True, req.address, reply)

    @staticmethod
    def _error(
        req: BrokerRequest, rid: int, err_type: str, message: str, tb: str | None
    ) -> list[Frame]:
        hdr = encode_header(id=rid, kind=KIND_ERROR, error=ErrorInfo(err_type, message, tb))
        return encode_worker_reply(req.version, True, req.address, [hdr])


class Worker:
    """Serve one service: connect, READY with credit and heartbeat, answer requests.

    Requests run on the calling thread, one at a time; ``credit`` lets the broker queue
    that many at this worker so it never idles waiting for the next. A helper thread
    keeps heartbeating while a handler runs, so long handlers are fine; a frozen or dead
    process stops heartbeating and its requests go to another worker.

    >>> w = Worker("tcp://127.0.0.1:5555", "echo", lambda m: m.body)   # doctest: +SKIP
    >>> w.run()                                                         # doctest: +SKIP
    """

    def __init__(
        self,
        endpoint: str,
        service: str,
        handler: Handler,
        *,
        credit: int = 1,
        heartbeat_ms: int = DEFAULT_HEARTBEAT_MS,
        liveness: int = DEFAULT_LIVENESS,
        reconnect_min_ms: int = 10,
        reconnect_max_ms: int = 2000,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        if not 0 < reconnect_min_ms <= reconnect_max_ms:
            raise ValueError("need 0 < reconnect_min_ms <= reconnect_max_ms")
        if liveness < 2:
            # While a handler runs, heartbeats come from a helper thread up to 1.5
            # intervals apart; one missed interval must not make a busy worker dead.
            raise ValueError("a Worker needs liveness >= 2")
        self.endpoint = endpoint
        self.service = service
        self.options = WorkerOptions(
            credit=credit, heartbeat_ms=heartbeat_ms, liveness=liveness, declared=True
        )
        self.state = WorkerState(service, handler)
        self.reconnect_min_ms = reconnect_min_ms
        self.reconnect_max_ms = reconnect_max_ms
        self.connects = 0
        self._context: zmq.Context[Any] = context or zmq.Context.instance()
        self._stop = threading.Event()
        self._on_ready: Callable[[], None] | None = None
        self._io_lock = threading.Lock()
        self._sock: zmq.Socket[bytes] | None = None
        self._next_hb_ns = 0

    def stop(self) -> None:
        """Ask :meth:`run` to DISCONNECT and return; safe from other threads and signals."""
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`stop`, reconnecting with bounded exponential backoff.

        ``on_ready`` is called after each READY is sent.
        """
        self._on_ready = on_ready
        beats = threading.Thread(target=self._heartbeat_while_busy, daemon=True)
        beats.start()
        backoff_ms = self.reconnect_min_ms
        try:
            while not self._stop.is_set():
                served_before = self.state.served + self.state.failed
                reason = self._session()
                if self._stop.is_set():
                    break
                if self.state.served + self.state.failed > served_before:
                    backoff_ms = self.reconnect_min_ms
                log.warning("%s: %s; reconnecting in %d ms", self.service, reason, backoff_ms)
                if self._stop.wait(backoff_ms / 1000):
                    break
                backoff_ms = min(self.reconnect_max_ms, backoff_ms * 2)
        finally:
            self._stop.set()
            beats.join()

    def _session(self) -> str:
        """One connection to the broker; returns why it ended."""
        sock = connect_dealer(self._context, self.endpoint)
        version = 2
        with self._io_lock:
            self._sock = sock
        self._io_lock.acquire()
        try:
            send_frames(sock, encode_worker_ready(version, self.service.encode(), self.options))
            self.connects += 1
            if self._on_ready is not None:
                self._on_ready()
            return self._serve(sock, version)
        finally:
            self._sock = None
            if self._stop.is_set():
                with contextlib.suppress(zmq.ZMQError):
                    send_frames(sock, encode_worker_disconnect(version), zmq.NOBLOCK)
                sock.close(linger=100)
            else:
                sock.close(linger=0)
            self._io_lock.release()

    def _serve(self, sock: zmq.Socket[bytes], version: int) -> str:
        """The loop; runs holding ``_io_lock``, and lets go of it only inside the handler."""
        hb_ns = self.options.heartbeat_ms * _MS
        ttl_ns = self.options.liveness * hb_ns
        state = self.state
        lock = self._io_lock
        now = time.monotonic_ns()
        broker_deadline = now + ttl_ns
        self._next_hb_ns = now + hb_ns
        heartbeat = encode_worker_heartbeat(version)
        items = poll_items(sock)
        while not self._stop.is_set():
            now = time.monotonic_ns()
            if now >= self._next_hb_ns:
                send_frames(sock, heartbeat)
                self._next_hb_ns = now + hb_ns
            wait_ns = max(0, min(self._next_hb_ns, broker_deadline) - now)
            if not poll(items, -(-wait_ns // _MS)):
                # Only a poll that found nothing can tell the broker is silent: after a
                # long handler its heartbeats are waiting unread.
                if time.monotonic_ns() >= broker_deadline:
                    return f"broker silent for {self.options.liveness} heartbeats"
                continue
            frames = recv_frames(sock, 0, 5)
            broker_deadline = time.monotonic_ns() + ttl_ns
            try:
                msg = parse_broker_to_worker(frames, version)
            except ProtocolError as exc:
                log.warning(
                    "%s: dropped a malformed message from the broker: %s", self.service, exc
                )
                continue
            if type(msg) is BrokerRequest:
                lock.release()  # the heartbeat thread may use the socket while we compute
                try:
                    reply = state.on_request(msg)
                finally:
                    lock.acquire()
                send_frames(sock, reply)
            elif type(msg) is BrokerDisconnect:
                return "broker sent DISCONNECT"
        return "stopped"

    def _heartbeat_while_busy(self) -> None:
        """Keep heartbeating while a long handler runs, so a busy worker is not taken for
        dead. A frozen or killed process stops this thread too, and is still detected."""
        hb_s = self.options.heartbeat_ms / 1000
        beat = encode_worker_heartbeat(2)
        while not self._stop.wait(hb_s / 2):
            # The loop holds the lock except inside the handler: take it only then.
            if not self._io_lock.acquire(blocking=False):
                continue
            try:
                now = time.monotonic_ns()
                if self._sock is not None and now >= self._next_hb_ns:
                    send_frames(self._sock, beat, zmq.NOBLOCK)
                    self._next_hb_ns = now + self.options.heartbeat_ms * _MS
            except zmq.ZMQError:
                pass  # a full pipe: the main loop will find out soon enough
            finally:
                self._io_lock.release()

    def __repr__(self) -> str:
        return (
            f"Worker({self.endpoint!r}, service={self.service!r}, credit={self.options.credit}, "
            f"heartbeat_ms={self.options.heartbeat_ms}, served={self.state.served})"
        )


def run_worker(endpoint: str, service: str, handler: Handler, **options: Any) -> Worker:
    """Build a :class:`Worker`, serve until SIGINT/SIGTERM-driven :meth:`Worker.stop`."""
    import signal

    worker = Worker(endpoint, service, handler, **options)

    def stop(signum: int, frame: object) -> None:
        worker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    worker.run(on_ready=lambda: print("READY", flush=True))
    return worker
