"""``python -m bench vqe``: the VQE parameter loop over a lane and through the broker,
against in-process.

Three peers run the same H2 VQE (:mod:`control_sim.vqe.h2`: 2 qubits, 4 parameters, the
exact estimator) with the same optimizer and seeds, in this process:

- **in-process**: the optimizer calls the QPU evaluator directly
  (:func:`control_sim.vqe.driver.in_process_energy`), no middleware;
- **lane**: the optimizer calls the ``qpu`` service through a session on a local broker's
  one ``python -m control_sim qpu`` worker, over the session's shared-memory lane
  (``QpuClient.open(lane="require")``: what ``control_sim vqe`` does by default);
- **broker**: the same through a second session with ``lane="off"``: every call crosses
  four process hops on ipc:// (client -> broker -> worker -> broker -> client).

Both remote peers register the circuit once; then each call carries its id and the
parameters. Where this process cannot use lanes (the extra is missing, or
``NEARLOOP_NO_LANE`` is set), the lane peer is skipped and the report says why.

What is timed is one optimizer iteration (``time.perf_counter_ns()`` between the
optimizer's callbacks): its energy call(s) plus the optimizer's own work. Each VQE run's
first iteration also holds the optimizer's start-up (SPSA's 32-point calibration) and
is left out. The peers warm up first, and are then timed in rotating round-robin chunks
(as in ``bench rtt``) so that drift on a shared machine hits them alike. A peer's
overhead is its median minus the in-process median, as a percentage of the in-process
median; the goal is 10 % or less. CPU time is counted over the timed chunks, in this
process and in the broker and worker (read asleep, :mod:`bench.cpu`), per iteration and
as cores kept busy: the lane polls, and that CPU is what decoders would need.

Why the broker's numbers are what they are (2-core development VM, SPSA, 2000 iterations
per peer, three runs before lanes existed): in-process, an SPSA iteration is one 2-point
exact aer estimate (p50 ~160-270 µs a call) and a few µs of numpy. Through the broker a
call costs ~530-880 µs: a relay round trip, four process hops, ~170-260 µs on its own (a
request the worker answers without evaluating), plus the same evaluation in the worker,
where it takes ~300-400 µs rather than ~180-230 µs because it runs right after a
wake-up, with cold caches, on two cores that three processes share. So the loop was
3-3.5x slower, +200 to +250 % at p50.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.cpu import processes_cpu_ns, wait_asleep
from bench.errors import BenchError
from bench.machine import banner, describe_machine, library_versions
from bench.rtt import rotated
from bench.rtt_config import chunk_sizes
from bench.rtt_report import REWARM_PER_CHUNK, CpuUse
from bench.stats import LatencySummary, ratio
from client import Client, LaneUnavailable, NearloopError
from client.arguments import write_json
from client.lane.support import lane_support_missing
from control_sim.qpu.client import QpuClient
from control_sim.qpu.schema import CircuitInfo
from control_sim.stack.local_stack import LocalStack, StackSpec
from control_sim.stack.processes import interrupts_raise
from control_sim.vqe.comparison import (
    DEFAULT_MAXITER,
    OPTIMIZERS,
    VqeConfig,
    loop_iterations_us,
    remote_h2_energy,
    warm_up,
)
from control_sim.vqe.driver import EnergyFn, OptimizerName, in_process_energy, run_h2_vqe

BASELINE: Final = "in-process"
PEERS: Final[tuple[str, ...]] = (BASELINE, "lane", "broker")
PEER_LABELS: Final = {
    BASELINE: "QpuEvaluator called in the optimizer's process (no middleware)",
    "lane": "QpuClient session -> python -m control_sim qpu worker, shared-memory lane",
    "broker": "QpuClient session -> broker -> python -m control_sim qpu worker, ipc://",
}
OVERHEAD_GOAL_PCT: Final = 10.0
EXTRA_LIBRARIES: Final = ("qiskit", "qiskit-aer", "scipy")
CALL_TIMEOUT_S: Final = 10.0
_RUN_SEED_STRIDE: Final = 1000  # seed of run k in round r: seed + r * stride + k


@dataclass(frozen=True, slots=True)
class VqeBenchConfig:
    """One ``bench vqe`` run."""

    optimizer: OptimizerName = "spsa"
    iterations: int = 2000
    """Timed optimizer iterations per peer."""
    rounds: int = 5
    """Chunks the iterations are split into, taken round-robin across the peers."""
    warmup: int = 200
    """Untimed energy calls per peer before the first round."""
    seed: int = 2026
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.rounds < 1 or self.iterations < self.rounds:
            raise ValueError(
                f"need rounds >= 1 and iterations >= rounds, got {self.iterations} "
                f"iterations in {self.rounds} rounds"
            )
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


@dataclass
class _Peer:
    """What one peer measured: iteration and call times (µs), and each run's error."""

    energy: EnergyFn
    iteration_us: list[float] = field(default_factory=list)
    call_us: list[float] = field(default_factory=list)
    error_mha: list[float] = field(default_factory=list)
    cpu: CpuUse = field(default_factory=CpuUse)
    """CPU over the timed chunks; its ``round_trips`` count iterations."""

    def run_chunk(self, config: VqeBenchConfig, iterations: int, first_seed: int) -> None:
        """VQE runs from seeds ``first_seed, first_seed + 1, ...`` until ``iterations``
        more iterations are timed (SPSA: one run; COBYLA stops when it converges)."""
        got, k = 0, 0
        while got < iterations:
            need = iterations - got
            budget = need + 1 if config.optimizer == "spsa" else DEFAULT_MAXITER["cobyla"]
            result = run_h2_vqe(
                self.energy, optimizer=config.optimizer, maxiter=budget, seed=first_seed + k
            )
            its = loop_iterations_us(result)[:need].tolist() if result.iterations > 1 else []
            self.iteration_us += its
            self.call_us += result.call_us[1:].tolist()  # the first is SPSA's calibration
            self.error_mha.append(result.error_mha)
            got += len(its)
            k += 1


