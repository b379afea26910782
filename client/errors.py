"""The client library's errors, all under :class:`~client.wire.errors.NearloopError`.

- The wire layer's own (:mod:`client.wire.errors`): :class:`ProtocolError`,
  :class:`PayloadTooLarge`, re-exported here.
- :class:`RemoteError`: an error reply. A client raises one when a reply carries an error;
  a worker's handler raises one to answer with that error, typed. Each wire error type
  has one class, looked up by :func:`remote_error`.
- Waits that end without a reply: :class:`RequestTimeout` (and its
  :class:`BrokerUnreachable`), :class:`WindowFull`, and :class:`ClientClosed`.
- :class:`BrokerLost`: the connection to the broker dropped while a request was in flight
  through it (a broker restart); for a session's request it is a :class:`SessionLost` too.
"""

from __future__ import annotations

from client.wire.errors import NearloopError, PayloadTooLarge, ProtocolError
from client.wire.header import (
    ERR_BAD_BLOCK,
    ERR_BAD_MODEL,
    ERR_MALFORMED,
    ERR_NO_WORKER,
    ERR_QUEUE_FULL,
    ERR_SESSION_LOST,
    ERR_SHUTDOWN,
    ERR_TOO_LARGE,
    ERR_UNKNOWN_MODEL,
    ERR_UNKNOWN_SESSION,
    ERR_WORKER,
    ERR_WORKER_LOST,
)

__all__ = [
    "BadBlock",
    "BadModel",
    "BrokerLost",
    "BrokerShutdown",
    "BrokerUnreachable",
    "ClientClosed",
    "LaneUnavailable",
    "MalformedRequest",
    "NearloopError",
    "PayloadTooLarge",
    "ProtocolError",
    "QueueFull",
    "RemoteError",
    "RemotePayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "SessionBrokerLost",
    "SessionLost",
    "UnknownModel",
    "UnknownSession",
    "WindowFull",
    "WorkerError",
    "WorkerLost",
    "remote_error",
]

_REMOTE_ERRORS: dict[str, type[RemoteError]] = {}
"""The class a client raises for each wire error type; filled as subclasses are defined."""


class RemoteError(NearloopError):
    """An error reply: a machine-readable ``type`` and a human ``message``.

    A client raises one when a reply carries an error: ``service`` is the service that
    answered, and ``traceback`` the worker's traceback for a ``worker_error``. A worker's
    handler raises one (any subclass) to answer the request with that error: its ``type``
    goes on the wire with its text, without a traceback, and the worker goes on.

    A subclass that sets ``type`` in its class body is the class :func:`remote_error`
    builds for that type, so a package that defines error types (the QPU service, the
    decoders) gets them back typed at the client once its errors module is imported. A
    second class for the same type is refused when it is defined.

    >>> e = remote_error("decode", "bad_block", "block of 3 bytes, expected 2")
    >>> type(e).__name__, str(e)
    ('BadBlock', "[bad_block] service 'decode': block of 3 bytes, expected 2")
    """

    type: str = "remote_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        wire_type = cls.__dict__.get("type")
        if isinstance(wire_type, str):
            known = _REMOTE_ERRORS.get(wire_type)
            same = known is not None and (known.__module__, known.__qualname__) == (
                cls.__module__,
                cls.__qualname__,
            )
            if known is not None and not same:
                raise TypeError(
                    f"error type {wire_type!r} already has its class, "
                    f"{known.__module__}.{known.__qualname__}"
                )
            _REMOTE_ERRORS[wire_type] = cls

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        type: str | None = None,
        traceback: str | None = None,
    ) -> None:
        if type is not None:
            self.type = type
        self.message = message
        self.service = service
        self.traceback = traceback
        where = f"service {service!r}: " if service else ""
        super().__init__(f"[{self.type}] {where}{message}")

    @classmethod
    def from_reply(
        cls, service: str, message: str, *, type: str | None = None, traceback: str | None = None
    ) -> RemoteError:
        """The error as a client raises it: built from the reply's fields alone, without
        the subclass's own constructor (whose extra fields stayed at the worker)."""
        error = cls.__new__(cls)
        RemoteError.__init__(error, message, service=service, type=type, traceback=traceback)
        return error


def remote_error(
    service: str, type: str, message: str, traceback: str | None = None
) -> RemoteError:
    """The error a client raises for an error reply of wire type ``type``: that type's
    class, or a plain :class:`RemoteError` carrying the type."""
    cls = _REMOTE_ERRORS.get(type, RemoteError)
    return cls.from_reply(service, message, type=type, traceback=traceback)


class ServiceUnavailable(RemoteError):
    """No worker of the service took the request before its deadline."""

    type = ERR_NO_WORKER


class QueueFull(RemoteError):
    """The service's bounded queue was full; the request was refused, not dropped."""

    type = ERR_QUEUE_FULL


