"""Majordomo framing (MDP/0.1, RFC 7; MDP/0.2, RFC 18) and nearloop's own service names.

The frame constants, the typed messages a peer receives, pure ``encode_*`` functions that
build frame lists, and ``parse_*`` functions that return a typed message or raise
:class:`~client.wire.errors.ProtocolError`. PROTOCOL.md §2 is the normative text.

Frames are anything with the buffer protocol and a ``len()`` equal to its size in bytes:
``bytes``, a ``memoryview`` cast to bytes, or a ``zmq.Frame``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeAlias

import msgpack

from client.wire.codec import int_field, short, unpack
from client.wire.errors import PayloadTooLarge, ProtocolError
from client.wire.limits import (
    DEFAULT_LIVENESS,
    MAX_CREDIT,
    MAX_DECLARED_GIDS,
    MAX_FRAMES,
    MAX_HEARTBEAT_MS,
    MAX_HOST_ID_CHARS,
    MAX_LANE_TRANSPORTS,
    MAX_LANES_CLOSED,
    MAX_LIVENESS,
    MAX_MESSAGE_BYTES,
    MAX_SERVICE_NAME_BYTES,
    MAX_UNIX_ID,
    MIN_HEARTBEAT_MS,
    PLAIN_PEER_HEARTBEAT_MS,
)

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
MMI_INSTANCE: Final = b"mmi.instance"
"""A nearloop extension: the broker answers ``200`` and its instance id, 16 hex digits
drawn when it started. A client asks it once connected, and again after a drop, to tell
a restarted broker (which lost its requests) from a reset connection to the same one."""
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
    """HEARTBEAT from a worker; a nearloop worker may add the lane sessions it has closed
    since its last one (PROTOCOL.md §3.10)."""

    version: int
    lanes_closed: tuple[int, ...] = ()
    lane_replies: tuple[int, int] | None = None
    """FINAL replies the worker has sent on its lanes since it started: ok, error."""


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
class PeerUser:
    """The user a peer says it runs as, for lanes (PROTOCOL.md §3.10): its effective uid,
    and its groups, the effective gid first (the group that owns the files it creates).
    Self-declared: the broker cannot check it.

    >>> PeerUser(1000, (1000, 27)).wire()
    {'uid': 1000, 'gids': [1000, 27]}
    >>> PeerUser(1000, ())
    Traceback (most recent call last):
    ...
    client.wire.errors.ProtocolError: gids must list 1..256 integers in 0..4294967295, ...
    """

    uid: int
    gids: tuple[int, ...]

    def __post_init__(self) -> None:
        if type(self.uid) is not int or not 0 <= self.uid <= MAX_UNIX_ID:
            raise ProtocolError(f"uid must be an integer in 0..{MAX_UNIX_ID}, got {self.uid!r}")
        if not 0 < len(self.gids) <= MAX_DECLARED_GIDS or not all(
            type(g) is int and 0 <= g <= MAX_UNIX_ID for g in self.gids
        ):
            raise ProtocolError(
                f"gids must list 1..{MAX_DECLARED_GIDS} integers in 0..{MAX_UNIX_ID}, "
                f"the effective gid first; got {short(self.gids)}"
            )

    def wire(self) -> dict[str, Any]:
        """The ``uid`` and ``gids`` fields a READY options frame or a lane ask carries."""
        return {"uid": self.uid, "gids": list(self.gids)}

    @classmethod
    def from_wire(cls, raw: dict[Any, Any]) -> PeerUser | None:
        """The user a map's ``uid`` and ``gids`` declare; None if it has no ``uid``.
        ProtocolError if they are malformed."""
        if "uid" not in raw:
            return None
        gids = raw.get("gids")
        if not isinstance(gids, (list, tuple)):
            raise ProtocolError("gids must be a list of integers")
        return cls(raw["uid"], tuple(gids))


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
    host: str | None = None
    """The worker's host identity, for lanes (PROTOCOL.md §3.10); None: not declared."""
    lanes: tuple[str, ...] = ()
    """The lane transports the worker serves, e.g. ``("iceoryx2",)``."""
    user: PeerUser | None = None
    """The user the worker runs as, for lanes; None: not declared (no lanes then)."""

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
        if self.host is not None and not (
            type(self.host) is str and 0 < len(self.host) <= MAX_HOST_ID_CHARS
        ):
            raise ProtocolError(f"host must be a str of 1..{MAX_HOST_ID_CHARS} characters")
        if len(self.lanes) > MAX_LANE_TRANSPORTS or not all(
            type(t) is str and 0 < len(t) <= MAX_HOST_ID_CHARS for t in self.lanes
        ):
            raise ProtocolError(f"lanes must list at most {MAX_LANE_TRANSPORTS} transport names")


PLAIN_WORKER: Final = WorkerOptions()


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
        declared: dict[str, Any] = {
            "credit": options.credit,
            "heartbeat_ms": options.heartbeat_ms,
            "liveness": options.liveness,
        }
        if options.host is not None:
            declared["host"] = options.host
            declared["lanes"] = list(options.lanes)
        if options.user is not None:
            declared.update(options.user.wire())
        frames.append(msgpack.packb(declared))
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