def _progress(text: str) -> None:
    print(f"bench vqe: {text}", file=sys.stderr, flush=True)


def _ns(us: list[float]) -> npt.NDArray[np.int64]:
    return np.rint(np.asarray(us, dtype=np.float64) * 1e3).astype(np.int64)


def _measure(
    config: VqeBenchConfig, remote: dict[str, EnergyFn], pids: tuple[int, ...]
) -> tuple[dict[str, _Peer], dict[str, float]]:
    """Time the in-process peer and each of ``remote`` (by peer name), interleaved; the
    servers ``pids`` are read for CPU time before and after each timed chunk."""
    energies: dict[str, EnergyFn] = {BASELINE: in_process_energy(), **remote}
    peers = {name: _Peer(energies[name]) for name in PEERS if name in energies}
    order = tuple(peers)
    batch = 2 if config.optimizer == "spsa" else 1
    _progress(f"warming up {', '.join(order)} ({config.warmup} energy calls each)")
    for peer in peers.values():
        warm_up(peer.energy, calls=max(1, config.warmup), batch=batch)
    chunks = chunk_sizes(config.iterations, config.rounds)
    began = time.perf_counter_ns()
    wall_s: dict[str, float] = dict.fromkeys(peers, 0.0)
    for r, size in enumerate(chunks):
        _progress(f"round {r + 1}/{config.rounds}: {size} iterations per peer")
        for name in rotated(order, r):
            peer = peers[name]
            warm_up(peer.energy, calls=REWARM_PER_CHUNK, batch=batch)
            # A polling thread's CPU time is brought up to date only when it sleeps, so
            # the servers are read asleep (the lane worker sleeps ~1 ms after its last call).
            wait_asleep(pids)
            servers0, own0, t0 = processes_cpu_ns(pids), time.process_time_ns(), _wall()
            peer.run_chunk(config, size, config.seed + r * _RUN_SEED_STRIDE)
            wall, own = _wall() - t0, time.process_time_ns() - own0
            wait_asleep(pids)
            peer.cpu.add(size, wall, own, servers0, processes_cpu_ns(pids))
            wall_s[name] += wall / 1e9
    wall_s["total"] = (_wall() - began) / 1e9
    return peers, wall_s


_wall = time.perf_counter_ns


def method_text(config: VqeBenchConfig) -> str:
    """How the run was done, in one paragraph."""
    return (
        f"H2 VQE ({config.optimizer}, exact estimator) run by each peer in this process. "
        f"Per peer: {config.warmup} untimed warm-up energy calls, then {config.iterations} "
        f"timed optimizer iterations in {config.rounds} rounds; in each round every peer "
        f"makes {REWARM_PER_CHUNK} untimed calls and then runs VQE from the round's seeds "
        "(the same for every peer, so they follow the same trajectories), and the peer order "
        "rotates each round. An iteration is timed with time.perf_counter_ns() between the "
        "optimizer's callbacks; each run's first iteration (the optimizer's start-up) is "
        "left out. The broker and its one qpu worker run in their own processes on ipc://; "
        "the lane and broker peers are two sessions on that worker, one over its "
        "shared-memory lane, one with lane='off'. CPU is counted over the timed chunks, in "
        "this process and in the broker and worker."
    )


