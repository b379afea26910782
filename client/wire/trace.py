"""A request traced hop by hop: the header's timestamps, the trace flag, the hop breakdown.

Every nearloop request carries ``ts.client_send``, and a nearloop worker's reply adds
``worker_recv`` and ``worker_send`` (PROTOCOL.md §3.2). A client that asks for a trace
marks its request's header, and the broker then adds its own four stamps to each reply
(PARTIAL or FINAL) of that request, with the host identities of its clocks:

- ``broker_recv``: the broker has read the request;
- ``broker_fwd``: it hands the request to the worker (after any wait in its queue);
- ``broker_reply_recv``: it has read the worker's reply;
- ``broker_reply_fwd``: it hands the reply to the client (after stamping it).

The client records ``client_recv`` on receipt. :func:`breakdown` turns the stamps into
hops. Everything here is pure: no sockets, and the only clock read is the one the caller
passes in.

Why a flag at a fixed place: the broker hands bodies on unchanged and must not pay for
tracing on requests that do not ask for it. A traced header is a msgpack map whose *first*
entry is ``"trace": true``, so the broker tests one byte-prefix comparison per request
(:func:`has_trace_mark`), and parses the header only when it matches. A body that matches
but is not a valid nearloop header (a plain MDP peer's opaque bytes) is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType
from typing import Final, NamedTuple

from client.wire.codec import packer, unpack
from client.wire.errors import PayloadTooLarge, ProtocolError
from client.wire.frames import Frame
from client.wire.header import parse_header
from client.wire.limits import MAX_HEADER_BYTES, MAX_HOST_ID_CHARS

# --- stamp names ---------------------------------------------------------------------------

CLIENT_SEND: Final = "client_send"
BROKER_RECV: Final = "broker_recv"
BROKER_FWD: Final = "broker_fwd"
WORKER_RECV: Final = "worker_recv"
WORKER_SEND: Final = "worker_send"
BROKER_REPLY_RECV: Final = "broker_reply_recv"
BROKER_REPLY_FWD: Final = "broker_reply_fwd"
CLIENT_RECV: Final = "client_recv"
"""Not on the wire: the client's own receipt, which :attr:`client.messages.Message.ts`
adds to the stamps the reply came with."""

CLIENT: Final = "client"
BROKER: Final = "broker"
WORKER: Final = "worker"

STAMPS: Final[tuple[tuple[str, str], ...]] = (
    (CLIENT_SEND, CLIENT),
    (BROKER_RECV, BROKER),
    (BROKER_FWD, BROKER),
    (WORKER_RECV, WORKER),
    (WORKER_SEND, WORKER),
    (BROKER_REPLY_RECV, BROKER),
    (BROKER_REPLY_FWD, BROKER),
    (CLIENT_RECV, CLIENT),
)
"""Every stamp in the order a round trip takes them, with the process whose clock took it."""

HOP_NAMES: Final[Mapping[tuple[str, str], str]] = MappingProxyType(
    {
        (CLIENT_SEND, BROKER_RECV): "client->broker",
        (BROKER_RECV, BROKER_FWD): "queue",
        (BROKER_FWD, WORKER_RECV): "broker->worker",
        (WORKER_RECV, WORKER_SEND): "handler",
        (WORKER_SEND, BROKER_REPLY_RECV): "worker->broker",
        (BROKER_REPLY_RECV, BROKER_REPLY_FWD): "broker (reply)",
        (BROKER_REPLY_FWD, CLIENT_RECV): "broker->client",
        (BROKER_FWD, BROKER_REPLY_RECV): "broker->worker->broker",  # a worker without stamps
    }
)

# --- the flag, and what the broker adds ----------------------------------------------------

TRACE_KEY: Final = "trace"
TRACE_MARK: Final = b"\xa5trace\xc3"
"""What follows the map marker (its first byte) in a traced request header: the msgpack
``str`` "trace", then ``true``."""
HOSTS_KEY: Final = "hosts"
"""The reply header key under which the broker names its host and the worker's
(``{"broker": id, "worker": id}``; ``worker`` only if the worker declared one at READY)."""

_FIXMAP: Final = 0x80
_FIXMAP_MAX: Final = 0x8F


def mark_traced(header: bytes) -> bytes:
    """``header`` (an encoded request header) with ``"trace": true`` as its first entry.

    >>> from client.wire.header import encode_header
    >>> h = mark_traced(encode_header(id=1, kind="request"))
    >>> has_trace_mark(h), is_traced(h)
    (True, True)
    """
    if not _FIXMAP <= header[0] < _FIXMAP_MAX:
        raise ProtocolError("only a header of at most 14 fields can be marked for a trace")
    out = bytes((header[0] + 1,)) + TRACE_MARK + header[1:]
    if len(out) > MAX_HEADER_BYTES:
        raise PayloadTooLarge(len(out), MAX_HEADER_BYTES, what="header")
    return out


def has_trace_mark(frame: Frame) -> bool:
    """Whether a body's first frame starts the way a traced header does: one comparison,
    what the broker's loop pays per request. True is not proof: see :func:`is_traced`."""
    return type(frame) is bytes and frame.startswith(TRACE_MARK, 1)


def is_traced(frame: Frame) -> bool:
    """Whether ``frame`` is a nearloop header that asks for a trace: marked, and valid.

    >>> is_traced(b"\\x81" + TRACE_MARK)  # the mark, but no id: not a nearloop header
    False
    """
    if not has_trace_mark(frame):
        return False
    try:
        parse_header(frame)
    except ProtocolError:
        return False
    return True


