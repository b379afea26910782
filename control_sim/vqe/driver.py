"""The VQE driver, transport-agnostic: one loop, whatever answers the energy requests.

:func:`run_vqe` minimizes ``energy(X) -> energies`` (``X`` float64 ``(m, n)``, energies
float64 ``(m,)``) with SPSA or COBYLA and times every optimizer iteration and every
``energy`` call with ``time.perf_counter_ns()``. ``energy`` may evaluate in-process
(:func:`in_process_energy`) or send ``X`` to the ``qpu`` service through the broker; the
loop, the optimizer and the timing are the same, so the two can be compared directly.

SPSA sends its two perturbed points in one ``energy`` call (one round trip per
iteration); COBYLA sends one point per call.

>>> result = run_h2_vqe(in_process_energy(seed=1), optimizer="cobyla", maxiter=150, seed=0)
>>> result.error_mha < 1.6, result.evaluations == result.calls
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from client.latency import LatencySummary
from control_sim.qpu.evaluator import QpuEvaluator
from control_sim.vqe import h2
from control_sim.vqe.optimizers import OptimizeResult, cobyla, scalar, spsa

EnergyFn: TypeAlias = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""``energy(X) -> energies``: ``X`` float64 ``(m, n)``, ``energies`` float64 ``(m,)``.

What :func:`run_vqe` minimizes, wherever it is evaluated: :func:`in_process_energy`, or
:meth:`control_sim.qpu.client.QpuClient.energy_fn` through the ``qpu`` service."""
OptimizerName = Literal["spsa", "cobyla"]


def latency_of(us: NDArray[np.float64]) -> LatencySummary:
    """:class:`~client.latency.LatencySummary` of latencies given in microseconds, as
    :class:`VqeResult` holds them."""
    return LatencySummary.of(np.rint(np.asarray(us) * 1e3).astype(np.int64))


@dataclass(frozen=True, eq=False)
class VqeResult:
    """A VQE run: where it ended, how good that is, and how long each step took.

    Energies are electronic, in hartree. ``energy`` is what ``energy()`` returned at ``x``
    (noisy with shots); ``energy_exact_at_x`` is the exact energy there when a reference
    was given. ``error_mha`` uses the exact one when there is one.

    ``iteration_us[k]`` is the wall time of optimizer iteration ``k + 1``: its ``energy``
    calls plus the optimizer's own work (the first also holds SPSA's calibration call or
    COBYLA's start-up evaluations). ``call_us[j]`` is the wall time of ``energy`` call
    ``j``: the round trip, when ``energy`` is remote.
    """

    optimizer: str
    x: NDArray[np.float64]
    energy: float
    energy_exact_at_x: float | None
    exact_energy: float
    iterations: int
    evaluations: int
    calls: int
    iteration_us: NDArray[np.float64] = field(repr=False)
    call_us: NDArray[np.float64] = field(repr=False)
    history: NDArray[np.float64] = field(repr=False)
    total_us: float

    @property
    def error_mha(self) -> float:
        """Energy above the exact ground state, in millihartree."""
        best = self.energy if self.energy_exact_at_x is None else self.energy_exact_at_x
        return (best - self.exact_energy) * 1e3

    @property
    def chemically_accurate(self) -> bool:
        """Within 1.6 mHa (1 kcal/mol) of the exact ground state."""
        return abs(self.error_mha) < h2.CHEMICAL_ACCURACY_HA * 1e3

    def summary(self) -> dict[str, Any]:
        """JSON-able figures: accuracy, counts, and both latencies' percentiles (µs; the
        fields of :class:`~client.latency.LatencySummary`, empty without samples)."""

        def stats(us: NDArray[np.float64]) -> dict[str, Any]:
            return latency_of(us).to_dict() if len(us) else {}

        return {
            "optimizer": self.optimizer,
            "energy_ha": self.energy,
            "energy_exact_at_x_ha": self.energy_exact_at_x,
            "exact_energy_ha": self.exact_energy,
            "error_mha": self.error_mha,
            "iterations": self.iterations,
            "evaluations": self.evaluations,
            "calls": self.calls,
            "total_us": self.total_us,
            "iteration": stats(self.iteration_us),
            "call": stats(self.call_us),
        }

    def __repr__(self) -> str:
        return (
            f"VqeResult({self.optimizer}: error {self.error_mha:.4f} mHa after "
            f"{self.iterations} iterations, {self.calls} calls; p50 iteration "
            f"{float(np.median(self.iteration_us)) if len(self.iteration_us) else 0:.1f} µs)"
        )


