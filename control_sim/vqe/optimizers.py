"""Optimizers for the parameter loop: SPSA (written here) and COBYLA (scipy).

Both minimize an objective of a parameter vector and return an :class:`OptimizeResult`.

- :func:`spsa` takes a **batched** objective, ``f_batch(X) -> values`` with ``X`` of shape
  ``(m, n)`` and ``values`` of shape ``(m,)``: each iteration evaluates its two perturbed
  points in one call, so a remote objective makes one round trip per iteration (and the
  calibration one round trip in all).
- :func:`cobyla` takes a scalar objective, ``f(x) -> float``; COBYLA is sequential.

:func:`batched` and :func:`scalar` convert between the two forms. Both optimizers call
``callback(iteration, x, value)`` at the end of every iteration, which is where a caller
times the loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize

Objective = Callable[[NDArray[np.float64]], float]
"""``f(x) -> float`` with ``x`` float64 ``(n,)``."""
BatchObjective = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""``f_batch(X) -> values``: ``X`` float64 ``(m, n)``, ``values`` float64 ``(m,)``."""
Callback = Callable[[int, NDArray[np.float64], float], None]
"""``callback(iteration, x, value)``, after each iteration (iterations count from 1)."""

SPSA_ALPHA: Final = 0.602
SPSA_GAMMA: Final = 0.101
"""Spall's practical exponents for a_k and c_k (Spall 1998, IEEE Trans. AES 34(3))."""


@dataclass(frozen=True, eq=False)
class OptimizeResult:
    """The outcome of a minimization.

    ``x`` is the returned point and ``fun`` the objective there, evaluated once more at
    the end (so with shot noise ``fun`` is one noisy sample, not a minimum over samples).
    ``history[k]`` is the objective estimate of iteration ``k + 1``: for SPSA the mean of
    its two perturbed values, for COBYLA the value of its last evaluation.
    """

    method: str
    x: NDArray[np.float64]
    fun: float
    iterations: int
    evaluations: int
    history: NDArray[np.float64] = field(repr=False)
    message: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 1:
            raise ValueError(f"x must be 1-D, got shape {self.x.shape}")
        if len(self.history) != self.iterations:
            raise ValueError(
                f"{len(self.history)} history entries for {self.iterations} iterations"
            )


