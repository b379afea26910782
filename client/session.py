"""Sessions: requests that the broker pins to one worker, which may keep state for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from client.errors import ClientClosed
from client.messages import Message
from client.wire import NL_SESSION, NL_SESSION_CLOSE, NL_SESSION_OPEN

if TYPE_CHECKING:
    from client.sync_client import Client, PendingReply

_SESSION: str = NL_SESSION.decode()


class Session:
    """A session the broker has pinned to one worker of ``service`` (affinity).

    Every request sent through it goes to that worker, so the worker may keep state from
    one request to the next, and a long request may stream PARTIAL replies (see
    :attr:`~client.sync_client.PendingReply.partials`). If that worker dies or leaves,
    the broker fails every request of the session, in flight or sent later, with
    :class:`~client.errors.SessionLost` as soon as it notices (within the worker's
    ``liveness`` heartbeats); a request never waits past its own timeout either.

    >>> with client.open_session("qpu") as s:                          # doctest: +SKIP
    ...     s.request({"op": "describe", "circuit": cid})
    """

    def __init__(self, client: Client, session_id: int, service: str, worker: str) -> None:
        self.client = client
        self.id = session_id
        self.service = service
        self.worker = worker
        """The hex ZeroMQ identity of the pinned worker, as the broker knows it."""
        self.closed = False

    @classmethod
    def open(cls, client: Client, service: str, *, timeout: float | None = None) -> Session:
        """Ask the broker for a session on ``service``; raises ServiceUnavailable if the
        service has no worker, QueueFull if the broker holds its maximum of sessions."""
        reply = client.request(NL_SESSION_OPEN.decode(), {"service": service}, timeout=timeout)
        body = reply.body
        return cls(client, int(body["session"]), str(body["service"]), str(body["worker"]))

    def submit(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> PendingReply:
        """Send a request to the pinned worker without waiting; see :meth:`Client.submit`."""
        if self.closed:
            raise ClientClosed(f"session {self.id} on {self.service!r} is closed")
        return self.client._submit(_SESSION, body, arrays, timeout, self.id)

    def request(
        self, body: Any = None, *arrays: npt.NDArray[Any], timeout: float | None = None
    ) -> Message:
        """Send a request to the pinned worker and wait for its final reply."""
        return self.submit(body, *arrays, timeout=timeout).result()

    def close(self, *, timeout: float | None = None) -> None:
        """Tell the broker to forget the session. Idempotent; the worker is not told, so
        end any long request of the session first."""
        if self.closed:
            return
        self.closed = True
        self.client.request(NL_SESSION_CLOSE.decode(), {"session": self.id}, timeout=timeout)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pinned to {self.worker}"
        return f"Session({self.id}, service={self.service!r}, {state})"
