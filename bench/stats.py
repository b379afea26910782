"""Ratios against a baseline; the latency summary itself lives in :mod:`client.latency`."""

from __future__ import annotations

from client.latency import LatencySummary

__all__ = ["LatencySummary", "ratio"]


def ratio(value: float, baseline: float | None) -> float | None:
    """``value / baseline``, or None where there is no baseline."""
    if baseline is None or baseline <= 0:
        return None
    return value / baseline
