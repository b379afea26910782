"""Serving Prometheus metrics over HTTP: one exporter for the broker, workers and producers.

Each process that exports (``--metrics-port``) serves its own registry from a daemon
thread that :mod:`prometheus_client` runs. The command-line options are
:func:`client.arguments.add_metrics_options`. Nothing here touches a hot path: collectors
read the counters their part keeps, at scrape time, on the exporter's thread. A part's
command line starts its endpoint with :func:`start_metrics`, which prints the one
``METRICS URL`` line a supervisor or a test reads.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from client.wire.histogram import NsHistogram

METRICS_LINE: Final = "METRICS"
"""The first word of the line a part prints once it serves ``/metrics``:
``METRICS http://HOST:PORT/metrics``."""


def new_registry() -> CollectorRegistry:
    """A registry with the library's default process, platform and GC metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint."""

    host: str
    port: int
    """The bound port: the one asked for, or the one the system picked for port 0."""
    server: WSGIServer

    @property
    def url(self) -> str:
        """Where to scrape."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(registry: CollectorRegistry, *, host: str, port: int) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Raises OSError when the address cannot be bound (in use, not local).
    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, int(server.server_port), server)


class MetricsUnavailable(OSError):
    """The metrics endpoint could not be bound (port in use, address not local)."""


def start_metrics(registry: CollectorRegistry, args: argparse.Namespace) -> MetricsServer | None:
    """Serve ``registry`` if ``--metrics-port`` was given, and print ``METRICS URL``
    (flushed); None if it was not. Raises :class:`MetricsUnavailable`, whose text is one
    line for the command's ``error:``."""
    if args.metrics_port is None:
        return None
    try:
        server = serve_metrics(registry, host=args.metrics_host, port=args.metrics_port)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise MetricsUnavailable(
            f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {why}"
        ) from exc
    print(f"{METRICS_LINE} {server.url}", flush=True)
    return server


def histogram_family(
    name: str,
    documentation: str,
    labels: Sequence[str],
    histograms: Mapping[tuple[str, ...], NsHistogram],
    *,
    scale: float = 1e-9,
) -> HistogramMetricFamily:
    """A Prometheus histogram in seconds, one sample set per label values, read from
    :class:`~client.wire.histogram.NsHistogram` counters (a snapshot of each, taken
    without locking: a scrape may miss an observation made while it reads, never more).
    ``scale`` converts the recorded integers to the metric's unit: 1.0 for counts (a batch
    size), the default for nanoseconds to seconds."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, h in list(histograms.items()):
        counts = list(h.counts)
        cumulative, buckets = 0, []
        for bound_ns, n in zip((*h.bounds_ns, None), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound_ns is None else repr(bound_ns * scale), cumulative))
        family.add_metric(list(values), buckets, sum_value=h.sum_ns * scale)
    return family