class RemotePayloadTooLarge(RemoteError):
    """The broker refused a message over its size limit."""

    type = ERR_TOO_LARGE


class MalformedRequest(RemoteError):
    """The broker or worker could not parse the request."""

    type = ERR_MALFORMED


class WorkerError(RemoteError):
    """The worker's handler raised; ``message`` and ``traceback`` carry its text."""

    type = ERR_WORKER


class BrokerShutdown(RemoteError):
    """The broker shut down while the request was queued or in flight."""

    type = ERR_SHUTDOWN


class WorkerLost(RemoteError):
    """Every worker that took the request died before replying (re-dispatch limit hit)."""

    type = ERR_WORKER_LOST


class UnknownModel(RemoteError):
    """A block named a noise model that neither the worker nor the broker holds."""

    type = ERR_UNKNOWN_MODEL


class BadModel(RemoteError):
    """A noise model was refused: too large, unparsable, or its hash does not match."""

    type = ERR_BAD_MODEL


class BadBlock(RemoteError):
    """A block's detection events have the wrong dtype or shape for its model."""

    type = ERR_BAD_BLOCK


class UnknownSession(RemoteError):
    """The broker holds no session of that id for this client: never opened, closed, or
    expired after standing idle."""

    type = ERR_UNKNOWN_SESSION


class SessionLost(RemoteError):
    """The worker a session was pinned to died or left; its state went with it. Open a new
    session."""

    type = ERR_SESSION_LOST


class RequestTimeout(NearloopError, TimeoutError):
    """No reply arrived before the call's timeout."""

    def __init__(self, service: str, request_id: int, timeout: float) -> None:
        super().__init__(
            f"no reply from service {service!r} to request {request_id} within {timeout:g} s"
        )
        self.service = service
        self.request_id = request_id
        self.timeout = timeout


class BrokerUnreachable(RequestTimeout):
    """A request that the broker answers itself (``mmi.*``, and ``nl.*`` but a session's
    requests, which go on to a worker) got no reply in time: no broker answered at the
    endpoint, or none is running there.

    >>> print(BrokerUnreachable("ipc:///tmp/nl.sock", "mmi.stats", 1, 0.5))
    no broker answered at ipc:///tmp/nl.sock within 0.5 s; start one with: nearloop broker ...
    """

    def __init__(self, endpoint: str, service: str, request_id: int, timeout: float) -> None:
        NearloopError.__init__(
            self,
            f"no broker answered at {endpoint} within {timeout:g} s; "
            f"start one with: nearloop broker --bind {endpoint}",
        )
        self.endpoint = endpoint
        self.service = service
        self.request_id = request_id
        self.timeout = timeout


class BrokerLost(NearloopError):
    """The client's connection to the broker dropped (the broker was killed or restarted,
    or the connection was reset) while this request was in flight through it, and the
    caller did not declare the request idempotent, so it was not sent again: it may or may
    not have run. An ``idempotent=True`` request is re-sent instead (PROTOCOL.md §3.11).

    >>> e = BrokerLost("ipc:///tmp/nl.sock", "qpu", 7)
    >>> print(str(e)[:62])
    request 7 to service 'qpu' may or may not have run: the connec
    """

    def __init__(self, endpoint: str, service: str, request_id: int) -> None:
        NearloopError.__init__(
            self,
            f"request {request_id} to service {service!r} may or may not have run: the "
            f"connection to the broker at {endpoint} dropped while it was in flight "
            "(pass idempotent=True to have it re-sent)",
        )
        self.endpoint = endpoint
        self.service = service
        self.request_id = request_id


class SessionBrokerLost(BrokerLost, SessionLost):
    """A session's request in flight when the connection to the broker dropped: the
    session (the broker's state) went with the broker. It is both a :class:`BrokerLost`
    and a :class:`SessionLost`: open a new session."""

    def __init__(self, endpoint: str, service: str, request_id: int, session: int) -> None:
        BrokerLost.__init__(self, endpoint, service, request_id)
        self.type = ERR_SESSION_LOST
        self.message = f"session {session}: {self}; open a new session"
        self.traceback = None
        self.session = session
        self.args = (self.message,)


class WindowFull(NearloopError, TimeoutError):
    """``send`` waited ``timeout`` seconds for room in the window; the block was not sent."""

    def __init__(self, stream: str, window: int, timeout: float) -> None:
        super().__init__(
            f"stream {stream}: {window} blocks still in flight after {timeout:g} s; "
            "the block was not sent (nothing was dropped)"
        )
        self.stream = stream
        self.window = window
        self.timeout = timeout


class ClientClosed(NearloopError):
    """The client was closed while a call was waiting."""


class LaneUnavailable(NearloopError):
    """A session opened with ``lane="require"`` could not have a shared-memory lane: the
    lane extra is missing, the worker is on another host or serves no lanes, or the lane
    failed to open. The message says which."""
