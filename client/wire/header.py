"""The nearloop header: the msgpack map that starts every nearloop body (PROTOCOL.md §3.2).

It carries the request id, the kind (request, reply, error), timestamps, a time to live,
the specs of the arrays that follow (and the small ones themselves, inline), a msgpack
body, an error, and a session id. The error types an error reply may carry are named
here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from client.wire.arrays import ArraySpec, parse_specs
from client.wire.codec import packer, short, text, unpack
from client.wire.errors import PayloadTooLarge, ProtocolError
from client.wire.frames import Frame
from client.wire.limits import MAX_ERROR_TEXT, MAX_HEADER_BYTES

_MAX_U64: Final = 2**64 - 1

# --- kinds and error types ----------------------------------------------------------------

KIND_REQUEST: Final = "request"
KIND_REPLY: Final = "reply"
KIND_ERROR: Final = "error"
KIND_LANE: Final = "lane"
"""The broker asks a session's worker to create the session's lane (PROTOCOL.md §3.10)."""

ERR_NO_WORKER: Final = "no_worker"
ERR_QUEUE_FULL: Final = "queue_full"
ERR_TOO_LARGE: Final = "payload_too_large"
ERR_MALFORMED: Final = "malformed"
ERR_WORKER: Final = "worker_error"
ERR_SHUTDOWN: Final = "broker_shutdown"
ERR_WORKER_LOST: Final = "worker_lost"
ERR_UNKNOWN_MODEL: Final = "unknown_model"
ERR_BAD_MODEL: Final = "bad_model"
ERR_BAD_BLOCK: Final = "bad_block"
ERR_UNKNOWN_SESSION: Final = "unknown_session"
ERR_SESSION_LOST: Final = "session_lost"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The error carried by an error reply: a machine-readable type and a human message."""

    type: str
    message: str
    traceback: str | None = None


class Header(NamedTuple):
    """The msgpack header frame that starts every nearloop body.

    Immutable, and a NamedTuple rather than a dataclass because one is built per message
    on the hot path: :func:`parse_header` checks every invariant before building one.
    """

    id: int
    kind: str
    ts: Mapping[str, int] = MappingProxyType({})
    ttl_ms: int | None = None
    arrays: tuple[ArraySpec, ...] = ()
    body: Any = None
    error: ErrorInfo | None = None
    session: int | None = None
    inline: tuple[bytes | None, ...] = ()
    """Per entry of ``arrays``: its bytes if it travels inside the header, None if as a
    frame. Empty when no array is inline."""


def encode_header(
    *,
    id: int,
    kind: str,
    ts: Mapping[str, int] | None = None,
    ttl_ms: int | None = None,
    arrays: Sequence[ArraySpec] = (),
    body: Any = None,
    error: ErrorInfo | None = None,
    session: int | None = None,
    inline: Sequence[bytes | None] = (),
) -> bytes:
    """msgpack-encode a header; only the fields that are set go on the wire.

    ``inline``, if given, holds for each of ``arrays`` its bytes, to carry inside the
    header, or None where the array travels as a frame.
    """
    m: dict[str, Any] = {"id": id, "kind": kind}
    if ts:
        m["ts"] = ts if type(ts) is dict else dict(ts)
    if ttl_ms is not None:
        m["ttl_ms"] = ttl_ms
    if inline:
        m["arrays"] = [
            (a.dtype, a.shape) if d is None else (a.dtype, a.shape, d)
            for a, d in zip(arrays, inline, strict=True)
        ]
    elif arrays:
        m["arrays"] = [(a.dtype, a.shape) for a in arrays]  # tuples pack as msgpack arrays
    if body is not None:
        m["body"] = body
    if error is not None:
        # Truncated, so that an error reply can never be too large to send.
        e = {"type": text(error.type[:64]), "message": text(error.message[:MAX_ERROR_TEXT])}
        if error.traceback is not None:
            e["traceback"] = text(error.traceback[-MAX_ERROR_TEXT:])
        m["error"] = e
    if session is not None:
        m["session"] = session
    try:
        out: bytes = packer.pack(m)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"header body is not msgpack-serialisable: {exc}") from exc
    if len(out) > MAX_HEADER_BYTES:
        raise PayloadTooLarge(len(out), MAX_HEADER_BYTES, what="header")
    return out


def parse_header(frame: Frame) -> Header:
    """Decode and validate a header frame. Raises ProtocolError, and nothing else."""
    try:
        return _parse_header(frame)
    except (TypeError, ValueError, RecursionError) as exc:  # hostile nesting or types
        raise ProtocolError(f"header cannot be read: {type(exc).__name__}: {exc}") from exc


def _parse_header(frame: Frame) -> Header:
    m = unpack(frame, "header")
    if type(m) is not dict:
        raise ProtocolError("header is not a msgpack map")
    ident = m.get("id")
    kind = m.get("kind")
    if type(ident) is not int or not 0 <= ident <= _MAX_U64:
        raise ProtocolError(f"header id must be an integer in 0..2**64-1, got {short(ident)}")
    if type(kind) is not str:
        raise ProtocolError(f"header kind must be a string, got {short(kind)}")
    ts = m.get("ts")
    if ts is None:
        ts = {}
    elif type(ts) is dict:
        for k, v in ts.items():
            if type(k) is not str or type(v) is not int:
                raise ProtocolError("header ts must map names to integer nanoseconds")
    else:
        raise ProtocolError("header ts must map names to integer nanoseconds")
    ttl = m.get("ttl_ms")
    if ttl is not None and (type(ttl) is not int or ttl < 0):
        raise ProtocolError(f"ttl_ms must be an integer >= 0, got {short(ttl)}")
    specs: tuple[ArraySpec, ...] = ()
    inline: tuple[bytes | None, ...] = ()
    raw_arrays = m.get("arrays")
    if raw_arrays is not None:
        specs, inline = parse_specs(raw_arrays)
    error = None
    err = m.get("error")
    if err is not None:
        if not (
            type(err) is dict and type(err.get("type")) is str and type(err.get("message")) is str
        ):
            raise ProtocolError("header error must carry a type and a message")
        tb = err.get("traceback")
        error = ErrorInfo(err["type"], err["message"], tb if type(tb) is str else None)
    elif kind == KIND_ERROR:
        raise ProtocolError("an error header needs an error")
    session = m.get("session")
    if session is not None and (type(session) is not int or not 0 <= session <= _MAX_U64):
        raise ProtocolError(
            f"header session must be an integer in 0..2**64-1, got {short(session)}"
        )
    return Header(ident, kind, ts, ttl, specs, m.get("body"), error, session, inline)
