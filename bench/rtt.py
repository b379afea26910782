"""``python -m bench rtt``: one request's round trip through each peer, side by side.

Peers (:data:`bench.rtt_config.PEER_INFO`): two floors, the echo work as a plain function
call (``inproc``) and two processes busy-polling a shared-memory mailbox (``shm-floor``,
:mod:`bench.rtt_floor`); direct pyzmq DEALER<->DEALER (no broker); libzmq's C
``zmq.proxy`` relay, with a client that blocks in ``recv`` and with one that polls first
as :class:`client.Client` does (``proxy-spin``); the nearloop broker with
:class:`client.Client` and with :class:`client.AsyncClient` on uvloop, and between plain
MDP/0.2 peers; and rpcq, a quantum vendor's ZeroMQ + msgpack RPC. Servers run in their
own processes and every client runs in this one, so each path has its real process hops.
Ratios are given to ``shm-floor`` and to ``proxy``, and each peer's CPU use beside them.

Why the numbers are what they are: a 512 B message costs next to nothing to copy or
parse. What costs is each *process hop*, a kernel wake-up of the receiving process, and
on a VM an idle vCPU's wake-up is dear. ``shm-floor`` has two hops and no kernel call:
both processes poll, so it costs two busy cores. The direct peer (2 hops, both sleeping)
sets the floor for ZeroMQ, and a relay (4 hops: client -> relay -> worker -> relay ->
client) costs about twice that. The nearloop clients poll for their reply for up to
``spin_us`` before sleeping, which saves the last wake-up; ``proxy-spin`` saves the same
one for the C relay. The nearloop broker also polls for its next message while messages
come close together (:mod:`client.wire.spin`), which saves its own two wake-ups; the C
relay always sleeps. So the ratio of ``nearloop`` to ``proxy-spin`` bounds what the
broker, the MDP envelope's extra frames and the client library cost. rpcq has only 2
hops but runs each request as an asyncio task on the server and a uuid + dataclass
request on the client.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

import client
from bench.cpu import processes_cpu_ns, wait_asleep
from bench.endpoints import endpoint
from bench.errors import BenchError
from bench.keys import BenchKeys
from bench.machine import describe_machine, library_versions
from bench.rtt_clients import PeerClient, open_peer_client
from bench.rtt_config import IDLE_LANE_S, PEER_INFO, RttConfig, chunk_sizes
from bench.rtt_peers import RunningStack, start_stack
from bench.rtt_report import (
    REWARM_PER_CHUNK,
    CpuUse,
    IdleCpu,
    IdleSpan,
    RttResult,
    format_table,
    legend,
    to_json_doc,
)
from bench.stats import LatencySummary
from client.arguments import write_json
from client.lane.support import lane_support_missing
from control_sim.stack.processes import ServerGroup, interrupts_raise


def make_payload(size: int, seed: int) -> bytes:
    """``size`` seeded random bytes."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def rotated(peers: tuple[str, ...], by: int) -> tuple[str, ...]:
    """``peers`` rotated left by ``by``: round r starts with a different peer."""
    k = by % len(peers)
    return peers[k:] + peers[:k]


_wall = time.perf_counter_ns


def _progress(text: str) -> None:
    print(f"bench rtt: {text}", file=sys.stderr, flush=True)


async def _round_trips(name: str, peer: PeerClient, n: int) -> list[int]:
    """``peer.round_trips(n)``, with a late or failed reply named after its peer."""
    try:
        return await peer.round_trips(n)
    except (TimeoutError, client.NearloopError) as exc:
        raise BenchError(f"peer {name} failed: {type(exc).__name__}: {exc}") from exc


