"""The nearloop wire protocol: Majordomo MDP/0.1 and MDP/0.2 framing plus nearloop's extensions.

This module does no I/O. It holds the frame constants, every size limit (declared once,
``Final``), pure ``encode_*`` functions that build frame lists, and ``parse_*`` functions
that return a typed message or raise :class:`~client.errors.ProtocolError`. The broker,
the client library, the workers and the control runtime all import it.
``docs/PROTOCOL.md`` is the normative description; this module is its executable twin.

Frames are anything with the buffer protocol and a ``len()`` equal to its size in bytes:
``bytes``, a ``memoryview`` cast to bytes, or a ``zmq.Frame``.
"""

from __future__ import annotations

import hashlib
import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias

import msgpack
import numpy as np

from client.errors import PayloadTooLarge, ProtocolError

Frame: TypeAlias = Any
"""A wire frame: ``bytes``, a byte-cast ``memoryview`` or a ``zmq.Frame`` (``len()`` = bytes)."""

# --- Majordomo headers and commands (RFC 7 = MDP/0.1, RFC 18 = MDP/0.2) -------------------

EMPTY: Final = b""
MDPC01: Final = b"MDPC01"
MDPW01: Final = b"MDPW01"
MDPC02: Final = b"MDPC02"
MDPW02: Final = b"MDPW02"

# MDP/0.2 client commands.
C_REQUEST: Final = b"\x01"
C_PARTIAL: Final = b"\x02"
C_FINAL: Final = b"\x03"

# MDP/0.2 worker commands.
W_READY: Final = b"\x01"
W_REQUEST: Final = b"\x02"
W_PARTIAL: Final = b"\x03"
W_FINAL: Final = b"\x04"
W_HEARTBEAT: Final = b"\x05"
W_DISCONNECT: Final = b"\x06"

# MDP/0.1 worker commands (REPLY is the only reply; there is no PARTIAL).
W1_READY: Final = b"\x01"
W1_REQUEST: Final = b"\x02"
W1_REPLY: Final = b"\x03"
W1_HEARTBEAT: Final = b"\x04"
W1_DISCONNECT: Final = b"\x05"

# Majordomo Management Interface (RFC 8).
MMI_PREFIX: Final = b"mmi."
MMI_SERVICE: Final = b"mmi.service"
MMI_STATS: Final = b"mmi.stats"
MMI_OK: Final = b"200"
MMI_NOT_FOUND: Final = b"404"
MMI_NOT_IMPLEMENTED: Final = b"501"

# nearloop's broker-internal services (an extension; workers may not register nl.*).
NL_PREFIX: Final = b"nl."
NL_MODEL_PUT: Final = b"nl.model.put"
"""Store a noise model (header ``body={"hash": h}``, one frame of model text); replies
``body={"hash": h, "bytes": n}``. The broker checks the hash against the text."""
NL_MODEL_GET: Final = b"nl.model.get"
"""Fetch a stored model (header ``body={"hash": h}``); replies with one frame of text, or
an ``unknown_model`` error."""
NL_SESSION_OPEN: Final = b"nl.session.open"
"""Open a session pinned to one worker (header ``body={"service": name}``); replies
``body={"session": id, "service": name, "worker": hex identity}``."""
NL_SESSION: Final = b"nl.session"
"""A request within a session: the header's ``session`` names it, the body goes unchanged
to the pinned worker, and the reply (PARTIALs included) comes back as for any request."""
NL_SESSION_CLOSE: Final = b"nl.session.close"
"""Forget a session (header ``body={"session": id}``); replies ``body={"session": id}``."""

# --- Limits: each declared once, checked before anything is sent ------------------------

MAX_SERVICE_NAME_BYTES: Final = 255
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_ARRAYS: Final = 64
MAX_ARRAY_NDIM: Final = 32
MAX_FRAMES: Final = MAX_ARRAYS + 8
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
MAX_CREDIT: Final = 4096
MAX_ERROR_TEXT: Final = 4096
"""Characters of an error message, and of a traceback's tail, that an error reply carries."""
ZERO_COPY_THRESHOLD_BYTES: Final = 64 * 1024
INLINE_ARRAY_MAX_BYTES: Final = 4096
"""Arrays this small travel inside the header, not as frames of their own (§3.3)."""
INLINE_TOTAL_MAX_BYTES: Final = 16 * 1024
"""Bound on the inline array bytes of one header, well inside MAX_HEADER_BYTES."""
MAX_MODEL_BYTES: Final = 16 * 1024 * 1024
"""One noise model's text (a d=15 surface-code DEM is about 1.2 MB)."""
MAX_MODELS: Final = 64
MAX_MODEL_STORE_BYTES: Final = 256 * 1024 * 1024
MAX_SESSIONS: Final = 4096
"""Sessions one broker holds at most by default (``--max-sessions``), lost ones included."""
"""What the broker's model store holds at most; the least recently used model goes first."""

