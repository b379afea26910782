"""``python -m control_sim qpu``: one QPU worker process serving :class:`QpuService`.

    python -m control_sim qpu --connect EP [--service qpu] [--credit 4]
        [--heartbeat-ms 250] [--seed 2026] [--log-level WARNING]
        [--curve CLIENT_CERT BROKER_CERT]
        [--metrics-port PORT [--metrics-host HOST]]

It registers with the broker, granting ``--credit`` requests in flight, prints ``READY``
once the broker has answered its READY, and answers the ops of docs/QPU_SERVICE.md on qiskit-aer,
continuous runs in sessions included (:mod:`control_sim.qpu.continuous`; at most
``credit - 1`` at once, so that a slot always stays free for their updates). Like every
:class:`client.worker.Worker`, it serves shared-memory lanes to the sessions of clients on
its host (the runs' PARTIALs, sent from the idle callback, go over the lane too).
SIGINT/SIGTERM make it say DISCONNECT and exit 0. ``--metrics-port`` serves
``nearloop_qpu_eval_seconds{op}`` and ``nearloop_qpu_errors_total{op}``
(:mod:`control_sim.qpu.metrics`) with the process metrics, announced on a ``METRICS URL``
line before ``READY``; a port that cannot be bound is a one-line error, exit 2.

Only the standard library, :mod:`client.arguments` and the service's name are imported
here; qiskit and the worker are imported when the command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
from typing import Final

from client.arguments import (
    add_connect,
    add_curve_option,
    add_metrics_options,
    add_seed,
    add_worker_options,
    configure_logging,
    curve_of,
    fail,
)
from control_sim.qpu.names import DEFAULT_SERVICE

DEFAULT_CREDIT: Final = 4


def add_qpu_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qpu`` subcommand's options."""
    add_connect(p, required=True, help="the broker's endpoint")
    p.add_argument("--service", default=DEFAULT_SERVICE, help="the service to serve")
    add_worker_options(p, credit=DEFAULT_CREDIT, what="requests")
    add_seed(p, help="seeds the simulator seed of shot-based requests that carry none")
    add_curve_option(p)
    add_metrics_options(p, what="the QPU worker (evaluation time and errors per op)")


def run_qpu(args: argparse.Namespace) -> int:
    """Serve the ``qpu`` service until SIGINT/SIGTERM; returns the exit status.

    0 when stopped by a signal (before or after READY); options the protocol refuses
    (``--credit`` over its limit, ``--heartbeat-ms`` out of range) stop at parsing, 2.
    """
    curve = curve_of(args.command_parser, args)
    configure_logging(args.log_level)
    from control_sim.stack.processes import interrupts_raise

    try:
        # Until run_worker installs its own handlers, a signal unwinds the slow start.
        with interrupts_raise():
            from client.metrics_export import MetricsUnavailable, new_registry, start_metrics
            from client.worker import Worker, serve
            from control_sim.qpu.continuous import ContinuousRuns
            from control_sim.qpu.service import QpuService

            service = QpuService(seed=args.seed)
            registry = new_registry()
            registry.register(service.metrics)
            try:
                server = start_metrics(registry, args)
            except MetricsUnavailable as exc:
                return fail(exc)
            holder: list[Worker] = []
            # A continuous run holds a credit slot until it stops: keep one for updates.
            runs = ContinuousRuns(service, lambda: holder[0].defer(), max_runs=args.credit - 1)
            worker = Worker(
                args.connect,
                args.service,
                runs.handle,
                idle=runs.idle,
                credit=args.credit,
                heartbeat_ms=args.heartbeat_ms,
                curve=curve,
            )
            holder.append(worker)
            serve(worker)
            if server is not None:
                server.close()
    except KeyboardInterrupt:
        pass  # stopped while starting: nothing was served
    return 0
