"""Sessions: requests that the broker pins to one worker, which may keep state for them.

:class:`SessionState` is what both clients keep for a session, and the schema of its
requests (``nl.session.open``, ``nl.session``, ``nl.session.close``, PROTOCOL.md §3.9).
The session a client hands out adds only how it waits: :class:`~client.Session` for
:class:`~client.Client`, :class:`~client.AsyncSession` for :class:`~client.AsyncClient`.
"""

from __future__ import annotations

from typing import Any, Final

from client.errors import ClientClosed, ProtocolError
from client.messages import Message
from client.wire import NL_SESSION, NL_SESSION_CLOSE, NL_SESSION_OPEN

SESSION_SERVICE: Final = NL_SESSION.decode()
"""The service every request of a session is sent to; the header names the session."""
OPEN_SERVICE: Final = NL_SESSION_OPEN.decode()
CLOSE_SERVICE: Final = NL_SESSION_CLOSE.decode()


def open_body(service: str) -> dict[str, Any]:
    """The body of an ``nl.session.open`` request for a session on ``service``."""
    return {"service": service}


def read_open_reply(reply: Message) -> tuple[int, str, str]:
    """(session id, service, pinned worker) from an ``nl.session.open`` reply.

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
    return body["session"], body["service"], body["worker"]


class SessionState:
    """A session the broker has pinned to one worker of ``service`` (affinity).

    Every request sent through it goes to that worker, so the worker may keep state from
    one request to the next, and a long request may stream PARTIAL replies (see
    :attr:`client.connection.Call.partials`). If that worker dies or leaves, the broker
    fails every request of the session, in flight or sent later, with
    :class:`~client.errors.SessionLost` as soon as it notices (within the worker's
    ``liveness`` heartbeats); a request never waits past its own timeout either.
    """

    def __init__(self, session_id: int, service: str, worker: str) -> None:
        self.id = session_id
        self.service = service
        self.worker = worker
        """The hex ZeroMQ identity of the pinned worker, as the broker knows it."""
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise ClientClosed(f"session {self.id} on {self.service!r} is closed")

    def _close_body(self) -> dict[str, Any] | None:
        """Mark the session closed; the body of the ``nl.session.close`` request to send,
        or None if it was closed already."""
        if self.closed:
            return None
        self.closed = True
        return {"session": self.id}

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pinned to {self.worker}"
        return f"{type(self).__name__}({self.id}, service={self.service!r}, {state})"