# --- Liveness ----------------------------------------------------------------------------

DEFAULT_HEARTBEAT_MS: Final = 250
DEFAULT_LIVENESS: Final = 3
PLAIN_PEER_HEARTBEAT_MS: Final = 2500
"""The RFC reference code heartbeats every 2.5 s; peers that declare nothing get this much."""
MIN_HEARTBEAT_MS: Final = 5
MAX_HEARTBEAT_MS: Final = 60_000

# --- nearloop header kinds and error types ----------------------------------------------

KIND_REQUEST: Final = "request"
KIND_REPLY: Final = "reply"
KIND_ERROR: Final = "error"

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

ALLOWED_DTYPES: Final = frozenset(
    ["|b1", "|i1", "|u1"]
    + [f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (2, 4, 8)]
    + [f"{order}{kind}" for order in "<>" for kind in ("f2", "f4", "f8", "c8", "c16")]
)
"""Canonical numpy ``dtype.str`` spellings on the wire: bool, integers, IEEE floats and
complex, either byte order. Never objects (no pickle, ever), never platform-sized types."""
MAX_LIVENESS: Final = 100

_MAX_U64: Final = 2**64 - 1


# --- typed messages ----------------------------------------------------------------------


class ClientRequest(NamedTuple):
    """A client's REQUEST as the broker sees it (MDP/0.1 REQUEST or MDP/0.2 REQUEST)."""

    version: int
    service: bytes
    body: list[Frame]


class WorkerReady(NamedTuple):
    """A worker's READY, with nearloop's optional options frame (msgpack) if present."""

    version: int
    service: bytes
    options: WorkerOptions


class WorkerReply(NamedTuple):
    """A worker's PARTIAL or FINAL (MDP/0.2), or REPLY (MDP/0.1, always final)."""

    version: int
    final: bool
    address: bytes
    body: list[Frame]


class WorkerHeartbeat(NamedTuple):
    """HEARTBEAT from a worker."""

    version: int


class WorkerDisconnect(NamedTuple):
    """DISCONNECT from a worker."""

    version: int


class BrokerReply(NamedTuple):
    """A PARTIAL or FINAL (or 0.1 REPLY) as a client receives it."""

    version: int
    final: bool
    service: bytes
    body: list[Frame]


class BrokerRequest(NamedTuple):
    """A REQUEST as a worker receives it; ``address`` must be echoed in the reply."""

    version: int
    address: bytes
    body: list[Frame]


class BrokerHeartbeat(NamedTuple):
    """HEARTBEAT from the broker to a worker."""

    version: int


class BrokerDisconnect(NamedTuple):
    """DISCONNECT from the broker to a worker."""

    version: int


PeerMessage: TypeAlias = (
    ClientRequest | WorkerReady | WorkerReply | WorkerHeartbeat | WorkerDisconnect
)
WorkerInbound: TypeAlias = BrokerRequest | BrokerHeartbeat | BrokerDisconnect


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """nearloop's READY extension: what a worker declares about itself.

    A plain Majordomo worker sends no options frame and gets ``credit=1`` and the
    RFC reference heartbeat of 2.5 s.
    """

    credit: int = 1
    heartbeat_ms: int = PLAIN_PEER_HEARTBEAT_MS
    liveness: int = DEFAULT_LIVENESS
    declared: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.credit <= MAX_CREDIT:
            raise ProtocolError(f"credit must be in 1..{MAX_CREDIT}, got {self.credit}")
        if not MIN_HEARTBEAT_MS <= self.heartbeat_ms <= MAX_HEARTBEAT_MS:
            raise ProtocolError(
                f"heartbeat_ms must be in {MIN_HEARTBEAT_MS}..{MAX_HEARTBEAT_MS}, "
                f"got {self.heartbeat_ms}"
            )
        if not 1 <= self.liveness <= MAX_LIVENESS:
            raise ProtocolError(f"liveness must be in 1..{MAX_LIVENESS}, got {self.liveness}")


