"""The synchronous, pipelined :class:`Client`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import zmq

from client.errors import ClientClosed, ProtocolError, RemoteError, RequestTimeout
from client.messages import Message
from client.request_core import DEFAULT_SPIN_US, RequestCore
from client.session import Session
from client.wire import (
    MMI_OK,
    MMI_SERVICE,
    MMI_STATS,
    NL_MODEL_GET,
    NL_MODEL_PUT,
    model_hash,
)
from client.wire.transport import connect_dealer, recv_by, recv_frames, send_frames, spin_recv

_NS = 1_000_000_000
_RCVTIMEO = int(zmq.RCVTIMEO)


class PendingReply:
    """A request in flight. :meth:`result` waits for its final reply."""

    __slots__ = (
        "_client",
        "_outcome",
        "deadline_ns",
        "id",
        "on_done",
        "partials",
        "service",
        "timeout",
    )

    def __init__(self, client: Client, rid: int, service: str, timeout: float) -> None:
        self._client = client
        self.id = rid
        self.service = service
        self.timeout = timeout
        self.deadline_ns = time.monotonic_ns() + int(timeout * _NS)
        self.partials: list[Message] = []
        """PARTIAL replies received so far, in arrival order."""
        self._outcome: Message | RemoteError | None = None
        self.on_done: Callable[[PendingReply], None] | None = None
        """Called, inside :meth:`Client.receive` or a wait, when the final reply arrives."""

    @property
    def done(self) -> bool:
        """True once the final reply (or error) has arrived."""
        return self._outcome is not None

    def result(self) -> Message:
        """The final reply. Raises RemoteError, or RequestTimeout at the request's deadline."""
        return self._client._wait(self)

    def abandon(self) -> None:
        """Stop waiting: a reply that arrives later is counted as late and dropped."""
        self._client._pending.pop(self.id, None)

    def __repr__(self) -> str:
        return f"PendingReply(id={self.id}, service={self.service!r}, done={self.done})"