def batched(f: Objective) -> BatchObjective:
    """A batched objective that calls the scalar ``f`` once per row."""

    def f_batch(xs: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.array([f(x) for x in xs], dtype=np.float64)

    return f_batch


def scalar(f_batch: BatchObjective) -> Objective:
    """A scalar objective that sends one row to the batched ``f_batch``."""

    def f(x: NDArray[np.float64]) -> float:
        return float(f_batch(x[np.newaxis, :])[0])

    return f


def spsa(
    f_batch: BatchObjective,
    x0: ArrayLike,
    *,
    maxiter: int = 300,
    seed: int | None = None,
    a: float | None = None,
    c: float = 0.2,
    stability: float | None = None,
    target_step: float = 0.3,
    calibration_points: int = 16,
    average_last: int | None = None,
    callback: Callback | None = None,
) -> OptimizeResult:
    """Simultaneous-perturbation stochastic approximation (Spall), seeded.

    Iteration ``k`` (from 0) draws a random ±1 vector ``d``, evaluates
    ``x ± c_k d`` in one ``f_batch`` call and steps
    ``x -= a_k (f(x + c_k d) - f(x - c_k d)) / (2 c_k) * d`` with the gains
    ``a_k = a / (k + 1 + A)^0.602`` and ``c_k = c / (k + 1)^0.101``.

    - ``c`` is the perturbation size; make it larger than the objective's noise allows
      gradient estimates to drown in (0.2 rad suits rotation angles and shot noise).
    - ``stability`` (Spall's ``A``) defaults to 10% of ``maxiter``.
    - ``a`` defaults to a calibration: ``calibration_points`` random perturbations of
      ``x0`` (one batched call of ``2 * calibration_points`` points) estimate the
      gradient's size, and ``a`` is set so that the first step moves each parameter by
      about ``target_step``.
    - The result's ``x`` is the mean of the last ``average_last`` iterates (default: the
      last tenth; averaging tames shot noise and the last oscillations), and ``fun`` is one
      more evaluation there.
    """
    x = np.array(x0, dtype=np.float64).ravel()
    if average_last is None:
        average_last = max(1, maxiter // 10)
    if maxiter < 1 or average_last < 1 or c <= 0:
        raise ValueError(
            f"need maxiter >= 1, average_last >= 1, c > 0; got {maxiter}, {average_last}, {c}"
        )
    rng = np.random.default_rng(seed)
    n = x.size
    big_a = 0.1 * maxiter if stability is None else stability
    evaluations = 0
    if a is None:
        deltas = rng.choice([-1.0, 1.0], size=(calibration_points, n))
        values = _call(f_batch, np.concatenate([x + c * deltas, x - c * deltas]))
        evaluations += 2 * calibration_points
        slopes = np.abs(values[:calibration_points] - values[calibration_points:]) / (2 * c)
        mean_slope = float(slopes.mean())
        # Floor the slope so that a flat start cannot make the first step huge.
        a = target_step * (1 + big_a) ** SPSA_ALPHA / max(mean_slope, 1e-3)
    history = np.empty(maxiter)
    tail = np.empty((min(average_last, maxiter), n))
    for k in range(maxiter):
        ak = a / (k + 1 + big_a) ** SPSA_ALPHA
        ck = c / (k + 1) ** SPSA_GAMMA
        delta = rng.choice([-1.0, 1.0], size=n)
        plus, minus = _call(f_batch, np.stack([x + ck * delta, x - ck * delta]))
        evaluations += 2
        x = x - ak * (plus - minus) / (2 * ck) * delta
        history[k] = 0.5 * (plus + minus)
        tail[k % len(tail)] = x
        if callback is not None:
            callback(k + 1, x, float(history[k]))
    x_out = tail.mean(axis=0)
    fun = float(_call(f_batch, x_out[np.newaxis, :])[0])
    evaluations += 1
    return OptimizeResult(
        method="spsa",
        x=x_out,
        fun=fun,
        iterations=maxiter,
        evaluations=evaluations,
        history=history,
        message=f"{maxiter} iterations, a={a:.4g}, c={c:g}, A={big_a:g}",
    )


def cobyla(
    f: Objective,
    x0: ArrayLike,
    *,
    maxiter: int = 300,
    rhobeg: float = 0.5,
    tol: float = 1e-6,
    callback: Callback | None = None,
) -> OptimizeResult:
    """COBYLA (``scipy.optimize.minimize(method="COBYLA")``), deterministic.

    ``maxiter`` bounds the objective evaluations (scipy's meaning for COBYLA), ``rhobeg``
    is the first trust-region radius and ``tol`` the last. An iteration is one call of
    scipy's callback; COBYLA evaluates about once per iteration after ``n + 1`` start-up
    evaluations. ``fun`` is one more evaluation at the returned ``x``.
    """
    x_start = np.array(x0, dtype=np.float64).ravel()
    evaluations = 0
    last = math.nan
    history: list[float] = []

    def counted(x: NDArray[np.float64]) -> float:
        nonlocal evaluations, last
        evaluations += 1
        last = float(f(np.asarray(x, dtype=np.float64)))
        return last

    def on_iteration(intermediate_result: Any) -> None:
        history.append(last)
        if callback is not None:
            callback(len(history), np.asarray(intermediate_result.x, dtype=np.float64), last)

    result = minimize(
        counted,
        x_start,
        method="COBYLA",
        callback=on_iteration,
        options={"maxiter": maxiter, "rhobeg": rhobeg, "tol": tol},
    )
    x = np.asarray(result.x, dtype=np.float64)
    fun = counted(x)
    return OptimizeResult(
        method="cobyla",
        x=x,
        fun=fun,
        iterations=len(history),
        evaluations=evaluations,
        history=np.array(history, dtype=np.float64),
        message=str(result.message),
    )


def _call(f_batch: BatchObjective, xs: NDArray[np.float64]) -> NDArray[np.float64]:
    values = np.asarray(f_batch(xs), dtype=np.float64).reshape(-1)
    if values.shape != (len(xs),):
        raise ValueError(f"objective returned {values.shape[0]} values for {len(xs)} points")
    return values