PLAIN_WORKER: Final = WorkerOptions()


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """dtype and shape of one raw array frame."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int = field(init=False, repr=False, compare=False)
    """Size in bytes of an array of this spec."""
    np_dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)
    """The parsed numpy dtype."""

    def __post_init__(self) -> None:
        if self.dtype not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"dtype {self.dtype!r} is not one of the wire dtypes {sorted(ALLOWED_DTYPES)}"
            )
        dt = np.dtype(self.dtype)
        if len(self.shape) > MAX_ARRAY_NDIM:
            raise ProtocolError(f"array has {len(self.shape)} dimensions, max {MAX_ARRAY_NDIM}")
        if any(type(n) is not int or n < 0 for n in self.shape):
            raise ProtocolError(f"bad array shape {self.shape!r}")
        object.__setattr__(self, "nbytes", dt.itemsize * math.prod(self.shape))
        object.__setattr__(self, "np_dtype", dt)


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


# --- Majordomo encode --------------------------------------------------------------------


def encode_client_request(version: int, service: bytes, body: Sequence[Frame]) -> list[Frame]:
    """Frames a client sends on its DEALER socket (0.1 includes the REQ-style empty frame)."""
    check_service_name(service)
    if version == 2:
        return [MDPC02, C_REQUEST, service, *body]
    if version == 1:
        return [EMPTY, MDPC01, service, *body]
    raise ValueError(f"unknown MDP version {version}")


def encode_client_reply(
    version: int, final: bool, service: bytes, body: Sequence[Frame]
) -> list[Frame]:
    """Frames the broker sends a client, without the ROUTER identity frame."""
    if version == 2:
        return [MDPC02, C_FINAL if final else C_PARTIAL, service, *body]
    return [EMPTY, MDPC01, service, *body]


def encode_worker_ready(
    version: int, service: bytes, options: WorkerOptions | None = None
) -> list[Frame]:
    """READY; nearloop workers append a msgpack options frame (credit, heartbeat)."""
    check_service_name(service)
    frames: list[Frame] = (
        [MDPW02, W_READY, service]
        if version == 2
        else [
            EMPTY,
            MDPW01,
            W1_READY,
            service,
        ]
    )
    if options is not None:
        frames.append(
            msgpack.packb(
                {
                    "credit": options.credit,
                    "heartbeat_ms": options.heartbeat_ms,
                    "liveness": options.liveness,
                }
            )
        )
    return frames


def encode_worker_request(version: int, address: bytes, body: Sequence[Frame]) -> list[Frame]:
    """REQUEST from the broker to a worker, without the ROUTER identity frame."""
    if version == 2:
        return [MDPW02, W_REQUEST, address, EMPTY, *body]
    return [EMPTY, MDPW01, W1_REQUEST, address, EMPTY, *body]


def encode_worker_reply(
    version: int, final: bool, address: bytes, body: Sequence[Frame]
) -> list[Frame]:
    """PARTIAL/FINAL (0.2) or REPLY (0.1, ``final`` must be true) from a worker."""
    if version == 2:
        return [MDPW02, W_FINAL if final else W_PARTIAL, address, EMPTY, *body]
    if not final:
        raise ValueError("MDP/0.1 has no PARTIAL")
    return [EMPTY, MDPW01, W1_REPLY, address, EMPTY, *body]


def encode_worker_heartbeat(version: int) -> list[Frame]:
    """HEARTBEAT, either direction."""
    return [MDPW02, W_HEARTBEAT] if version == 2 else [EMPTY, MDPW01, W1_HEARTBEAT]


def encode_worker_disconnect(version: int) -> list[Frame]:
    """DISCONNECT, either direction."""
    return [MDPW02, W_DISCONNECT] if version == 2 else [EMPTY, MDPW01, W1_DISCONNECT]


_SERVICE_NAME: Final = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_SERVICE_NAME_BYTES)


_valid_names: set[bytes] = set()


def check_service_name(service: bytes) -> None:
    """Raise ProtocolError unless ``service`` is 1..255 printable ASCII bytes, no spaces."""
    if service in _valid_names:  # loops call the same few services
        return
    if len(_valid_names) < 1024 and _SERVICE_NAME.fullmatch(service) is not None:
        _valid_names.add(service)
        return
    if _SERVICE_NAME.fullmatch(service) is None:
        raise ProtocolError(
            f"service name {service[:40]!r} is not 1..{MAX_SERVICE_NAME_BYTES} printable "
            "ASCII bytes"
        )


# --- Majordomo parse ---------------------------------------------------------------------


def parse_peer_message(frames: Sequence[Frame]) -> PeerMessage:
    """Parse what the broker's ROUTER received, *after* the identity frame was removed.

    ``frames[0]`` here is the first frame the peer sent. Raises ProtocolError.
    """
    n = len(frames)
    if n < 2:
        raise ProtocolError(f"{n} frame(s): too short for any Majordomo command")
    first = frames[0]
    if first == MDPC02:
        if n < 3 or frames[1] != C_REQUEST:
            raise ProtocolError("MDPC02 message is not a REQUEST with a service frame")
        return ClientRequest(2, _service(frames[2]), list(frames[3:]))
    if first == MDPW02:
        return _parse_worker(2, frames, 1)
    if first == EMPTY and n >= 3:
        proto = frames[1]
        if proto == MDPC01:
            return ClientRequest(1, _service(frames[2]), list(frames[3:]))
        if proto == MDPW01:
            return _parse_worker(1, frames, 2)
    raise ProtocolError("not a Majordomo MDP/0.1 or MDP/0.2 client or worker message")


def _parse_worker(version: int, frames: Sequence[Frame], at: int) -> PeerMessage:
    n = len(frames)
    cmd = frames[at]
    if version == 2:
        ready, partial, final, heartbeat, disconnect = (
            W_READY,
            W_PARTIAL,
            W_FINAL,
            W_HEARTBEAT,
            W_DISCONNECT,
        )
    else:
        ready, partial, final, heartbeat, disconnect = (
            W1_READY,
            None,
            W1_REPLY,
            W1_HEARTBEAT,
            W1_DISCONNECT,
        )
    if cmd == final or (partial is not None and cmd == partial):
        if n < at + 3 or len(frames[at + 2]) != 0:
            raise ProtocolError("reply lacks the client address and empty delimiter")
        return WorkerReply(version, cmd == final, bytes(frames[at + 1]), list(frames[at + 3 :]))
    if cmd == heartbeat:
        return WorkerHeartbeat(version)
    if cmd == ready:
        if n < at + 2:
            raise ProtocolError("READY without a service name")
        opts = parse_worker_options(frames[at + 2]) if n > at + 2 else PLAIN_WORKER
        return WorkerReady(version, _service(frames[at + 1]), opts)
    if cmd == disconnect:
        return WorkerDisconnect(version)
    raise ProtocolError(f"unknown worker command {_short(bytes(cmd))} for MDP/0.{version}")


def parse_worker_options(frame: Frame) -> WorkerOptions:
    """Parse nearloop's optional READY frame: a msgpack map of credit and heartbeat."""
    raw = _unpack(frame, "READY options")
    if not isinstance(raw, dict):
        raise ProtocolError("READY options frame is not a map")
    try:
        return WorkerOptions(
            credit=_int(raw.get("credit", 1), "credit"),
            heartbeat_ms=_int(raw.get("heartbeat_ms", PLAIN_PEER_HEARTBEAT_MS), "heartbeat_ms"),
            liveness=_int(raw.get("liveness", DEFAULT_LIVENESS), "liveness"),
            declared=True,
        )
    except TypeError as exc:
        raise ProtocolError(f"bad READY options: {exc}") from exc


