"""The ``rtt`` peers' server processes: which ones each stack needs, and starting them.

Peers that share servers share a *stack* (:attr:`bench.rtt_config.PeerInfo.stack`):
``nearloop``, ``nearloop-async`` and ``broker-mdp`` talk to the same broker, one request
at a time, so none disturbs the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from control_sim.stack.processes import ServerGroup

_SERVERS: Final = "bench.rtt_servers"


@dataclass(frozen=True, slots=True)
class RunningStack:
    """A started stack: the endpoint its clients connect to, and its processes' ids (whose
    CPU time the report counts)."""

    endpoint: str
    pids: tuple[int, ...]


def start_stack(stack: str, servers: ServerGroup, endpoint: Callable[[str], str]) -> RunningStack:
    """Start the server processes of ``stack``.

    ``endpoint(name)`` makes a fresh endpoint. The caller waits for READY afterwards, so
    that every stack starts in parallel.
    """

    def start(name: str, *args: str) -> int:
        return servers.start(name, ["-m", _SERVERS, *args]).pid

    if stack == "shm-floor":
        ep = endpoint("shm-floor")
        pids = [start("shm-floor echo", "shm-echo", "--bind", ep)]
    elif stack == "direct":
        ep = endpoint("direct")
        pids = [start("direct echo", "dealer-echo", "--bind", ep)]
    elif stack == "proxy":
        ep, backend = endpoint("proxy-front"), endpoint("proxy-back")
        pids = [
            start("zmq.proxy", "proxy", "--frontend", ep, "--backend", backend),
            start("proxy echo", "dealer-echo", "--connect", backend),
        ]
    elif stack == "nearloop":
        ep = endpoint("broker")
        pids = [
            servers.start("broker", ["-m", "broker", "--bind", ep]).pid,
            start("nearloop worker", "nearloop-worker", "--connect", ep),
            start("plain MDP worker", "mdp-echo-worker", "--connect", ep),
        ]
    elif stack == "rpcq":
        ep = endpoint("rpcq")
        pids = [start("rpcq server", "rpcq-server", "--bind", ep)]
    else:
        raise ValueError(f"unknown stack {stack!r}")
    return RunningStack(ep, tuple(pids))
