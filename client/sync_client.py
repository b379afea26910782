"""The synchronous, pipelined :class:`Client`, its :class:`PendingReply` and
:class:`Session`: the :class:`~client.connection.Connection` core, waited on by blocking."""

from __future__ import annotations

import time
from typing import Any, Final

import numpy.typing as npt
import zmq

from client.connection import (
    DEFAULT_SPIN_US,
    LANE_RECEIVE_SLICE_S,
    Call,
    ClientBase,
    Connection,
    broker_stats_of,
    model_text_of,
    service_status,
)
from client.errors import LaneUnavailable, NearloopError
from client.messages import Message
from client.session import (
    CLOSE_SERVICE,
    OPEN_SERVICE,
    SESSION_SERVICE,
    LanePlan,
    SessionState,
    open_body,
    read_open_reply,
)
from client.wire.curve import CurveSpec
from client.wire.lanes import LaneMode
from client.wire.transport import recv_by, recv_frames, spin_recv, wait_readable, yield_cpu

_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)
_NOBLOCK: Final = int(zmq.NOBLOCK)


class PendingReply(Call):
    """A request in flight. :meth:`result` waits for its final reply.

    ``partials`` holds the PARTIAL replies received so far; ``on_done`` is called, inside
    :meth:`Client.receive` or a wait, when the final reply arrives.
    """

    __slots__ = ()
    _client: Client

    def result(self) -> Message:
        """The final reply. Raises RemoteError, or RequestTimeout at the request's deadline."""
        if self._outcome is None:
            self._client._wait(self)
        return self._take()