def parse_broker_reply(frames: Sequence[Frame]) -> BrokerReply:
    """Parse what a client's DEALER received from the broker."""
    n = len(frames)
    if n >= 3 and frames[0] == MDPC02:
        cmd = frames[1]
        if cmd not in (C_PARTIAL, C_FINAL):
            raise ProtocolError(f"unexpected client command {_short(bytes(cmd))}")
        return BrokerReply(2, cmd == C_FINAL, bytes(frames[2]), list(frames[3:]))
    if n >= 3 and frames[0] == EMPTY and frames[1] == MDPC01:
        return BrokerReply(1, True, bytes(frames[2]), list(frames[3:]))
    raise ProtocolError("not an MDP client reply")


def parse_broker_to_worker(frames: Sequence[Frame], version: int = 2) -> WorkerInbound:
    """Parse what a worker's DEALER received from the broker."""
    at = 1 if version == 2 else 2
    proto = MDPW02 if version == 2 else MDPW01
    n = len(frames)
    if n <= at or frames[at - 1] != proto or (version == 1 and frames[0] != EMPTY):
        raise ProtocolError(f"not an MDP/0.{version} worker command")
    cmd = frames[at]
    request, heartbeat, disconnect = (
        (W_REQUEST, W_HEARTBEAT, W_DISCONNECT)
        if version == 2
        else (W1_REQUEST, W1_HEARTBEAT, W1_DISCONNECT)
    )
    if cmd == request:
        if n < at + 3 or len(frames[at + 2]) != 0:
            raise ProtocolError("REQUEST lacks the client address and empty delimiter")
        return BrokerRequest(version, bytes(frames[at + 1]), list(frames[at + 3 :]))
    if cmd == heartbeat:
        return BrokerHeartbeat(version)
    if cmd == disconnect:
        return BrokerDisconnect(version)
    raise ProtocolError(f"unknown broker command {_short(bytes(cmd))}")


