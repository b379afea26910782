"""A producer's stream metrics: reaction time and backlog, per decoder service.

Every stream records each decoded block's reaction time (:attr:`BlockResult.reaction_ns
<client.stream.BlockResult.reaction_ns>`: from its emission to its result being
available at the producer, the definition the stream's results use) into an
:class:`NsHistogram` of its own, at the cost of one bisect. To export them, register the
streams in a prometheus-client registry::

    registry = client.metrics_export.new_registry()
    stream.register_metrics(registry)          # every stream of the process, if you like
    client.metrics_export.serve_metrics(registry, host="127.0.0.1", port=9101)

and ``/metrics`` has ``nearloop_stream_reaction_seconds{service}`` (a histogram of every
registered stream's decoded blocks) and ``nearloop_stream_backlog{service}`` (blocks sent
whose results are not yet ready in order, summed over the streams). One
:class:`StreamMetrics` collector serves all the streams of a registry; a stream stays in
it, and its decoded blocks counted, after it closes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from client.metrics_export import histogram_family
from client.wire.histogram import NsHistogram

STREAM_REACTION_SECONDS: Final = "nearloop_stream_reaction_seconds"
STREAM_BACKLOG: Final = "nearloop_stream_backlog"


class Recorded(Protocol):
    """What the collector reads of a stream (:class:`client.stream.StreamState`)."""

    @property
    def service(self) -> str: ...

    @property
    def reaction(self) -> NsHistogram: ...

    @property
    def backlog(self) -> int: ...


class StreamMetrics:
    """The collector of the streams registered in one registry, read at scrape time."""

    def __init__(self) -> None:
        self.streams: list[Recorded] = []

    def add(self, stream: Recorded) -> None:
        """Count ``stream`` from now on (its blocks decoded so far included)."""
        if not any(s is stream for s in self.streams):
            self.streams.append(stream)

    def collect(self) -> Iterator[Metric]:
        """The metric families, for a prometheus-client registry."""
        reaction: dict[tuple[str, ...], NsHistogram] = {}
        backlog: dict[str, int] = {}
        for s in list(self.streams):
            total = reaction.get((s.service,))
            if total is None:
                total = reaction[(s.service,)] = NsHistogram(s.reaction.bounds_ns)
            counts = list(s.reaction.counts)  # a snapshot: the stream's thread may observe
            total.counts = [a + b for a, b in zip(total.counts, counts, strict=True)]
            total.sum_ns += s.reaction.sum_ns
            backlog[s.service] = backlog.get(s.service, 0) + s.backlog
        yield histogram_family(
            STREAM_REACTION_SECONDS,
            "Reaction time of each decoded block: from its emission to its result being "
            "available at the producer, in seconds",
            ("service",),
            reaction,
        )
        gauge = GaugeMetricFamily(
            STREAM_BACKLOG,
            "Blocks sent whose results are not yet ready in order (in flight, or waiting "
            "for an earlier one), summed over the producer's streams",
            labels=("service",),
        )
        for service, n in backlog.items():
            gauge.add_metric((service,), n)
        yield gauge


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, StreamMetrics] = (
    weakref.WeakKeyDictionary()
)


def stream_metrics(registry: CollectorRegistry) -> StreamMetrics:
    """The registry's :class:`StreamMetrics` collector, registered on first use."""
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = StreamMetrics()
        registry.register(collector)
    return collector
