"""Errors raised by nearloop. One base, :class:`NearloopError`; subclasses carry data."""

from __future__ import annotations


class NearloopError(Exception):
    """Base of every error nearloop raises."""


class ProtocolError(NearloopError):
    """A message does not follow the nearloop / Majordomo wire protocol."""


class PayloadTooLarge(ProtocolError):
    """A message (or its header) is larger than the protocol allows; nothing was sent."""

    def __init__(self, size: int, limit: int, *, what: str = "message") -> None:
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit
        self.what = what


class RequestTimeout(NearloopError, TimeoutError):
    """No reply arrived before the call's timeout."""

    def __init__(self, service: str, request_id: int, timeout: float) -> None:
        super().__init__(
            f"no reply from service {service!r} to request {request_id} within {timeout:g} s"
        )
        self.service = service
        self.request_id = request_id
        self.timeout = timeout


class ClientClosed(NearloopError):
    """The client was closed while a call was waiting."""


class RemoteError(NearloopError):
    """The broker or a worker answered with an error reply.

    ``type`` is the protocol's error type (``no_worker``, ``queue_full``, ...),
    ``message`` the human text, ``traceback`` the worker's traceback if any.
    """

    type: str = "remote_error"

    def __init__(
        self, service: str, message: str, *, type: str | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(f"[{type or self.type}] service {service!r}: {message}")
        if type is not None:
            self.type = type
        self.service = service
        self.message = message
        self.traceback = traceback


class ServiceUnavailable(RemoteError):
    """No worker of the service took the request before its deadline."""

    type = "no_worker"


class QueueFull(RemoteError):
    """The service's bounded queue was full; the request was refused, not dropped."""

    type = "queue_full"


class RemotePayloadTooLarge(RemoteError):
    """The broker refused a message over its size limit."""

    type = "payload_too_large"


class MalformedRequest(RemoteError):
    """The broker or worker could not parse the request."""

    type = "malformed"


class WorkerError(RemoteError):
    """The worker's handler raised; ``message`` and ``traceback`` carry its text."""

    type = "worker_error"


class BrokerShutdown(RemoteError):
    """The broker shut down while the request was queued or in flight."""

    type = "broker_shutdown"


class WorkerLost(RemoteError):
    """Every worker that took the request died before replying (re-dispatch limit hit)."""

    type = "worker_lost"


class UnknownModel(RemoteError):
    """A block named a noise model that neither the worker nor the broker holds."""

    type = "unknown_model"


class BadModel(RemoteError):
    """A noise model was refused: too large, unparsable, or its hash does not match."""

    type = "bad_model"


class BadBlock(RemoteError):
    """A block's detection events have the wrong dtype or shape for its model."""

    type = "bad_block"


class UnknownSession(RemoteError):
    """The broker holds no session of that id for this client: never opened, closed, or
    expired after standing idle."""

    type = "unknown_session"


class SessionLost(RemoteError):
    """The worker a session was pinned to died or left; its state went with it. Open a new
    session."""

    type = "session_lost"


REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    cls.type: cls
    for cls in (
        ServiceUnavailable,
        QueueFull,
        RemotePayloadTooLarge,
        MalformedRequest,
        WorkerError,
        BrokerShutdown,
        WorkerLost,
        UnknownModel,
        BadModel,
        BadBlock,
        UnknownSession,
        SessionLost,
    )
}


def remote_error(
    service: str, type: str, message: str, traceback: str | None = None
) -> RemoteError:
    """Build the RemoteError subclass that matches a wire error type."""
    cls = REMOTE_ERRORS.get(type, RemoteError)
    return cls(service, message, type=type, traceback=traceback)
