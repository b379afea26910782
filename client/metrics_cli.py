"""Starting a part's ``/metrics`` endpoint from its command line (``--metrics-port``).

The worker and producer parts (``python -m decoders``, ``control_sim qpu|qec``) build a
registry of their collectors, then call :func:`start_metrics` with their parsed
arguments (:func:`client.arguments.add_metrics_options`): it serves the registry and
prints the one ``METRICS URL`` line a supervisor or a test reads.
"""

from __future__ import annotations

import argparse

from prometheus_client import CollectorRegistry

from client.metrics_export import METRICS_LINE, MetricsServer, serve_metrics


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
