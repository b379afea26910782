"""What a lane's negotiation puts on the wire (PROTOCOL.md §3.10): the modes a client asks
for, the transport names, and the lane names the broker hands out."""

from __future__ import annotations

import secrets
from typing import Any, Final, Literal, TypeAlias

from client.wire.frames import WorkerOptions

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


def lane_ask(host: str) -> dict[str, Any]:
    """The ``lane`` field of an ``nl.session.open`` body that asks for a lane from ``host``."""
    return {"host": host, "transports": [IOX2]}


def lane_request(open_body: Any) -> str | None:
    """The client's host identity if an ``nl.session.open`` body asks for a lane it can
    use (:func:`lane_ask`), else None: a body without one, or with one the broker does
    not understand, gets a session without a lane.

    >>> lane_request({"service": "qpu", "lane": lane_ask("h1")}), lane_request({"lane": 3})
    ('h1', None)
    """
    lane = open_body.get("lane") if isinstance(open_body, dict) else None
    if not isinstance(lane, dict):
        return None
    host, transports = lane.get("host"), lane.get("transports")
    if type(host) is not str or not isinstance(transports, list) or IOX2 not in transports:
        return None
    return host


def lane_refusal(worker: WorkerOptions, host: str) -> str | None:
    """Why a worker that declared ``worker`` at READY cannot serve a lane to a client on
    ``host``; None if it can.

    >>> lane_refusal(WorkerOptions(host="h1", lanes=(IOX2,)), "h2")
    'is on another host'
    """
    if IOX2 not in worker.lanes:
        return "serves no lanes (a plain worker, or one without the lane extra)"
    if worker.host != host:
        return "is on another host"
    return None
