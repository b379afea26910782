"""A latency histogram that costs one bisect and two integer additions to record into.

The broker, workers and producers record into these on their hot paths; a Prometheus
collector (:func:`client.metrics_export.histogram_family`) reads them at scrape time, from
the exporter's thread. Bounds are in nanoseconds, so recording never divides or converts.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

LATENCY_BOUNDS_NS: Final[tuple[int, ...]] = tuple(
    int(m * 10**e) for e in range(3, 10) for m in (1, 2.5, 5)
)[:-2]
"""1 µs to 1 s, three buckets per decade (1, 2.5, 5): the range of a near-time loop, from
a shared-memory round trip to a slow circuit evaluation."""


class NsHistogram:
    """Counts of observations per bucket (upper bound inclusive), their sum and number.

    >>> h = NsHistogram((10, 100))
    >>> for ns in (5, 10, 50, 1000):
    ...     h.observe(ns)
    >>> h.counts, h.sum_ns, h.count
    ([2, 1, 1], 1065, 4)
    """

    __slots__ = ("bounds_ns", "counts", "sum_ns")

    def __init__(self, bounds_ns: tuple[int, ...] = LATENCY_BOUNDS_NS) -> None:
        self.bounds_ns = bounds_ns
        self.counts = [0] * (len(bounds_ns) + 1)
        """Per bucket, the last one above every bound (+Inf)."""
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        """Record one observation of ``ns`` nanoseconds."""
        self.counts[bisect_left(self.bounds_ns, ns)] += 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        """How many observations were recorded."""
        return sum(self.counts)