async def _interleaved(
    config: RttConfig, peers: tuple[str, ...], stacks: dict[str | None, RunningStack]
) -> tuple[dict[str, npt.NDArray[np.int64]], dict[str, CpuUse], str, IdleCpu | None]:
    """Warm every peer up, then time them in rotating round-robin chunks; each peer's
    CPU use is counted over its timed chunks, in this process and in its servers. With
    the lane peer, then measure what its open lane costs while idle."""
    payload = make_payload(config.payload_bytes, config.seed)
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    ctx: zmq.Context[Any] = zmq.Context()
    connected: dict[str, PeerClient] = {}
    idle: IdleCpu | None = None
    try:
        for name in peers:
            stack = stacks[PEER_INFO[name].stack]
            connected[name] = open_peer_client(name, ctx, stack.endpoint, payload, stack.curve)
        _progress(f"warming up {', '.join(peers)} ({config.warmup} round trips each)")
        for name, peer in connected.items():  # the first round trip is the readiness check
            await _round_trips(name, peer, max(1, config.warmup))
            await peer.pause()
        samples: dict[str, list[int]] = {name: [] for name in peers}
        cpu = {name: CpuUse() for name in peers}
        for r, size in enumerate(chunk_sizes(config.n, config.rounds)):
            _progress(f"round {r + 1}/{config.rounds}: {size} round trips per peer")
            for name in rotated(peers, r):
                peer, pids = connected[name], stacks[PEER_INFO[name].stack].pids
                await _round_trips(name, peer, REWARM_PER_CHUNK)
                # A polling thread's CPU time is brought up to date only when it sleeps,
                # so the servers are read asleep: before the chunk, after a pause.
                await peer.pause()
                wait_asleep(pids)
                servers0, own0, t0 = processes_cpu_ns(pids), time.process_time_ns(), _wall()
                samples[name] += await _round_trips(name, peer, size)
                await peer.pause()
                own = time.process_time_ns() - own0
                wait_asleep(pids)
                # Until the servers sleep: a server that polls after its last request
                # (the broker's spin, a lane worker's) spends that CPU on this chunk.
                wall = _wall() - t0
                cpu[name].add(size, wall, own, servers0, processes_cpu_ns(pids))
        if "lane" in connected:
            pids = stacks[PEER_INFO["lane"].stack].pids
            with_lane = await _idle_cpu(pids, "with the lane open")
            await connected.pop("lane").aclose()
            idle = IdleCpu(with_lane, await _idle_cpu(pids, "with the lane closed"))
    finally:
        for peer in connected.values():
            await peer.aclose()
        ctx.destroy(linger=0)
    arrays = {name: np.asarray(v, dtype=np.int64) for name, v in samples.items()}
    return arrays, cpu, loop_name, idle


async def _idle_cpu(pids: tuple[int, ...], what: str) -> IdleSpan:
    """The CPU this process (not waiting for anything) and the servers ``pids`` spend
    over IDLE_LANE_S with no request."""
    _progress(f"measuring idle CPU {what} over {IDLE_LANE_S} s")
    wait_asleep(pids)
    servers0, own0, t0 = processes_cpu_ns(pids), time.process_time_ns(), _wall()
    await asyncio.sleep(IDLE_LANE_S)
    own, wall, servers1 = time.process_time_ns() - own0, _wall() - t0, processes_cpu_ns(pids)
    servers = None if servers0 is None or servers1 is None else servers1 - servers0
    return IdleSpan(wall_ns=wall, client_ns=own, servers_ns=servers)


def _runnable(peers: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, str]]:
    """The peers whose libraries are installed, and why the others are skipped."""
    skipped: dict[str, str] = {}
    if "rpcq" in peers and importlib.util.find_spec("rpcq") is None:
        skipped["rpcq"] = "rpcq is not installed (pip install 'nearloop[bench]')"
    if "lane" in peers and (missing := lane_support_missing()) is not None:
        skipped["lane"] = f"no lane here: {missing}"
    return tuple(p for p in peers if p not in skipped), skipped


def measure(config: RttConfig) -> RttResult:
    """Start the servers, time every peer, stop the servers (always), and summarize."""
    peers, skipped = _runnable(config.peers)
    for name, why in skipped.items():
        _progress(f"skipping peer {name}: {why}")
    if not peers:
        raise BenchError("no peer left to run")
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="nl-bench-") as tmp, ServerGroup() as servers:
        make_endpoint = partial(endpoint, config.transport, Path(tmp))
        names = [s for s in dict.fromkeys(PEER_INFO[p].stack for p in peers) if s is not None]
        keys = (
            BenchKeys.create(Path(tmp) / "keys")
            if any(PEER_INFO[p].extra == "curve" for p in peers)
            else None
        )
        _progress(f"starting {', '.join(names) or 'no'} servers over {config.transport}://")
        stacks: dict[str | None, RunningStack] = {None: RunningStack("", ())}
        stacks.update((s, start_stack(s, servers, make_endpoint, keys)) for s in names)
        servers.wait_ready()
        samples, cpu, loop_name, idle = client.run(_interleaved(config, peers, stacks))
    return RttResult(
        config=config,
        samples_ns=samples,
        summaries={name: LatencySummary.of(s) for name, s in samples.items()},
        cpu=cpu,
        machine=machine,
        versions=library_versions(),
        event_loop=loop_name,
        skipped=skipped,
        idle_lane=idle,
    )


def main(config: RttConfig) -> int:
    """Run the benchmark, print the table, write JSON and plot if asked; returns 0."""
    if config.plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("--plot needs matplotlib (pip install 'nearloop[bench]')")
    with interrupts_raise():
        result = measure(config)
    print(format_table(result), flush=True)
    if config.json_path is not None:
        write_json(config.json_path, to_json_doc(result))
        _progress(f"wrote {config.json_path}")
    if config.plot_path is not None:
        from bench.plot import save_rtt_figure

        title = (
            f"{config.payload_bytes} B round trip over {config.transport}://, "
            f"n={config.n} per peer · {result.machine['cpu_model']} · {result.machine['date']}"
        )
        save_rtt_figure(
            config.plot_path, result.samples_ns, result.summaries, title, labels=legend(result)
        )
        _progress(f"wrote {config.plot_path}")
    return 0
