"""Latency summaries: percentiles from raw samples in nanoseconds, reported in µs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

PERCENTILES = (50.0, 99.0, 99.9)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles of a set of latencies (round trips, reaction times), in microseconds."""

    n: int
    min_us: float
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    mean_us: float

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a summary needs at least one sample")
        if not 0 < self.min_us <= self.p50_us <= self.p99_us <= self.p999_us <= self.max_us:
            raise ValueError(f"percentiles out of order or not positive: {self}")

    @classmethod
    def of(cls, samples_ns: npt.NDArray[np.int64]) -> LatencySummary:
        """Summarize latencies given in nanoseconds (numpy's linear percentiles)."""
        us = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        if us.size == 0:
            raise ValueError("a summary needs at least one sample")
        p50, p99, p999 = (float(v) for v in np.percentile(us, PERCENTILES))
        return cls(
            n=int(us.size),
            min_us=float(us.min()),
            p50_us=p50,
            p99_us=p99,
            p999_us=p999,
            max_us=float(us.max()),
            mean_us=float(us.mean()),
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    def brief(self) -> dict[str, float]:
        """``{p50, p99, p999, max}`` in microseconds, as the JSON summaries report them."""
        return {"p50": self.p50_us, "p99": self.p99_us, "p999": self.p999_us, "max": self.max_us}