def _service(frame: Frame) -> bytes:
    name = bytes(frame)
    check_service_name(name)
    return name


# --- nearloop body: header + raw array frames --------------------------------------------

_packer = msgpack.Packer(use_bin_type=True)


def model_hash(text: bytes) -> str:
    """A noise model's content hash: the hex SHA-256 of its text. Blocks carry this, never
    the text."""
    return hashlib.sha256(text).hexdigest()


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
        e = {"type": _text(error.type[:64]), "message": _text(error.message[:MAX_ERROR_TEXT])}
        if error.traceback is not None:
            e["traceback"] = _text(error.traceback[-MAX_ERROR_TEXT:])
        m["error"] = e
    if session is not None:
        m["session"] = session
    try:
        out: bytes = _packer.pack(m)
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
    m = _unpack(frame, "header")
    if type(m) is not dict:
        raise ProtocolError("header is not a msgpack map")
    ident = m.get("id")
    kind = m.get("kind")
    if type(ident) is not int or not 0 <= ident <= _MAX_U64:
        raise ProtocolError(f"header id must be an integer in 0..2**64-1, got {_short(ident)}")
    if type(kind) is not str:
        raise ProtocolError(f"header kind must be a string, got {_short(kind)}")
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
        raise ProtocolError(f"ttl_ms must be an integer >= 0, got {_short(ttl)}")
    specs: tuple[ArraySpec, ...] = ()
    inline: tuple[bytes | None, ...] = ()
    raw_arrays = m.get("arrays")
    if raw_arrays is not None:
        specs, inline = _parse_specs(raw_arrays)
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
            f"header session must be an integer in 0..2**64-1, got {_short(session)}"
        )
    return Header(ident, kind, ts, ttl, specs, m.get("body"), error, session, inline)


def _parse_specs(raw: Any) -> tuple[tuple[ArraySpec, ...], tuple[bytes | None, ...]]:
    if type(raw) is not list or len(raw) > MAX_ARRAYS:
        raise ProtocolError(f"header arrays must be a list of at most {MAX_ARRAYS}")
    specs = []
    inline: list[bytes | None] = []
    any_inline = False
    for a in raw:
        if type(a) is not list or not 2 <= len(a) <= 3 or type(a[1]) is not list:
            raise ProtocolError(f"bad array spec {_short(a)}")
        key = (a[0], tuple(a[1]))  # unhashable parts raise TypeError: parse_header's guard
        spec = _specs.get(key)
        if spec is None:  # a spec not seen before: check it in full
            if type(a[0]) is not str or not all(type(n) is int for n in a[1]):
                raise ProtocolError(f"bad array spec {_short(a)}")
            spec = array_spec(*key)
        specs.append(spec)
        if len(a) == 3:
            data = a[2]
            if type(data) is not bytes or len(data) != spec.nbytes:
                raise ProtocolError(
                    f"inline data of {spec.dtype}{list(spec.shape)} must be bin of "
                    f"{spec.nbytes} bytes, got {_short(data)}"
                )
            any_inline = True
            inline.append(data)
        else:
            inline.append(None)
    return tuple(specs), (tuple(inline) if any_inline else ())


_specs: dict[tuple[str, tuple[int, ...]], ArraySpec] = {}
_SPEC_CACHE_SIZE: Final = 4096


def array_spec(dtype: str, shape: tuple[int, ...]) -> ArraySpec:
    """A validated ArraySpec; loops send the same few specs, so they are validated once."""
    key = (dtype, shape)
    spec = _specs.get(key)
    if spec is None:
        spec = ArraySpec(dtype, shape)
        if len(_specs) >= _SPEC_CACHE_SIZE:
            _specs.clear()
        _specs[key] = spec
    return spec