def run_vqe(
    energy: EnergyFn,
    *,
    num_parameters: int,
    exact_energy: float,
    optimizer: OptimizerName = "spsa",
    maxiter: int = 300,
    seed: int = 0,
    x0: ArrayLike | None = None,
    reference: EnergyFn | None = None,
    options: Mapping[str, Any] | None = None,
) -> VqeResult:
    """Minimize ``energy`` from ``x0`` (default: uniform in [-π, π), drawn from ``seed``).

    ``maxiter`` is SPSA's iteration count or COBYLA's evaluation budget; ``seed`` also
    seeds SPSA's perturbations. ``reference`` (an exact energy function, e.g. an
    in-process exact evaluator) is called once at the end, untimed, to report the exact
    energy of the returned point. ``options`` go to the optimizer as keyword arguments.
    """
    if x0 is None:
        start = np.random.default_rng(seed).uniform(-np.pi, np.pi, num_parameters)
    else:
        start = np.array(x0, dtype=np.float64).ravel()
        if start.shape != (num_parameters,):
            raise ValueError(f"x0 has shape {start.shape}, expected ({num_parameters},)")
    call_ns: list[int] = []
    iteration_ns: list[int] = []

    def timed_energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
        t0 = time.perf_counter_ns()
        values = energy(xs)
        call_ns.append(time.perf_counter_ns() - t0)
        return np.asarray(values, dtype=np.float64).reshape(-1)

    last_ns = 0

    def on_iteration(iteration: int, x: NDArray[np.float64], value: float) -> None:
        nonlocal last_ns
        now = time.perf_counter_ns()
        iteration_ns.append(now - last_ns)
        last_ns = now

    extra = dict(options or {})
    began = last_ns = time.perf_counter_ns()
    result: OptimizeResult
    if optimizer == "spsa":
        result = spsa(
            timed_energy, start, maxiter=maxiter, seed=seed, callback=on_iteration, **extra
        )
    elif optimizer == "cobyla":
        result = cobyla(
            scalar(timed_energy), start, maxiter=maxiter, callback=on_iteration, **extra
        )
    else:
        raise ValueError(f"optimizer must be 'spsa' or 'cobyla', got {optimizer!r}")
    total_us = (time.perf_counter_ns() - began) / 1e3
    exact_at_x = None
    if reference is not None:
        exact_at_x = float(np.asarray(reference(result.x[np.newaxis, :])).reshape(-1)[0])
    return VqeResult(
        optimizer=optimizer,
        x=result.x,
        energy=result.fun,
        energy_exact_at_x=exact_at_x,
        exact_energy=exact_energy,
        iterations=result.iterations,
        evaluations=result.evaluations,
        calls=len(call_ns),
        iteration_us=np.array(iteration_ns, dtype=np.float64) / 1e3,
        call_us=np.array(call_ns, dtype=np.float64) / 1e3,
        history=result.history,
        total_us=total_us,
    )


def h2_registration() -> tuple[str, list[list[tuple[str, float]]]]:
    """What to register with the ``qpu`` service for H2: (OpenQASM 3 ansatz, observables).

    The same values serve in-process and remote registration, so both run one circuit id.
    """
    return h2.ANSATZ_QASM3, [list(h2.PAULI_TERMS)]


def run_h2_vqe(
    energy: EnergyFn,
    *,
    optimizer: OptimizerName = "spsa",
    maxiter: int = 300,
    seed: int = 0,
    reference: EnergyFn | None = None,
    options: Mapping[str, Any] | None = None,
) -> VqeResult:
    """:func:`run_vqe` on the H2 problem of :mod:`control_sim.vqe.h2` (4 parameters)."""
    return run_vqe(
        energy,
        num_parameters=h2.NUM_PARAMETERS,
        exact_energy=h2.exact_ground_energy(),
        optimizer=optimizer,
        maxiter=maxiter,
        seed=seed,
        reference=reference,
        options=options,
    )


def in_process_energy(
    evaluator: QpuEvaluator | None = None,
    *,
    shots: int | None = None,
    seed: int | None = None,
) -> EnergyFn:
    """The H2 energy evaluated in this process: the registry and evaluator called directly.

    Registers :func:`h2_registration` with ``evaluator`` (a new one seeded with ``seed``
    when None), compiles it, and returns ``energy(X)``: exact when ``shots`` is None, else
    ``shots`` shots per measurement basis, each call with its own seed from the
    evaluator's stream.
    """
    ev = evaluator if evaluator is not None else QpuEvaluator(seed=seed)
    source, observables = h2_registration()
    circuit_id = ev.registry.register_qasm3(source, observables)
    ev.prepare(circuit_id)

    def energy(xs: NDArray[np.float64]) -> NDArray[np.float64]:
        return ev.estimate(circuit_id, xs, shots=shots).values[:, 0]

    return energy