class Client:
    """A synchronous nearloop client on one DEALER socket. Not thread-safe.

    Requests are pipelined: :meth:`submit` sends and returns at once, and any number of
    requests may be in flight; replies are matched to requests by id.

    A caller waiting on a reply first polls for it for up to ``spin_us`` microseconds,
    yielding its CPU between polls, and only then sleeps in the kernel: a sleeping thread
    pays a wake-up when the reply comes, tens of microseconds on a virtual machine. That
    costs CPU time (at most ``spin_us`` per wait) for latency; ``spin_us=0`` turns it off.

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
    ) -> None:
        self.endpoint = endpoint
        self._core = RequestCore(timeout, spin_us)
        self._context: zmq.Context[Any] = context or zmq.Context.instance()
        sock = connect_dealer(self._context, endpoint, stable_identity=True)
        self._sock: zmq.Socket[bytes] | None = sock
        self._rcvtimeo_ms = -1
        self._pending: dict[int, PendingReply] = {}
        self.malformed_replies = 0
        """Replies that could not be decoded, and were dropped."""

    @property
    def spin_us(self) -> int:
        """How long a wait for a reply polls before it sleeps, in microseconds."""
        return self._core.spin_ns // 1000

    @property
    def late_replies(self) -> int:
        """Replies that arrived after their caller had timed out, and were dropped."""
        return self._core.late_replies

    def submit(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
    ) -> PendingReply:
        """Send a request without waiting.

        Arrays of 64 KiB or more are sent without a copy: do not modify them until the
        reply has arrived. Call :meth:`PendingReply.result` on every request submitted:
        that is what retires it.
        """
        return self._submit(service, body, arrays, timeout, None)

    def _submit(
        self,
        service: str,
        body: Any,
        arrays: tuple[npt.NDArray[Any], ...],
        timeout: float | None,
        session: int | None,
    ) -> PendingReply:
        t = self._core.timeout_of(timeout)
        rid, frames = self._core.build(service, body, arrays, t, session)
        return self._send(service, rid, frames, t)

    def _send(self, service: str, rid: int, frames: list[Any], timeout: float) -> PendingReply:
        sock = self._socket()
        pending = PendingReply(self, rid, service, timeout)
        self._pending[rid] = pending
        send_frames(sock, frames)
        return pending

    def request(
        self,
        service: str,
        body: Any = None,
        *arrays: npt.NDArray[Any],
        timeout: float | None = None,
    ) -> Message:
        """Send a request and wait for its reply (seconds; default: the client's timeout)."""
        return self.submit(service, body, *arrays, timeout=timeout).result()

    def open_session(self, service: str, *, timeout: float | None = None) -> Session:
        """Open a :class:`~client.session.Session`: the broker pins it to one worker of
        ``service``, and every request sent through it goes to that worker."""
        return Session.open(self, service, timeout=timeout)

    def service_available(self, service: str, *, timeout: float | None = None) -> bool:
        """Ask the broker (``mmi.service``, RFC 8) whether ``service`` has workers."""
        status = self._mmi(MMI_SERVICE.decode(), service.encode(), timeout)
        return bool(status.body[0] == MMI_OK)

    def broker_stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The broker's counters (``mmi.stats``, a nearloop extension)."""
        reply = self._mmi(MMI_STATS.decode(), b"", timeout)
        stats: dict[str, Any] = msgpack.unpackb(reply.body[1])
        return stats

    def _mmi(self, service: str, argument: bytes, timeout: float | None) -> Message:
        t = self._core.timeout_of(timeout)
        rid, frames = self._core.build_mmi(service, argument)
        return self._send(service, rid, frames, t).result()

    def receive(self, timeout: float, *, spin: bool = True) -> bool:
        """Wait up to ``timeout`` seconds (0: do not wait; microsecond precision) for the
        next reply to any request, and hand it to its :class:`PendingReply`. True if a
        reply arrived. With ``spin``, the first ``spin_us`` of the wait polls, as
        :meth:`request` does; without, it sleeps in the kernel at once."""
        until_ns = time.monotonic_ns() + int(timeout * 1e9)
        frames = recv_by(self._socket(), until_ns, self._core.spin_ns if spin else 0, 4)
        if frames is None:
            return False
        self._deliver(frames)
        return True

    def put_model(self, text: bytes, *, timeout: float | None = None) -> str:
        """Store a noise model in the broker (``nl.model.put``); returns its content hash.

        Decoder workers fetch it from there by hash, once each; blocks carry only the hash.
        """
        h = model_hash(text)
        self.request(NL_MODEL_PUT.decode(), {"hash": h}, _text_array(text), timeout=timeout)
        return h

    def fetch_model(self, h: str, *, timeout: float | None = None) -> bytes:
        """The model text the broker holds under hash ``h`` (``nl.model.get``).

        Raises :class:`~client.errors.UnknownModel` if it holds none.
        """
        reply = self.request(NL_MODEL_GET.decode(), {"hash": h}, timeout=timeout)
        if len(reply.arrays) != 1:
            raise ProtocolError(f"nl.model.get replied with {len(reply.arrays)} arrays, not 1")
        return bytes(reply.arrays[0])

    def _wait(self, pending: PendingReply) -> Message:
        try:
            sock = self._socket()
            if self._core.spin_ns and pending._outcome is None:
                self._spin(sock, pending)
            while pending._outcome is None:
                left_ns = pending.deadline_ns - time.monotonic_ns()
                if left_ns <= 0:
                    raise RequestTimeout(pending.service, pending.id, pending.timeout)
                # A blocking receive bounded by RCVTIMEO costs less than poll + receive;
                # the option is set only when the bound changes (rarely, in a loop).
                timeout_ms = -(-left_ns // 1_000_000)
                if timeout_ms != self._rcvtimeo_ms:
                    sock.setsockopt(_RCVTIMEO, timeout_ms)
                    self._rcvtimeo_ms = timeout_ms
                try:
                    frames = recv_frames(sock, 0, 4)
                except zmq.Again:
                    continue
                self._deliver(frames)
            outcome = pending._outcome
        finally:
            self._pending.pop(pending.id, None)
        if isinstance(outcome, RemoteError):
            raise outcome
        return outcome

    def _spin(self, sock: zmq.Socket[bytes], pending: PendingReply) -> None:
        until_ns = min(pending.deadline_ns, time.monotonic_ns() + self._core.spin_ns)
        while pending._outcome is None:
            frames = spin_recv(sock, until_ns, 4)
            if frames is None:
                return
            self._deliver(frames)

    def _deliver(self, frames: list[Any]) -> None:
        try:
            rid, outcome = self._core.decode(frames)
        except ProtocolError:
            self.malformed_replies += 1  # an undecodable reply cannot be matched: drop it
            return
        pending = self._pending.get(rid)
        if pending is None:
            self._core.late_replies += 1
        elif isinstance(outcome, Message) and outcome.partial:
            pending.partials.append(outcome)
        else:
            pending._outcome = outcome
            if pending.on_done is not None:
                pending.on_done(pending)

    def _socket(self) -> zmq.Socket[bytes]:
        if self._sock is None:
            raise ClientClosed(f"client for {self.endpoint} is closed")
        return self._sock

    def close(self) -> None:
        """Close the socket. Requests still in flight are abandoned."""
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else f"{len(self._pending)} in flight"
        return f"Client({self.endpoint!r}, {state})"


def _text_array(text: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(text, dtype=np.uint8)