class PackedArrays(NamedTuple):
    """Arrays ready to send: the header's specs and inline bytes, and the frames after it."""

    specs: tuple[ArraySpec, ...]
    inline: tuple[bytes | None, ...]
    """As :attr:`Header.inline`: empty when no array is inline."""
    frames: list[memoryview]


def arrays_to_frames(arrays: Sequence[Any]) -> PackedArrays:
    """Describe numpy arrays and expose their memory, copying only to make them
    C-contiguous. Arrays of at most INLINE_ARRAY_MAX_BYTES go inside the header, up to
    INLINE_TOTAL_MAX_BYTES in all (each frame costs every process hop a little); the
    others become frames."""
    if len(arrays) > MAX_ARRAYS:
        raise ProtocolError(f"{len(arrays)} arrays, max {MAX_ARRAYS}")
    specs = []
    inline: list[bytes | None] = []
    frames = []
    inline_left = INLINE_TOTAL_MAX_BYTES
    for a in arrays:
        arr = a if type(a) is np.ndarray else np.asarray(a)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
        spec = array_spec(arr.dtype.str, arr.shape)
        specs.append(spec)
        nbytes = spec.nbytes
        if nbytes <= INLINE_ARRAY_MAX_BYTES and nbytes <= inline_left:
            inline_left -= nbytes
            inline.append(arr.tobytes())  # small: a copy costs less than a memoryview
        else:
            inline.append(None)
            frames.append(arr.reshape(-1).data.cast("B") if nbytes else memoryview(b""))
    if len(frames) == len(specs):
        return PackedArrays(tuple(specs), (), frames)  # nothing went inline
    return PackedArrays(tuple(specs), tuple(inline), frames)


def frames_to_arrays(
    specs: Sequence[ArraySpec], frames: Sequence[Frame], inline: Sequence[bytes | None] = ()
) -> tuple[Any, ...]:
    """Rebuild arrays as views over the received frames' memory (or the header's inline
    bytes), without copying. ``inline`` is :attr:`Header.inline`."""
    if inline:
        return _with_inline(specs, frames, inline)
    if len(specs) != len(frames):
        raise ProtocolError(f"header lists {len(specs)} arrays but {len(frames)} frames follow")
    out = []
    for spec, frame in zip(specs, frames):  # noqa: B905 (lengths checked above)
        size = len(frame)
        if size != spec.nbytes:
            raise ProtocolError(
                f"array frame of {size} bytes does not match {spec.dtype}{list(spec.shape)} "
                f"({spec.nbytes} bytes)"
            )
        a = np.frombuffer(getattr(frame, "buffer", frame), dtype=spec.np_dtype)
        out.append(a if len(spec.shape) == 1 else a.reshape(spec.shape))
    return tuple(out)


def _with_inline(
    specs: Sequence[ArraySpec], frames: Sequence[Frame], inline: Sequence[bytes | None]
) -> tuple[Any, ...]:
    n_framed = len(specs) - (len(inline) - inline.count(None))
    if n_framed != len(frames):
        raise ProtocolError(f"header lists {n_framed} arrays but {len(frames)} frames follow")
    out = []
    i = 0
    for spec, data in zip(specs, inline, strict=True):
        if data is None:
            out.append(frames_to_arrays((spec,), (frames[i],))[0])
            i += 1
            continue
        # Its length was checked by parse_header; a copy, writable like a frame's.
        a = np.frombuffer(bytearray(data), dtype=spec.np_dtype)
        out.append(a if len(spec.shape) == 1 else a.reshape(spec.shape))
    return tuple(out)


def body_size(frames: Sequence[Frame]) -> int:
    """Total bytes of a list of frames."""
    return sum(len(f) for f in frames)


def check_body_size(frames: Sequence[Frame]) -> None:
    """Raise PayloadTooLarge before sending a body larger than MAX_MESSAGE_BYTES."""
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"{len(frames)} frames, max {MAX_FRAMES}")
    size = body_size(frames)
    if size > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(size, MAX_MESSAGE_BYTES)


def _unpack(frame: Frame, what: str) -> Any:
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{what} of {len(frame)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from exc


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 40, 40, 6, 6


def _short(value: Any) -> str:
    """A bounded repr for error texts: never huge, never recursing deep."""
    return _repr.repr(value)


def _text(s: str) -> str:
    """A string msgpack can always encode (lone surrogates escaped)."""
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _int(value: Any, name: str) -> int:
    if type(value) is not int:
        raise ProtocolError(f"{name} must be an integer, got {type(value).__name__}")
    return value
