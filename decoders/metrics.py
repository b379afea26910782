"""A decoder worker's Prometheus metrics: decode time and batch size per decoder.

:class:`DecodeMetrics` is what :class:`~decoders.service.DecoderService` records into, on
the worker's thread: per ``decode_batch`` call, one :class:`NsHistogram` observe of its
time and one of its shots, and integer counts of blocks and failed blocks. Its
:meth:`DecodeMetrics.collect` (a prometheus-client custom collector) reads them on the
exporter's thread, at scrape time; ``python -m decoders --metrics-port`` registers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric

from client.metrics_export import histogram_family
from client.wire.histogram import NsHistogram

DECODE_SECONDS: Final = "nearloop_decode_seconds"
DECODE_BATCH_SIZE: Final = "nearloop_decode_batch_size"
DECODE_BLOCKS: Final = "nearloop_decode_blocks"
DECODE_ERRORS: Final = "nearloop_decode_errors"

BATCH_SHOTS_BOUNDS: Final[tuple[int, ...]] = tuple(m * 10**e for e in range(6) for m in (1, 2, 5))[
    :-2
]
"""Shots per decode call, 1 to 100 000, three buckets per decade (1, 2, 5)."""


class DecodeMetrics:
    """Counts of one decoder worker, recorded without a lock, read at scrape time.

    >>> m = DecodeMetrics("pymatching")
    >>> m.decoded(ns=2_000_000, shots=1000)
    >>> m.decode_ns.count, m.batch_shots.sum_ns
    (1, 1000)
    """

    def __init__(self, decoder: str) -> None:
        self.decoder = decoder
        self.decode_ns = NsHistogram()
        """Time of each ``decode_batch`` call."""
        self.batch_shots = NsHistogram(BATCH_SHOTS_BOUNDS)
        """Shots of each ``decode_batch`` call (an NsHistogram counts any integer)."""
        self.blocks = 0
        """Blocks handled: decoded or failed."""
        self.errors = 0
        """Blocks answered with an error: unreadable, unknown model, wrong width, or a
        decoder that raised."""

    def decoded(self, *, ns: int, shots: int) -> None:
        """Record one ``decode_batch`` call that took ``ns`` over ``shots`` shots."""
        self.decode_ns.observe(ns)
        self.batch_shots.observe(shots)

    def collect(self) -> Iterator[Metric]:
        """The metric families, for a prometheus-client registry."""
        labels = ("decoder",)
        key = (self.decoder,)
        yield histogram_family(
            DECODE_SECONDS,
            "Time of one decode call (one batch of blocks of one model), in seconds",
            labels,
            {key: self.decode_ns},
        )
        yield histogram_family(
            DECODE_BATCH_SIZE,
            "Shots per decode call (the batch the worker's dynamic batcher gathered)",
            labels,
            {key: self.batch_shots},
            scale=1.0,
        )
        blocks = CounterMetricFamily(
            DECODE_BLOCKS, "Blocks the worker handled, decoded or failed", labels=labels
        )
        blocks.add_metric(key, self.blocks)
        yield blocks
        errors = CounterMetricFamily(
            DECODE_ERRORS, "Blocks answered with an error reply", labels=labels
        )
        errors.add_metric(key, self.errors)
        yield errors

    def __repr__(self) -> str:
        return (
            f"DecodeMetrics({self.decoder}, calls={self.decode_ns.count}, "
            f"blocks={self.blocks}, errors={self.errors})"
        )
