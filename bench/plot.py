"""Latency plots. Each function draws on the ``ax`` it is given and never calls ``show()``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.stats import LatencySummary


def _sorted_us(samples_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    return np.sort(np.asarray(samples_ns, dtype=np.float64) / 1000.0)


def plot_cdf(
    ax: Any,
    samples_ns: Mapping[str, npt.NDArray[np.int64]],
    summaries: Mapping[str, LatencySummary],
    *,
    quantity: str = "round trip",
    labels: Mapping[str, str] | None = None,
) -> None:
    """CDF of ``quantity`` (a latency) per peer on a log-x axis, with a dot at each p50.

    ``labels`` gives a peer's legend text; by default its name and p50.
    """
    for name, samples in samples_ns.items():
        us = _sorted_us(samples)
        frac = np.arange(1, us.size + 1) / us.size
        p50 = summaries[name].p50_us
        label = labels[name] if labels and name in labels else f"{name} (p50 {p50:.0f} µs)"
        (line,) = ax.plot(us, frac, label=label, linewidth=1.4)
        ax.plot([p50], [0.5], "o", color=line.get_color(), markersize=5)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"{quantity} (µs, log scale)")
    ax.set_ylabel(f"fraction of {quantity}s ≤ x")
    ax.set_title("CDF (dots: p50)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def plot_tail(
    ax: Any, samples_ns: Mapping[str, npt.NDArray[np.int64]], *, quantity: str = "round trip"
) -> None:
    """Tail per peer: the fraction of ``quantity`` slower than x, log-log, down to 1/n."""
    for name, samples in samples_ns.items():
        us = _sorted_us(samples)
        slower = 1.0 - np.arange(us.size) / us.size
        ax.plot(us, slower, label=name, linewidth=1.4)
    for level, tag in ((1e-2, "p99"), (1e-3, "p99.9")):
        ax.axhline(level, color="grey", linewidth=0.8, linestyle=":")
        ax.annotate(tag, (0.01, level), xycoords=("axes fraction", "data"), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{quantity} (µs, log scale)")
    ax.set_ylabel(f"fraction of {quantity}s > x")
    ax.set_title("tail")
    ax.grid(True, which="both", alpha=0.3)


def save_rtt_figure(
    path: Path,
    samples_ns: Mapping[str, npt.NDArray[np.int64]],
    summaries: Mapping[str, LatencySummary],
    title: str,
    *,
    quantity: str = "round trip",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Write the CDF and tail side by side to ``path`` with the Agg canvas (no pyplot).

    ``quantity`` names what the samples time, in the axis labels; ``labels`` gives the
    CDF's legend text per peer (:func:`plot_cdf`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    cdf_ax, tail_ax = fig.subplots(1, 2)
    plot_cdf(cdf_ax, samples_ns, summaries, quantity=quantity, labels=labels)
    plot_tail(tail_ax, samples_ns, quantity=quantity)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
