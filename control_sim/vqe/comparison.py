"""The driver through the ``qpu`` service, beside the same driver in-process: ``control_sim vqe``.

:func:`compare_h2_vqe` runs the transport-agnostic loop of :mod:`control_sim.vqe.driver`
on H2 twice. It opens a session on the ``qpu`` service (over a shared-memory lane when
the pinned worker shares this host and :attr:`VqeConfig.lane` allows it, else through
the broker), registers the H2 ansatz and Hamiltonian there once, runs VQE on it (only
the circuit id and the parameters cross per call), then runs the same optimizer from
the same seed in this process with no middleware
(:func:`control_sim.vqe.driver.in_process_energy`). Both sides warm up with the same
untimed calls first. With shots, both sides draw their per-call simulator seeds from
one generator seeded alike, so the two runs see the same shot noise and, the service
being deterministic, follow the same trajectory: any difference in the result is the
middleware's fault. :func:`run_vqe_session` turns that into the JSON summary.

Loop latency is the wall time of one optimizer iteration (its energy calls plus the
optimizer's own work). Iteration 1 also holds the optimizer's start-up (SPSA's
calibration call, COBYLA's first ``n + 1`` evaluations), so the loop statistics leave
it out and report it on its own as ``first_iteration_us``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from client import Client
from client.wire.curve import CurveSpec
from client.wire.lanes import LaneMode, check_lane_mode
from control_sim.errors import ControlSimError
from control_sim.qpu.client import QpuClient
from control_sim.qpu.names import DEFAULT_SERVICE
from control_sim.qpu.schema import CircuitInfo
from control_sim.vqe import h2
from control_sim.vqe.driver import (
    EnergyFn,
    OptimizerName,
    VqeResult,
    h2_registration,
    in_process_energy,
    latency_of,
    run_h2_vqe,
)

MOLECULES: Final = ("h2",)
OPTIMIZERS: Final[tuple[OptimizerName, ...]] = ("spsa", "cobyla")
DEFAULT_MAXITER: Final[dict[str, int]] = {"spsa": 300, "cobyla": 150}
"""SPSA's iterations, COBYLA's evaluation budget: both reach chemical accuracy on H2
with the exact estimator from any seed tried, in well under a second."""
_WARMUP_SEED: Final = 7


@dataclass(frozen=True, slots=True)
class VqeConfig:
    """One VQE session: the problem, the optimizer, the estimator and the warm-up."""

    molecule: Literal["h2"] = "h2"
    optimizer: OptimizerName = "spsa"
    shots: int | None = None
    """Shots per measurement basis per energy; None is the exact estimator."""
    seed: int = 0
    """Seeds the start point, SPSA's perturbations and the per-call shot seeds."""
    maxiter: int | None = None
    """SPSA iterations or COBYLA evaluations; None: :data:`DEFAULT_MAXITER`."""
    service: str = DEFAULT_SERVICE
    timeout_s: float = 5.0
    """Bound on each call to the service."""
    warmup_calls: int = 20
    """Untimed energy calls on each side before its run."""
    lane: LaneMode = "auto"
    """The session's transport: ``"auto"`` a shared-memory lane when the worker shares
    this host, else the broker; ``"require"`` a lane or an error; ``"off"`` the broker."""

    def __post_init__(self) -> None:
        if self.molecule not in MOLECULES:
            raise ValueError(f"molecule must be one of {MOLECULES}, got {self.molecule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.shots is not None and self.shots < 2:
            raise ValueError(f"shots must be >= 2 (or None: exact), got {self.shots}")
        if self.maxiter is not None and self.maxiter < 1:
            raise ValueError(f"maxiter must be >= 1, got {self.maxiter}")
        if self.warmup_calls < 0 or self.timeout_s <= 0:
            raise ValueError("need warmup_calls >= 0 and timeout_s > 0")
        check_lane_mode(self.lane)

    @property
    def budget(self) -> int:
        """The ``maxiter`` the optimizer gets."""
        return self.maxiter if self.maxiter is not None else DEFAULT_MAXITER[self.optimizer]


@dataclass(frozen=True, eq=False)
class VqeComparison:
    """The same VQE through the ``qpu`` service (``remote``) and in this process
    (``inproc``)."""

    config: VqeConfig
    circuit: CircuitInfo
    remote: VqeResult
    inproc: VqeResult
    session_s: float
    """Everything: registration, warm-ups and both runs."""
    lane: str
    """The remote run's transport: ``"shm"`` (a lane) or ``"zmq"`` (the broker)."""
    lane_refused: str | None
    """Why the remote run went through the broker, if it did."""

    @property
    def same_result(self) -> bool:
        """Both runs returned the same point (they should: same seeds, same evaluator)."""
        return bool(np.array_equal(self.remote.x, self.inproc.x))


def loop_iterations_us(result: VqeResult) -> NDArray[np.float64]:
    """The iteration times the loop statistics use: all but iteration 1 (the optimizer's
    start-up), unless it is the only one."""
    us = result.iteration_us
    return us[1:] if len(us) > 1 else us


def warm_up(energy: EnergyFn, *, calls: int, batch: int) -> None:
    """``calls`` untimed ``energy`` calls of ``batch`` points each, at fixed points."""
    xs = np.random.default_rng(_WARMUP_SEED).uniform(-np.pi, np.pi, (batch, h2.NUM_PARAMETERS))
    for _ in range(calls):
        energy(xs)


def remote_h2_energy(
    qpu: QpuClient, config: VqeConfig, *, seed: int | None = None
) -> tuple[EnergyFn, CircuitInfo]:
    """Register H2 with the service (once: a second registration returns the same id) and
    return its energy function and the registration; ``seed`` defaults to the config's."""
    source, observables = h2_registration()
    info = qpu.register_qasm3(source, observables)
    if info.num_parameters != h2.NUM_PARAMETERS or info.num_observables < 1:
        raise ControlSimError(
            f"the {qpu.service!r} service registered H2 with {info.num_parameters} parameters "
            f"and {info.num_observables} observables, expected {h2.NUM_PARAMETERS} and 1"
        )
    s = config.seed if seed is None else seed
    return qpu.energy_fn(info.circuit, shots=config.shots, seed=s), info


def require_service(client: Client, service: str) -> None:
    """Fail clearly, instead of timing out per call, when no worker serves ``service``."""
    if not client.service_available(service):
        raise ControlSimError(
            f"the broker at {client.endpoint} has no worker for service {service!r} "
            "(start one: python -m control_sim qpu --connect EP)"
        )


def compare_h2_vqe(
    endpoint: str, config: VqeConfig, *, curve: CurveSpec | None = None
) -> VqeComparison:
    """Run H2 VQE through the ``qpu`` service at ``endpoint`` (with CURVE keys ``curve``
    if given), then in-process, alike."""
    began = time.perf_counter_ns()
    reference = in_process_energy()  # exact, for the error at the returned point
    batch = 2 if config.optimizer == "spsa" else 1

    def run(energy: EnergyFn) -> VqeResult:
        warm_up(energy, calls=config.warmup_calls, batch=batch)
        return run_h2_vqe(
            energy,
            optimizer=config.optimizer,
            maxiter=config.budget,
            seed=config.seed,
            reference=reference,
        )

    with Client(endpoint, timeout=config.timeout_s, curve=curve) as client:
        require_service(client, config.service)
        with QpuClient.open(
            client, config.service, lane=config.lane, timeout=config.timeout_s
        ) as qpu:
            remote_energy, info = remote_h2_energy(qpu, config)
            remote = run(remote_energy)
    inproc = run(in_process_energy(shots=config.shots, seed=config.seed))
    return VqeComparison(
        config=config,
        circuit=info,
        remote=remote,
        inproc=inproc,
        session_s=(time.perf_counter_ns() - began) / 1e9,
        lane=qpu.lane,
        lane_refused=qpu.lane_refused,
    )


def summarize(cmp: VqeComparison) -> dict[str, Any]:
    """The JSON summary of a comparison (energies in hartree, electronic; times in µs)."""
    c, r, p = cmp.config, cmp.remote, cmp.inproc
    loop, inproc_loop = latency_of(loop_iterations_us(r)), latency_of(loop_iterations_us(p))
    ratio = loop.p50_us / inproc_loop.p50_us
    return {
        "molecule": c.molecule,
        "optimizer": c.optimizer,
        "shots": c.shots,
        "seed": c.seed,
        "maxiter": c.budget,
        "service": c.service,
        "lane_mode": c.lane,
        "lane": cmp.lane,
        "lane_refused": cmp.lane_refused,
        "circuit": cmp.circuit.circuit,
        "num_qubits": cmp.circuit.num_qubits,
        "num_parameters": cmp.circuit.num_parameters,
        "energy": r.energy,
        "energy_exact_at_x": r.energy_exact_at_x,
        "exact_energy": r.exact_energy,
        "error_mha": r.error_mha,
        "chemically_accurate": r.chemically_accurate,
        "nuclear_repulsion": h2.NUCLEAR_REPULSION_HA,
        "x": r.x.tolist(),
        "iterations": r.iterations,
        "evaluations": r.evaluations,
        "calls": r.calls,
        "loop_us": loop.brief(),
        "call_us": latency_of(r.call_us).brief(),
        "first_iteration_us": float(r.iteration_us[0]) if len(r.iteration_us) else None,
        "inproc_energy": p.energy,
        "inproc_error_mha": p.error_mha,
        "inproc_loop_us": inproc_loop.brief(),
        "inproc_call_us": latency_of(p.call_us).brief(),
        "same_result": cmp.same_result,
        "loop_p50_vs_inproc": ratio,
        "overhead_pct": (ratio - 1.0) * 100.0,
        "wall_s": r.total_us / 1e6,
        "inproc_wall_s": p.total_us / 1e6,
        "session_s": cmp.session_s,
        "warmup_calls": c.warmup_calls,
    }


def run_vqe_session(
    endpoint: str, config: VqeConfig, *, curve: CurveSpec | None = None
) -> dict[str, Any]:
    """:func:`compare_h2_vqe` at ``endpoint``, as the JSON summary (see :func:`summarize`)."""
    return summarize(compare_h2_vqe(endpoint, config, curve=curve))


def format_summary(s: dict[str, Any]) -> str:
    """The readable summary ``control_sim vqe`` prints without ``--json``."""
    how = "exact estimator" if s["shots"] is None else f"{s['shots']} shots per basis"
    lines = [
        f"VQE {s['molecule'].upper()} (STO-3G, 0.735 Å; {s['num_qubits']} qubits, "
        f"{s['num_parameters']} parameters): {s['optimizer']}, {how}, seed {s['seed']}, "
        f"service {s['service']!r}",
    ]
    exact = s["exact_energy"]
    if s["shots"] is None:
        lines.append(f"  energy   {s['energy']:.6f} Ha electronic (exact {exact:.6f} Ha)")
    else:
        lines.append(
            f"  energy   {s['energy']:.6f} Ha estimated from shots; exact at that point "
            f"{s['energy_exact_at_x']:.6f} Ha (ground state {exact:.6f} Ha)"
        )
    accurate = "chemically accurate" if s["chemically_accurate"] else "NOT chemically accurate"
    lines.append(f"  error    {s['error_mha']:.4f} mHa vs exact diagonalization ({accurate})")
    lines.append(
        f"  work     {s['iterations']} iterations, {s['evaluations']} evaluations in "
        f"{s['calls']} calls"
    )
    lo, li, rt = s["loop_us"], s["inproc_loop_us"], s["call_us"]
    via = transport_name(s["lane"])
    lines += [
        f"  transport {transport_line(s['lane'], s['lane_refused'])}",
        f"  loop     {via} p50 {lo['p50']:.0f} us  p99 {lo['p99']:.0f} us | "
        f"in-process p50 {li['p50']:.0f} us  p99 {li['p99']:.0f} us | "
        f"{s['loop_p50_vs_inproc']:.2f}x ({s['overhead_pct']:+.0f}%)",
        f"  call     round trip {via} p50 {rt['p50']:.0f} us  p99 {rt['p99']:.0f} us",
        f"  wall     {s['wall_s']:.3f} s {via}, {s['inproc_wall_s']:.3f} s in-process "
        f"({s['session_s']:.2f} s session); same result in-process: "
        f"{'yes' if s['same_result'] else 'no'} ({s['inproc_error_mha']:.4f} mHa)",
    ]
    return "\n".join(lines)


def transport_name(lane: str) -> str:
    """How the summary names a run's transport: ``"over the lane"`` or ``"through broker"``."""
    return "over the lane" if lane == "shm" else "through broker"


def transport_line(lane: str, refused: str | None) -> str:
    """One line on the transport a run used, and why not the lane when it was not."""
    if lane == "shm":
        return "shared-memory lane to the pinned qpu worker (the broker only paired them)"
    return f"through the broker ({refused or 'no lane'})"
