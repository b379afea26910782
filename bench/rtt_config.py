"""What ``python -m bench rtt`` measures: the peers, defaults, and the checked settings.

This module imports nothing heavy, so that ``python -m bench --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Transport = Literal["ipc", "tcp"]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer: the table's label, its process hops, how its 512 B travel, the servers it
    needs, and the class in :mod:`bench.rtt_clients` that times it. Adding a peer is one
    entry in :data:`PEER_INFO` and that one class."""

    name: str
    label: str
    hops: int
    """Process-to-process messages per round trip; each one that sleeps costs a wake-up."""
    payload: str
    stack: str | None
    """The server processes it needs (:func:`bench.rtt_peers.start_stack`); None: none."""
    client: str
    """The name of its peer client class in :mod:`bench.rtt_clients`."""
    twin: str | None = None
    """The peer it differs from by one feature (CURVE, metrics): the report states its
    ratio to that one, measured side by side in the same run."""
    extra: str | None = None
    """Not run by default: the option that adds it (``--curve``, ``--metrics``)."""


_ARRAY: Final = "a uint8 numpy array as a raw frame after the msgpack header"
_ZMQ_FRAME: Final = "one raw frame (plus the ROUTER's identity frame)"

PEER_INFO: Final = {
    p.name: p
    for p in (
        PeerInfo(
            name="inproc",
            label="a plain Python function call doing the echo work, in this process",
            hops=0,
            payload="a uint8 numpy array copied in, echoed into a reply, copied out",
            stack=None,
            client="InprocClient",
        ),
        PeerInfo(
            name="shm-floor",
            label="two processes busy-polling a shared-memory mailbox (the floor; ordered "
            "by x86 TSO only, not a transport: bench/rtt_floor.py)",
            hops=2,
            payload="copied into a numpy view over shared memory, a sequence counter each way",
            stack="shm-floor",
            client="ShmFloorClient",
        ),
        PeerInfo(
            name="direct",
            label="pyzmq DEALER <-> DEALER echo, no broker",
            hops=2,
            payload="one raw frame",
            stack="direct",
            client="DealerClient",
        ),
        PeerInfo(
            name="direct-curve",
            label="pyzmq DEALER <-> DEALER echo as direct, over CURVE (libzmq's own "
            "encryption, no ZAP): what CURVE costs a bare socket pair",
            hops=2,
            payload="one raw frame, encrypted",
            stack="direct-curve",
            client="DealerClient",
            twin="direct",
            extra="curve",
        ),
        PeerInfo(
            name="proxy",
            label="C zmq.proxy ROUTER/DEALER -> DEALER echo",
            hops=4,
            payload=_ZMQ_FRAME,
            stack="proxy",
            client="DealerClient",
        ),
        PeerInfo(
            name="proxy-spin",
            label="C zmq.proxy relay as above; the client polls for its reply first, as Client",
            hops=4,
            payload=_ZMQ_FRAME,
            stack="proxy",
            client="SpinningDealerClient",
        ),
        PeerInfo(
            name="nearloop",
            label="nearloop broker, Client -> Worker",
            hops=4,
            payload=_ARRAY,
            stack="nearloop",
            client="NearloopClient",
        ),
        PeerInfo(
            name="nearloop-curve",
            label="nearloop broker with CURVE on tcp (ZAP allow-lists), Client -> Worker, "
            "each with its own key",
            hops=4,
            payload=_ARRAY + ", encrypted",
            stack="nearloop-curve",
            client="NearloopClient",
            twin="nearloop",
            extra="curve",
        ),
        PeerInfo(
            name="nearloop-curve-local",
            label="nearloop broker with CURVE as nearloop-curve, but its worker on the "
            "broker's host, on its ipc endpoint (no CURVE on that hop): only the client's "
            "two hops are encrypted",
            hops=4,
            payload=_ARRAY + ", encrypted between client and broker",
            stack="nearloop-curve-local",
            client="NearloopClient",
            twin="nearloop",
            extra="curve",
        ),
        PeerInfo(
            name="nearloop-metrics",
            label="nearloop broker serving /metrics, scraped once a second by another "
            "process, Client -> Worker",
            hops=4,
            payload=_ARRAY,
            stack="nearloop-metrics",
            client="NearloopClient",
            twin="nearloop",
            extra="metrics",
        ),
        PeerInfo(
            name="lane",
            label="nearloop session over the shared-memory lane (iceoryx2), Client -> Worker",
            hops=2,
            payload=_ARRAY,
            stack="nearloop",
            client="LaneSessionClient",
        ),
        PeerInfo(
            name="nearloop-async",
            label="nearloop broker, AsyncClient on uvloop -> Worker",
            hops=4,
            payload=_ARRAY,
            stack="nearloop",
            client="AsyncNearloopClient",
        ),
        PeerInfo(
            name="broker-mdp",
            label="nearloop broker alone: plain MDP/0.2 pyzmq client -> plain MDP/0.2 worker",
            hops=4,
            payload="one raw frame after the MDP envelope",
            stack="nearloop",
            client="MdpClient",
        ),
        PeerInfo(
            name="rpcq",
            label="rpcq Client -> rpcq Server (asyncio)",
            hops=2,
            payload="bytes, a msgpack bin argument in the RPC request map",
            stack="rpcq",
            client="RpcqClient",
        ),
    )
}
"""Every peer, in the order the table lists them."""