@dataclass(frozen=True, eq=False)
class VqeBenchResult:
    """One run: the JSON document, and each peer's timed iterations (ns) for the plot."""

    doc: dict[str, Any]
    samples_ns: dict[str, npt.NDArray[np.int64]]
    summaries: dict[str, LatencySummary]


def _open_lane(client: Client) -> tuple[QpuClient | None, str | None]:
    """A session over a lane, or None and why not."""
    missing = lane_support_missing()
    if missing is not None:
        return None, missing
    try:
        return QpuClient.open(client, lane="require", timeout=CALL_TIMEOUT_S), None
    except LaneUnavailable as exc:
        return None, str(exc)


def measure(config: VqeBenchConfig) -> VqeBenchResult:
    """Start the local stack, time the peers, and stop the stack (always)."""
    machine = describe_machine()
    _progress("starting a broker and one qpu worker over ipc://")
    skipped: dict[str, str] = {}
    vqe = VqeConfig(optimizer=config.optimizer)
    with (
        LocalStack(StackSpec(qpu_workers=1)) as stack,
        Client(stack.endpoint, timeout=CALL_TIMEOUT_S) as client,
    ):
        name = "broker"
        try:
            remote: dict[str, EnergyFn] = {}
            with QpuClient.open(client, lane="off", timeout=CALL_TIMEOUT_S) as brokered:
                remote["broker"], info = remote_h2_energy(brokered, vqe)
                name = "lane"
                lane, why = _open_lane(client)
                if lane is None:
                    skipped["lane"] = f"no lane: {why}"
                    _progress(f"skipping the lane peer: {why}")
                    peers, wall_s = _measure(config, remote, stack.servers.pids)
                else:
                    with lane:
                        remote["lane"], _ = remote_h2_energy(lane, vqe)
                        peers, wall_s = _measure(config, remote, stack.servers.pids)
        except NearloopError as exc:
            raise BenchError(f"the {name} peer failed: {type(exc).__name__}: {exc}") from exc
    samples = {name: _ns(p.iteration_us) for name, p in peers.items()}
    summaries = {name: LatencySummary.of(s) for name, s in samples.items()}
    doc = _document(config, machine, info, peers, summaries, wall_s, skipped)
    return VqeBenchResult(doc=doc, samples_ns=samples, summaries=summaries)


def _cpu_doc(cpu: CpuUse) -> dict[str, Any]:
    n = cpu.round_trips or 1
    return {
        "client_us_per_iteration": cpu.client_ns / n / 1e3,
        "servers_us_per_iteration": None if cpu.servers_ns is None else cpu.servers_ns / n / 1e3,
        "us_per_iteration": cpu.us_per_round_trip(),
        "cores_busy": cpu.cores(),
    }


def _overhead(s: LatencySummary, base: LatencySummary) -> dict[str, Any]:
    pct = (s.p50_us - base.p50_us) / base.p50_us * 100.0
    return {
        "p50_us": s.p50_us - base.p50_us,
        "p50_ratio": ratio(s.p50_us, base.p50_us),
        "p50_pct": pct,
        "p99_pct": (s.p99_us - base.p99_us) / base.p99_us * 100.0,
        "meets_goal": pct <= OVERHEAD_GOAL_PCT,
    }


def _document(
    config: VqeBenchConfig,
    machine: dict[str, Any],
    info: CircuitInfo,
    peers: dict[str, _Peer],
    summaries: dict[str, LatencySummary],
    wall_s: dict[str, float],
    skipped: dict[str, str],
) -> dict[str, Any]:
    base = summaries[BASELINE]
    out: dict[str, Any] = {}
    for name, p in peers.items():
        s = summaries[name]
        out[name] = {
            "label": PEER_LABELS[name],
            **s.to_dict(),
            "p50_vs_inproc": ratio(s.p50_us, base.p50_us),
            "p99_vs_inproc": ratio(s.p99_us, base.p99_us),
            "call_us": LatencySummary.of(_ns(p.call_us)).brief(),
            "runs": len(p.error_mha),
            "error_mha_max": max(p.error_mha),
            "wall_s": wall_s[name],
            "cpu": _cpu_doc(p.cpu),
        }
    return {
        "benchmark": "vqe",
        "date": machine["date"],
        "machine": machine,
        "versions": library_versions(EXTRA_LIBRARIES),
        "config": {
            "optimizer": config.optimizer,
            "iterations": config.iterations,
            "rounds": config.rounds,
            "warmup": config.warmup,
            "rewarm_per_chunk": REWARM_PER_CHUNK,
            "seed": config.seed,
            "transport": "ipc",
            "qpu_workers": 1,
        },
        "method": method_text(config),
        "problem": {
            "molecule": "h2",
            "estimator": "exact",
            "circuit": info.circuit,
            "num_qubits": info.num_qubits,
            "num_parameters": info.num_parameters,
        },
        "baseline": BASELINE,
        "unit": "microseconds",
        "peers": out,
        "skipped": skipped,
        "goal_pct": OVERHEAD_GOAL_PCT,
        "overhead": {name: _overhead(summaries[name], base) for name in out if name != BASELINE},
        "wall_s": wall_s["total"],
    }