class Client(ClientBase[PendingReply]):
    """A synchronous nearloop client on one DEALER socket. Not thread-safe.

    Requests are pipelined: :meth:`submit` sends and returns at once, and any number of
    requests may be in flight; replies are matched to requests by id.

    A caller waiting on a reply first polls for it for up to ``spin_us`` microseconds,
    yielding its CPU between polls, and only then sleeps in the kernel: a sleeping thread
    pays a wake-up when the reply comes, tens of microseconds on a virtual machine. That
    costs CPU time (at most ``spin_us`` per wait) for latency; ``spin_us=0`` turns it off.

    ``curve=(client_cert, broker_public_key)`` talks CURVE to a broker's tcp endpoint
    (:data:`client.wire.curve.CurveSpec`): a bad key file raises ``KeyFileError`` here.

    >>> import numpy as np
    >>> with Client("tcp://127.0.0.1:5555") as c:                      # doctest: +SKIP
    ...     energy = c.request("qpu", {"circuit": 1}, np.zeros(4), timeout=0.5).body
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 5.0,
        spin_us: int = DEFAULT_SPIN_US,
        context: zmq.Context[Any] | None = None,
        curve: CurveSpec | None = None,
    ) -> None:
        super().__init__(
            Connection(
                endpoint,
                PendingReply,
                timeout=timeout,
                spin_us=spin_us,
                context=context,
                curve=curve,
            )
        )

    def submit(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> PendingReply:
        """Send a request without waiting.

        Arrays of 64 KiB or more are sent without a copy: do not modify them until the
        reply has arrived. Call :meth:`PendingReply.result` on every request submitted
        (or :meth:`PendingReply.abandon` it): a timed-out request stays in flight, and
        its late reply is delivered to it, until then.

        If the connection to the broker drops while the request is in flight (a broker
        restart), its reply is lost with the broker: the request fails with
        :class:`~client.errors.BrokerLost`, unless ``idempotent`` says it may run twice;
        then it is sent again once the connection is back, within its own timeout.
        """
        return self._conn.submit(self, service, body, arrays, timeout, idempotent=idempotent)

    def request(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> Message:
        """Send a request and wait for its reply (seconds; default: the client's timeout);
        ``idempotent`` as for :meth:`submit`."""
        conn = self._conn
        return conn.submit(self, service, body, arrays, timeout, idempotent=idempotent).result()

    def open_session(
        self, service: str, *, lane: LaneMode = "auto", timeout: float | None = None
    ) -> Session:
        """Open a :class:`Session`: the broker pins it to one worker of ``service``, and
        every request sent through it goes to that worker.

        ``lane``: where the worker shares this host, the session's requests can go over a
        shared-memory lane instead of through the broker. ``"auto"`` takes one where it
        can and otherwise goes through the broker, logging why; ``"require"`` raises
        :class:`~client.errors.LaneUnavailable` instead; ``"off"`` never asks.
        :attr:`Session.lane` tells which it got.
        """
        return Session.open(self, service, lane=lane, timeout=timeout)

    def service_available(self, service: str, *, timeout: float | None = None) -> bool:
        """Ask the broker (``mmi.service``, RFC 8) whether ``service`` has workers."""
        return service_status(self._conn.submit_service_query(self, service, timeout).result())

    def broker_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The broker's counters (``mmi.stats``, a nearloop extension)."""
        return broker_stats_of(self._conn.submit_stats_query(self, timeout).result())

    def put_model(self, text: bytes, *, timeout: float | None = None) -> str:
        """Store a noise model in the broker (``nl.model.put``); returns its content hash.

        Decoder workers fetch it from there by hash, once each; blocks carry only the hash.
        """
        h, call = self._conn.submit_model_put(self, text, timeout)
        call.result()
        return h

    def fetch_model(self, h: str, *, timeout: float | None = None) -> bytes:
        """The model text the broker holds under hash ``h`` (``nl.model.get``).

        Raises :class:`~client.errors.UnknownModel` if it holds none.
        """
        return model_text_of(self._conn.submit_model_get(self, h, timeout).result())

    def receive(self, timeout: float, *, spin: bool = True) -> bool:
        """Wait up to ``timeout`` seconds (0: do not wait; microsecond precision) for the
        next reply to any request, and hand it to its :class:`PendingReply`. True if a
        reply arrived. With ``spin``, the first ``spin_us`` of the wait polls, as
        :meth:`request` does; without, it sleeps in the kernel at once. Replies on the
        client's sessions' lanes count too."""
        conn = self._conn
        if conn.lanes:
            return self._receive_with_lanes(timeout, spin)
        until_ns = time.monotonic_ns() + int(timeout * 1e9)
        sock, watch = conn.socket(), conn.watch
        spin_ns = conn.spin_ns if spin else 0
        while True:
            conn.look_at_link()
            frames = recv_by(sock, until_ns, spin_ns, 4, watch.monitor)
            if frames is not None:
                if conn.deliver(frames):
                    return True
                continue  # the connection's own probe: no caller's reply
            if watch.pending() and conn.check_link():
                return True  # the calls in flight failed (or went again)
            if time.monotonic_ns() >= until_ns:
                return False
            spin_ns = 0

    def _receive_with_lanes(self, timeout: float, spin: bool) -> bool:
        """:meth:`receive` for a client with lanes: the lanes cannot wake a thread that
        sleeps on the socket, so it sleeps in slices and looks at them in between."""
        conn = self._conn
        sock = conn.socket()
        until_ns = time.monotonic_ns() + int(timeout * 1e9)
        if spin and conn.spin_ns:
            # The spin looks at the lanes as well as the socket: a lane reply that came
            # while it polled the socket alone would wait for the next slice.
            spin_end = min(until_ns, time.monotonic_ns() + conn.spin_ns)
            while True:
                if conn.deliver_lanes():
                    return True
                if int(sock.getsockopt(_EVENTS)) & _POLLIN:
                    if conn.deliver(recv_frames(sock, _NOBLOCK, 4)):
                        return True
                    continue
                if time.monotonic_ns() >= spin_end:
                    break
                yield_cpu()
        while True:
            if conn.deliver_lanes():
                return True
            now = time.monotonic_ns()
            slice_end = min(until_ns, now + int(LANE_RECEIVE_SLICE_S * 1e9))
            frames = recv_by(sock, slice_end, 0, 4)
            if frames is not None and conn.deliver(frames):
                return True
            if conn.watch.pending() and conn.check_link():
                return True  # the calls in flight failed (or went again)
            if time.monotonic_ns() >= until_ns:
                return conn.deliver_lanes()

    def _wait(self, call: PendingReply) -> None:
        """Receive until ``call`` is done; raise RequestTimeout at its deadline."""
        if call._lane is not None:
            call._lane.wait(call)
            return
        conn = self._conn
        sock = conn.socket()
        if conn.spin_ns:
            until_ns = min(call.deadline_ns, time.monotonic_ns() + conn.spin_ns)
            while call._outcome is None:
                frames = spin_recv(sock, until_ns, 4)
                if frames is None:
                    break
                conn.deliver(frames)
        watch = conn.watch
        while call._outcome is None:
            left_ns = call.deadline_ns - time.monotonic_ns()
            if left_ns <= 0:
                raise conn.timed_out(call)
            # Sleep on the socket and its monitor together: a dropped connection to the
            # broker fails (or re-sends) this call at once, not at its deadline.
            conn.look_at_link()
            if wait_readable(sock, left_ns, watch.monitor):
                conn.deliver(recv_frames(sock, _NOBLOCK, 4))

    def close(self) -> None:
        """Close the socket. Requests still in flight are abandoned."""
        self._conn.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session(SessionState):
    """A session of a :class:`Client`: see :class:`~client.session.SessionState`.

    >>> with client.open_session("qpu") as s:                          # doctest: +SKIP
    ...     s.request({"op": "describe", "circuit": cid})
    """

    def __init__(self, client: Client, session_id: int, service: str, worker: str) -> None:
        super().__init__(session_id, service, worker)
        self.client = client

    @classmethod
    def open(
        cls,
        client: Client,
        service: str,
        *,
        lane: LaneMode = "auto",
        timeout: float | None = None,
    ) -> Session:
        """Ask the broker for a session on ``service`` (see :meth:`Client.open_session`);
        raises ServiceUnavailable if the service has no worker, QueueFull if the broker
        holds its maximum of sessions."""
        plan = LanePlan.of(lane)
        reply = read_open_reply(
            client.request(OPEN_SERVICE, open_body(service, plan.ask), timeout=timeout)
        )
        session = cls(client, reply.session, reply.service, reply.worker)
        session._watch_link(client._conn)
        try:
            session._take_lane(plan, reply, client._conn.spin_ns, client._conn.lanes)
        except LaneUnavailable:
            session.close(timeout=timeout)
            raise
        return session

    def submit(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> PendingReply:
        """Send a request to the pinned worker without waiting; see :meth:`Client.submit`."""
        self._check_open()
        conn = self.client._conn
        if self._lane is not None:
            call = conn.new_call(self.client, self.service, timeout)
            self._lane.send(call, body, arrays)
            return call
        return conn.submit(self.client, SESSION_SERVICE, body, arrays, timeout, self.id)

    def request(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> Message:
        """Send a request to the pinned worker and wait for its final reply."""
        return self.submit(body, *arrays, timeout=timeout).result()

    def close(self, *, timeout: float | None = None) -> None:
        """Tell the broker to forget the session. Idempotent; the worker is not told, so
        end any long request of the session first."""
        if self._close_lost():
            return
        body = self._close_body()
        if body is not None:
            try:
                self.client.request(CLOSE_SERVICE, body, timeout=timeout)
            finally:
                self._drop_lane()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except NearloopError as failure:
            self._log_close_failure(exc, failure)