def stamp_reply(
    frame: Frame,
    *,
    recv_ns: int,
    fwd_ns: int,
    reply_recv_ns: int,
    broker_host: str,
    worker_host: str | None,
    clock: Callable[[], int],
) -> bytes | None:
    """A traced request's reply header with the broker's stamps and hosts added, or None
    when ``frame`` is not a valid nearloop header or the stamps would not fit: the reply
    then goes on unchanged.

    Every field the worker sent is kept (unknown keys too); ``broker_reply_fwd`` is read
    from ``clock`` last, so the broker's own stamping counts in its reply hop.
    """
    try:
        parse_header(frame)
        m = unpack(frame, "header")
    except ProtocolError:
        return None
    ts = dict(m.get("ts") or {})
    ts[BROKER_RECV] = recv_ns
    ts[BROKER_FWD] = fwd_ns
    ts[BROKER_REPLY_RECV] = reply_recv_ns
    hosts = {BROKER: broker_host}
    if worker_host is not None:
        hosts[WORKER] = worker_host
    m[HOSTS_KEY] = hosts
    ts[BROKER_REPLY_FWD] = clock()
    m["ts"] = ts
    out: bytes = packer.pack(m)
    return out if len(out) <= MAX_HEADER_BYTES else None


def read_hosts(frame: Frame) -> Mapping[str, str]:
    """The host identities a traced reply's header names (empty if it names none)."""
    try:
        hosts = unpack(frame, "header").get(HOSTS_KEY)
    except (ProtocolError, AttributeError):
        return NO_HOSTS
    if type(hosts) is not dict:
        return NO_HOSTS
    return MappingProxyType(
        {
            k: v
            for k, v in hosts.items()
            if k in (BROKER, WORKER) and type(v) is str and 0 < len(v) <= MAX_HOST_ID_CHARS
        }
    )


NO_HOSTS: Final[Mapping[str, str]] = MappingProxyType({})

# --- the hop breakdown ---------------------------------------------------------------------


class Hop(NamedTuple):
    """One leg of a round trip: its name and its duration in nanoseconds."""

    name: str
    ns: int
    measured: bool = True
    """False for the one line that sums the legs no single clock measures: the network
    between hosts, total minus every measured hop."""


@dataclass(frozen=True, slots=True)
class Breakdown:
    """A round trip cut into hops; their ``ns`` add up to ``total_ns`` exactly."""

    hops: tuple[Hop, ...]
    total_ns: int
    one_host: bool
    """Whether every stamp was taken on this host (else the network legs are one line)."""

    def lines(self) -> list[str]:
        """One line per hop and one for the total, in microseconds, aligned.

        >>> b = Breakdown((Hop("queue", 1500), Hop("handler", 20_000)), 21_500, True)
        >>> print("\\n".join(b.lines()))
        queue         1.5 µs
        handler      20.0 µs
        total        21.5 µs
        """
        rows = [(h.name, h.ns) for h in self.hops] + [("total", self.total_ns)]
        width = max(len(name) for name, _ in rows)
        return [f"{name:<{width}}  {ns / 1000:>8.1f} µs" for name, ns in rows]


def breakdown(ts: Mapping[str, int], hosts: Mapping[str, str], host: str) -> Breakdown:
    """Cut a round trip into hops from its stamps ``ts`` (``client_recv`` included).

    ``hosts`` names the host of the broker's and the worker's clocks (a missing one is
    taken to be elsewhere), ``host`` is this client's. A hop between two stamps of one
    host is measured; the hops between hosts are reported as one line, ``network``, the
    total less every measured hop: monotonic clocks compare only on one host.

    Raises ValueError without ``client_send`` and ``client_recv``.

    >>> ts = {"client_send": 0, "broker_recv": 10, "broker_fwd": 12, "worker_recv": 20,
    ...       "worker_send": 50, "broker_reply_recv": 60, "broker_reply_fwd": 61,
    ...       "client_recv": 70}
    >>> for hop in breakdown(ts, {"broker": "b", "worker": "w"}, "b").hops:
    ...     print(hop.name, hop.ns)
    client->broker 10
    queue 2
    handler 30
    broker (reply) 1
    broker->client 9
    network (broker->worker + worker->broker) 18
    """
    present = [(name, owner) for name, owner in STAMPS if name in ts]
    names = [name for name, _ in present]
    if CLIENT_SEND not in names or CLIENT_RECV not in names:
        raise ValueError(
            f"a round trip needs {CLIENT_SEND} and {CLIENT_RECV}; the stamps are {sorted(ts)}"
        )
    clock_host = {CLIENT: host, **{k: v for k, v in hosts.items() if k != CLIENT}}
    measured: list[Hop] = []
    across: list[str] = []
    for (a, owner_a), (b, owner_b) in pairwise(present):
        name = HOP_NAMES.get((a, b)) or f"{owner_a}->{owner_b}"
        host_a, host_b = clock_host.get(owner_a), clock_host.get(owner_b)
        if owner_a == owner_b or (host_a is not None and host_a == host_b):
            measured.append(Hop(name, ts[b] - ts[a]))
        else:
            across.append(name)
    total = ts[CLIENT_RECV] - ts[CLIENT_SEND]
    if across:
        rest = total - sum(h.ns for h in measured)
        measured.append(Hop(f"network ({' + '.join(across)})", rest, measured=False))
    return Breakdown(tuple(measured), total, one_host=not across)


def stamps_of(header_ts: Mapping[str, int], received_ns: int) -> dict[str, int]:
    """A reply's stamps with the client's receipt added (if it recorded one)."""
    ts = dict(header_ts)
    if received_ns:
        ts[CLIENT_RECV] = received_ns
    return ts
