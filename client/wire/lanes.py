"""What a lane's negotiation puts on the wire (PROTOCOL.md §3.10): the modes a client asks
for, the transport names, and the lane names the broker hands out."""

from __future__ import annotations

import secrets
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from client.wire.errors import ProtocolError
from client.wire.frames import PeerUser, WorkerOptions

LaneMode: TypeAlias = Literal["auto", "off", "require"]
LANE_MODES: Final[tuple[LaneMode, ...]] = ("auto", "off", "require")
"""``auto``: a lane where one can be had, else ZeroMQ; ``off``: always ZeroMQ;
``require``: a lane or an error."""

IOX2: Final = "iceoryx2"
"""The one lane transport today: iceoryx2 request-response over ``Slice[c_uint8]``."""

LANE_NAME_PREFIX: Final = "nl_"
_HEX: Final = frozenset("0123456789abcdef")


def new_lane_name() -> str:
    """A fresh, unguessable lane name: 128 random bits.

    >>> n = new_lane_name()
    >>> n.startswith(LANE_NAME_PREFIX), len(n)
    (True, 35)
    """
    return LANE_NAME_PREFIX + secrets.token_hex(16)


def is_lane_name(name: object) -> bool:
    """True for a name :func:`new_lane_name` could have made.

    >>> is_lane_name(new_lane_name()), is_lane_name("nl_../etc"), is_lane_name(3)
    (True, False, False)
    """
    return (
        type(name) is str
        and len(name) == 35
        and name.startswith(LANE_NAME_PREFIX)
        and all(c in _HEX for c in name[3:])
    )


def check_lane_mode(mode: object) -> LaneMode:
    """``mode`` if it is one of :data:`LANE_MODES`, else ValueError.

    >>> check_lane_mode("fast")
    Traceback (most recent call last):
    ...
    ValueError: lane must be one of auto, off, require; got 'fast'
    """
    for m in LANE_MODES:
        if mode == m:
            return m
    raise ValueError(f"lane must be one of {', '.join(LANE_MODES)}; got {mode!r}")


class LaneAsk(NamedTuple):
    """What a client declares when it asks for a lane: its host identity, and the user it
    runs as (None: an older client that declares none)."""

    host: str
    user: PeerUser | None


def lane_ask(host: str, user: PeerUser) -> dict[str, Any]:
    """The ``lane`` field of an ``nl.session.open`` body that asks for a lane from ``host``,
    for a client running as ``user``."""
    return {"host": host, "transports": [IOX2], **user.wire()}


def lane_request(open_body: Any) -> LaneAsk | None:
    """What the client declares if an ``nl.session.open`` body asks for a lane it can use
    (:func:`lane_ask`), else None: a body without one, or with one the broker does not
    understand, gets a session without a lane. A malformed ``uid``/``gids`` counts as
    none declared, which gets no lane.

    >>> ask = lane_request({"service": "qpu", "lane": lane_ask("h1", PeerUser(7, (7,)))})
    >>> ask
    LaneAsk(host='h1', user=PeerUser(uid=7, gids=(7,)))
    >>> lane_request({"lane": 3}) is None
    True
    """
    lane = open_body.get("lane") if isinstance(open_body, dict) else None
    if not isinstance(lane, dict):
        return None
    host, transports = lane.get("host"), lane.get("transports")
    if type(host) is not str or not isinstance(transports, list) or IOX2 not in transports:
        return None
    try:
        user = PeerUser.from_wire(lane)
    except ProtocolError:
        user = None
    return LaneAsk(host, user)


def user_refusal(worker: PeerUser | None, client: PeerUser | None) -> str | None:
    """Why a worker running as ``worker`` may not share a lane with a client running as
    ``client``; None if it may: both declared the same uid.

    iceoryx2 0.10 creates a lane's shared memory owner-only (files of mode 0600 in
    ``/dev/shm`` and ``/tmp/iceoryx2``, and its config cannot widen them), so peers that
    share only a group could not open it: they are refused here, saying so.

    >>> user_refusal(PeerUser(5, (5,)), PeerUser(5, (9,))) is None
    True
    >>> user_refusal(PeerUser(5, (5,)), PeerUser(6, (6,)))
    'runs as uid 5 and this client as uid 6, with no group in common'
    """
    if worker is None:
        return "declared no user (uid, gids) at READY, so it gets no lanes (an older worker)"
    if client is None:
        return "has a client that declared no user (uid, gids): no lane (an older client)"
    if worker.uid == client.uid:
        return None
    who = f"runs as uid {worker.uid} and this client as uid {client.uid}"
    shared = sorted(set(worker.gids) & set(client.gids))
    if not shared:
        return f"{who}, with no group in common"
    return (
        f"{who}: they share group {shared[0]}, but iceoryx2 makes a lane's shared memory "
        "owner-only (mode 0600), so a lane needs one user"
    )


def lane_refusal(worker: WorkerOptions, ask: LaneAsk) -> str | None:
    """Why a worker that declared ``worker`` at READY cannot serve a lane to the client
    that asked ``ask``; None if it can.

    >>> me = PeerUser(5, (5,))
    >>> lane_refusal(WorkerOptions(host="h1", lanes=(IOX2,), user=me), LaneAsk("h2", me))
    'is on another host'
    """
    if IOX2 not in worker.lanes:
        return "serves no lanes (a plain worker, or one without the lane extra)"
    if worker.host != ask.host:
        return "is on another host"
    return user_refusal(worker.user, ask.user)