def format_report(doc: dict[str, Any]) -> str:
    """The human-readable report: context lines, the table, the overhead."""
    m, v, cfg = doc["machine"], doc["versions"], doc["config"]
    lines = [
        banner("vqe", m),
        f"pyzmq {v['pyzmq']} (libzmq {v['libzmq']}) · msgpack {v['msgpack']} · "
        f"numpy {v['numpy']} · qiskit {v['qiskit']} · qiskit-aer {v['qiskit-aer']} · "
        f"scipy {v['scipy']}",
        *textwrap.wrap(doc["method"], width=100),
        "",
    ]
    head = (
        f"{'peer':<12}{'n':>7}{'p50 µs':>10}{'p99 µs':>10}{'p99.9 µs':>10}{'max µs':>10}"
        f"{'p50 vs. in-proc':>17}{'p99 vs. in-proc':>17}{'call p50 µs':>13}"
        f"{'CPU µs/it':>11}{'cores':>7}"
    )
    lines += [head, "-" * len(head)]
    for name, p in doc["peers"].items():
        cpu = p["cpu"]
        lines.append(
            f"{name:<12}{p['n']:>7}{p['p50_us']:>10.1f}{p['p99_us']:>10.1f}{p['p999_us']:>10.1f}"
            f"{p['max_us']:>10.1f}{p['p50_vs_inproc']:>16.2f}x{p['p99_vs_inproc']:>16.2f}x"
            f"{p['call_us']['p50']:>13.1f}"
            f"{_cell(cpu['us_per_iteration'], '.1f'):>11}{_cell(cpu['cores_busy'], '.2f'):>7}"
        )
    lines.append("")
    goal = doc["goal_pct"]
    for name, o in doc["overhead"].items():
        verdict = "meets" if o["meets_goal"] else "misses"
        lines.append(
            f"overhead of the {name} (p50): {o['p50_us']:+.1f} µs = {o['p50_pct']:+.1f}% of "
            f"the in-process median, {o['p50_ratio']:.2f}x ({verdict} the {goal:.0f}% goal); "
            f"at p99 {o['p99_pct']:+.1f}%"
        )
    for name, why in doc["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    runs = ", ".join(f"{name} {p['runs']}" for name, p in doc["peers"].items())
    lines += [
        f"VQE runs: {runs}; "
        f"worst error {max(p['error_mha_max'] for p in doc['peers'].values()):.4f} mHa; "
        f"{cfg['optimizer']} on {doc['problem']['molecule'].upper()}, exact estimator",
        "CPU µs/it: CPU time per iteration, this process and the broker and worker together; "
        "cores: that over wall time",
    ]
    lines += [f"{name:<12}{PEER_LABELS[name]}" for name in doc["peers"]]
    return "\n".join(lines)


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def main(config: VqeBenchConfig) -> int:
    """Run the benchmark, print the report, write JSON and plot if asked; returns 0."""
    if config.plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("--plot needs matplotlib (pip install 'nearloop[bench]')")
    with interrupts_raise():
        result = measure(config)
    doc = result.doc
    print(format_report(doc), flush=True)
    if config.json_path is not None:
        write_json(config.json_path, doc)
        _progress(f"wrote {config.json_path}")
    if config.plot_path is not None:
        from bench.plot import save_rtt_figure

        title = (
            f"H2 VQE loop iteration ({config.optimizer}, exact estimator): lane and broker "
            f"vs in-process, n={config.iterations} per peer · {doc['machine']['cpu_model']} · "
            f"{doc['date']}"
        )
        save_rtt_figure(
            config.plot_path,
            result.samples_ns,
            result.summaries,
            title,
            quantity="loop iteration",
        )
        _progress(f"wrote {config.plot_path}")
    return 0