def encode_worker_heartbeat(
    version: int,
    lanes_closed: Sequence[int] = (),
    *,
    lane_replies: tuple[int, int] | None = None,
) -> list[Frame]:
    """HEARTBEAT, either direction; a worker's may list the lane sessions it has closed,
    and count the FINAL replies it has sent on lanes (MDP/0.2 only, PROTOCOL.md §3.10)."""
    if version != 2:
        return [EMPTY, MDPW01, W1_HEARTBEAT]
    options: dict[str, list[int]] = {}
    if lanes_closed:
        options["lanes_closed"] = list(lanes_closed)
    if lane_replies is not None:
        options["lane_replies"] = list(lane_replies)
    if options:
        return [MDPW02, W_HEARTBEAT, msgpack.packb(options)]
    return [MDPW02, W_HEARTBEAT]


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
        if n > at + 1 and version == 2:
            try:
                return WorkerHeartbeat(version, *parse_heartbeat_options(frames[at + 1]))
            except ProtocolError:
                pass  # RFC 18 has no frames here: a plain worker's extras are ignored
        return WorkerHeartbeat(version)
    if cmd == ready:
        if n < at + 2:
            raise ProtocolError("READY without a service name")
        opts = parse_worker_options(frames[at + 2]) if n > at + 2 else PLAIN_WORKER
        return WorkerReady(version, _service(frames[at + 1]), opts)
    if cmd == disconnect:
        return WorkerDisconnect(version)
    raise ProtocolError(f"unknown worker command {short(bytes(cmd))} for MDP/0.{version}")


def parse_worker_options(frame: Frame) -> WorkerOptions:
    """Parse nearloop's optional READY frame: a msgpack map of credit and heartbeat."""
    raw = unpack(frame, "READY options")
    if not isinstance(raw, dict):
        raise ProtocolError("READY options frame is not a map")
    lanes = raw.get("lanes", ())
    if not isinstance(lanes, (list, tuple)):
        raise ProtocolError("READY options: lanes must be a list of transport names")
    try:
        return WorkerOptions(
            credit=int_field(raw.get("credit", 1), "credit"),
            heartbeat_ms=int_field(
                raw.get("heartbeat_ms", PLAIN_PEER_HEARTBEAT_MS), "heartbeat_ms"
            ),
            liveness=int_field(raw.get("liveness", DEFAULT_LIVENESS), "liveness"),
            declared=True,
            host=raw.get("host"),
            lanes=tuple(lanes),
            user=PeerUser.from_wire(raw),
        )
    except TypeError as exc:
        raise ProtocolError(f"bad READY options: {exc}") from exc


def parse_heartbeat_options(frame: Frame) -> tuple[tuple[int, ...], tuple[int, int] | None]:
    """What a worker's HEARTBEAT options say (PROTOCOL.md §3.10): the lane sessions it has
    closed, and the FINAL replies it has sent on lanes (ok, error), if it counts them.

    >>> parse_heartbeat_options(msgpack.packb({"lanes_closed": [3, 4]}))
    ((3, 4), None)
    >>> parse_heartbeat_options(msgpack.packb({"lane_replies": [7, 1]}))
    ((), (7, 1))
    >>> parse_heartbeat_options(msgpack.packb({"lanes_closed": ["x"]}))
    Traceback (most recent call last):
    ...
    client.wire.errors.ProtocolError: HEARTBEAT: lanes_closed must list at most 4096 session ids
    """
    raw = unpack(frame, "HEARTBEAT options")
    replies = raw.get("lane_replies") if isinstance(raw, dict) else None
    if replies is not None and not (
        isinstance(replies, (list, tuple))
        and len(replies) == 2
        and all(type(n) is int and 0 <= n < 2**64 for n in replies)
    ):
        raise ProtocolError("HEARTBEAT: lane_replies must be two counts, ok and error")
    ids = raw.get("lanes_closed", ()) if isinstance(raw, dict) else None
    if (
        not isinstance(ids, (list, tuple))
        or len(ids) > MAX_LANES_CLOSED
        or not all(type(i) is int and 0 <= i < 2**64 for i in ids)
    ):
        raise ProtocolError(
            f"HEARTBEAT: lanes_closed must list at most {MAX_LANES_CLOSED} session ids"
        )
    return tuple(ids), None if replies is None else (replies[0], replies[1])


def parse_broker_reply(frames: Sequence[Frame]) -> BrokerReply:
    """Parse what a client's DEALER received from the broker."""
    n = len(frames)
    if n >= 3 and frames[0] == MDPC02:
        cmd = frames[1]
        if cmd not in (C_PARTIAL, C_FINAL):
            raise ProtocolError(f"unexpected client command {short(bytes(cmd))}")
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
    raise ProtocolError(f"unknown broker command {short(bytes(cmd))}")


def _service(frame: Frame) -> bytes:
    name = bytes(frame)
    check_service_name(name)
    return name


# --- the model store's content hash --------------------------------------------------------


def model_hash(text: str | bytes) -> str:
    """A noise model's content hash: the hex SHA-256 of its text (UTF-8 when ``str``).
    Blocks carry this, never the text; hash exactly the text you send (``str(dem)``).

    >>> model_hash("error(0.1) D0 L0")[:12]
    '56f72ff3cd5c'
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


# --- message size ------------------------------------------------------------------------


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