PEERS: Final = tuple(PEER_INFO)
"""Every peer's name, in table order."""

DEFAULT_PEERS: Final = tuple(name for name, p in PEER_INFO.items() if p.extra is None)
"""The peers a run has unless told otherwise: all but the ones ``--curve`` and
``--metrics`` add."""

EXTRAS: Final = {"curve": "tcp", "metrics": None}
"""The options that add peers, and the transport each needs (CURVE is for tcp: ipc is
guarded by file modes)."""

BASELINES: Final = ("shm-floor", "proxy")
"""The peers the "vs." ratios divide by: the co-located floor, and the C relay."""

IDLE_LANE_S: Final = 2.0
"""With the lane peer, how long the run then leaves its lane open and idle, to measure
what an idle lane costs."""

DEFAULT_N: Final = 20_000
DEFAULT_WARMUP: Final = 1_000
DEFAULT_ROUNDS: Final = 10
DEFAULT_PAYLOAD_BYTES: Final = 512
DEFAULT_SEED: Final = 20_240_512


@dataclass(frozen=True, slots=True)
class RttConfig:
    """Settings of one ``rtt`` run; invalid combinations raise ValueError."""

    n: int = DEFAULT_N
    """Timed round trips per peer."""
    warmup: int = DEFAULT_WARMUP
    """Untimed round trips per peer before the first timed one."""
    rounds: int = DEFAULT_ROUNDS
    """Each peer's ``n`` round trips are split into this many chunks, taken round-robin."""
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    transport: Transport = "ipc"
    peers: tuple[str, ...] = DEFAULT_PEERS
    seed: int = DEFAULT_SEED
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 1 <= self.rounds <= self.n:
            raise ValueError(f"rounds must be in 1..n ({self.n}), got {self.rounds}")
        if self.payload_bytes < 1:
            raise ValueError(f"payload_bytes must be >= 1, got {self.payload_bytes}")
        if self.transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be ipc or tcp, got {self.transport!r}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown or not self.peers:
            raise ValueError(
                f"peers must be a non-empty subset of {', '.join(PEERS)}; got {unknown}"
            )
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"peers listed twice: {', '.join(self.peers)}")
        for name in self.peers:
            need = EXTRAS.get(PEER_INFO[name].extra or "")
            if need is not None and self.transport != need:
                raise ValueError(f"peer {name} needs --transport {need}")


def with_extras(peers: tuple[str, ...], extras: tuple[str, ...]) -> tuple[str, ...]:
    """``peers`` plus the peers each of ``extras`` adds (and their twins), in table order.

    >>> with_extras(("proxy",), ("curve",))
    ('direct', 'direct-curve', 'proxy', 'nearloop', 'nearloop-curve', 'nearloop-curve-local')
    """
    added = {n for n, p in PEER_INFO.items() if p.extra in extras}
    added |= {twin for n in added if (twin := PEER_INFO[n].twin) is not None}
    return tuple(p for p in PEERS if p in set(peers) | added)


def chunk_sizes(n: int, rounds: int) -> list[int]:
    """Split ``n`` round trips into ``rounds`` chunks that differ by at most one."""
    base, extra = divmod(n, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def parse_peers(text: str) -> tuple[str, ...]:
    """``"proxy,nearloop"`` -> ``("proxy", "nearloop")``, in the canonical table order."""
    names = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(names - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    return tuple(p for p in PEERS if p in names)
