"""The ``rtt`` peers: what each one is, and which server processes it needs.

Peers that share servers share a *stack*: ``nearloop`` and ``nearloop-async`` talk to the
same broker and worker, one request at a time, so neither disturbs the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from control_sim.stack.processes import ServerGroup

_SERVERS: Final = "bench.rtt_servers"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer: the table's label, its process hops, and how its 512 B travel."""

    name: str
    label: str
    hops: int
    """Process-to-process messages per round trip; each one costs a kernel wake-up."""
    payload: str
    stack: str
    """The server processes it needs (see :func:`start_stack`)."""


_ARRAY: Final = "a uint8 numpy array as a raw frame after the msgpack header"

PEER_INFO: Final = {
    p.name: p
    for p in (
        PeerInfo(
            name="direct",
            label="pyzmq DEALER <-> DEALER echo, no broker",
            hops=2,
            payload="one raw frame",
            stack="direct",
        ),
        PeerInfo(
            name="proxy",
            label="C zmq.proxy ROUTER/DEALER -> DEALER echo",
            hops=4,
            payload="one raw frame (plus the ROUTER's identity frame)",
            stack="proxy",
        ),
        PeerInfo(
            name="proxy-spin",
            label="C zmq.proxy relay as above; the client polls for its reply first, as Client",
            hops=4,
            payload="one raw frame (plus the ROUTER's identity frame)",
            stack="proxy",
        ),
        PeerInfo(
            name="nearloop",
            label="nearloop broker, Client -> Worker",
            hops=4,
            payload=_ARRAY,
            stack="nearloop",
        ),
        PeerInfo(
            name="nearloop-async",
            label="nearloop broker, AsyncClient on uvloop -> Worker",
            hops=4,
            payload=_ARRAY,
            stack="nearloop",
        ),
        PeerInfo(
            name="broker-mdp",
            label="nearloop broker alone: plain MDP/0.2 pyzmq client -> plain MDP/0.2 worker",
            hops=4,
            payload="one raw frame after the MDP envelope",
            stack="nearloop",
        ),
        PeerInfo(
            name="rpcq",
            label="rpcq Client -> rpcq Server (asyncio)",
            hops=2,
            payload="bytes, a msgpack bin argument in the RPC request map",
            stack="rpcq",
        ),
    )
}


def start_stack(stack: str, servers: ServerGroup, endpoint: Callable[[str], str]) -> str:
    """Start the server processes of ``stack``; returns the endpoint its clients connect to.

    ``endpoint(name)`` makes a fresh endpoint. The caller waits for READY afterwards, so
    that every stack starts in parallel.
    """
    if stack == "direct":
        ep = endpoint("direct")
        servers.start("direct echo", ["-m", _SERVERS, "dealer-echo", "--bind", ep])
    elif stack == "proxy":
        ep, backend = endpoint("proxy-front"), endpoint("proxy-back")
        servers.start(
            "zmq.proxy", ["-m", _SERVERS, "proxy", "--frontend", ep, "--backend", backend]
        )
        servers.start("proxy echo", ["-m", _SERVERS, "dealer-echo", "--connect", backend])
    elif stack == "nearloop":
        ep = endpoint("broker")
        servers.start("broker", ["-m", "broker", "--bind", ep])
        servers.start("nearloop worker", ["-m", _SERVERS, "nearloop-worker", "--connect", ep])
        servers.start("plain MDP worker", ["-m", _SERVERS, "mdp-echo-worker", "--connect", ep])
    elif stack == "rpcq":
        ep = endpoint("rpcq")
        servers.start("rpcq server", ["-m", _SERVERS, "rpcq-server", "--bind", ep])
    else:
        raise ValueError(f"unknown stack {stack!r}")
    return ep
