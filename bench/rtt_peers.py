"""The ``rtt`` peers' server processes: which ones each stack needs, and starting them.

Peers that share servers share a *stack* (:attr:`bench.rtt_config.PeerInfo.stack`):
``nearloop``, ``nearloop-async`` and ``broker-mdp`` talk to the same broker, one request
at a time, so none disturbs the others. The ``-curve`` and ``-metrics`` stacks are the
same servers with CURVE keys (:class:`bench.keys.BenchKeys`) or with ``/metrics`` served
and scraped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bench.endpoints import free_port
from bench.keys import BenchKeys
from control_sim.stack.processes import ServerGroup

_SERVERS: Final = "bench.rtt_servers"


@dataclass(frozen=True, slots=True)
class RunningStack:
    """A started stack: the endpoint its clients connect to, and its processes' ids (whose
    CPU time the report counts)."""

    endpoint: str
    pids: tuple[int, ...]
    curve: tuple[str, str] | None = None
    """The clients' ``curve=`` (their certificate and the server's), on a CURVE stack."""


SCRAPE_INTERVAL_MS: Final = 1000
"""How often the ``-metrics`` stack's scraper fetches ``/metrics``: more often than
Prometheus's usual 15 s, so the exporter's cost shows if it has one."""


def start_stack(
    stack: str, servers: ServerGroup, endpoint: Callable[[str], str], keys: BenchKeys | None
) -> RunningStack:
    """Start the server processes of ``stack``.

    ``endpoint(name)`` makes a fresh endpoint; ``keys`` are the CURVE stacks' (None: no
    CURVE stack runs). The caller waits for READY afterwards, so that every stack starts
    in parallel.
    """

    def start(name: str, *args: str) -> int:
        return servers.start(name, ["-m", _SERVERS, *args]).pid

    if stack.endswith("-curve") and keys is None:
        raise ValueError(f"stack {stack} needs keys")

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
    elif stack == "direct-curve" and keys is not None:
        ep = endpoint("direct-curve")
        pids = [
            start("direct CURVE echo", "dealer-echo", "--bind", ep,
                  "--curve-secret", str(keys.broker_secret))
        ]  # fmt: skip
        return RunningStack(ep, tuple(pids), keys.client_curve())
    elif stack == "nearloop-curve" and keys is not None:
        ep = endpoint("broker-curve")
        pids = [
            servers.start("CURVE broker", ["-m", "broker", "--bind", ep, *keys.broker_args()]).pid,
            start("CURVE nearloop worker", "nearloop-worker", "--connect", ep, *keys.worker_args()),
        ]
        return RunningStack(ep, tuple(pids), keys.client_curve())
    elif stack == "nearloop-curve-local" and keys is not None:
        ep, local = endpoint("broker-curve-local"), f"ipc://{keys.clients_dir.parent}/broker.sock"
        broker_args = ["-m", "broker", "--bind", ep, "--bind", local, *keys.broker_args()]
        pids = [
            servers.start("CURVE broker, local worker", broker_args).pid,
            start("local nearloop worker", "nearloop-worker", "--connect", local),
        ]
        return RunningStack(ep, tuple(pids), keys.client_curve())
    elif stack == "nearloop-metrics":
        ep = endpoint("broker-metrics")
        # A port chosen here, not read from the broker's METRICS line: that line comes just
        # before READY, and a second wait on the same pipe could miss a READY line read
        # into the pipe's buffer along with it.
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        broker_args = ["-m", "broker", "--bind", ep, "--metrics-port", str(port)]
        pids = [
            servers.start("metrics broker", broker_args).pid,
            start("metrics worker", "nearloop-worker", "--connect", ep),
            start("scraper", "scraper", "--url", url, "--interval-ms", str(SCRAPE_INTERVAL_MS)),
        ]
    elif stack == "rpcq":
        ep = endpoint("rpcq")
        pids = [start("rpcq server", "rpcq-server", "--bind", ep)]
    else:
        raise ValueError(f"unknown stack {stack!r}")
    return RunningStack(ep, tuple(pids))
