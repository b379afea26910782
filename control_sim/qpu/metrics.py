"""The QPU worker's Prometheus metrics: evaluation time and errors per op.

:class:`QpuMetrics` is what :class:`~control_sim.qpu.service.QpuService` records into, on
the worker's thread: one :class:`NsHistogram` observe per op it answers (``register``,
``describe``, ``estimate``, ``sample``, and ``run_batch`` for each batch of a continuous
run), and an integer count of the ones that failed. :meth:`QpuMetrics.collect` reads
them at scrape time, on the exporter's thread; ``python -m control_sim qpu
--metrics-port`` registers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric

from client.metrics_export import histogram_family
from client.wire.histogram import NsHistogram
from control_sim.qpu.schema import SERVICE_OPS

QPU_EVAL_SECONDS: Final = "nearloop_qpu_eval_seconds"
QPU_ERRORS: Final = "nearloop_qpu_errors"

RUN_BATCH: Final = "run_batch"
"""The op label of one batch of a continuous run (its first included)."""
INVALID_OP: Final = "invalid"
"""The op label of a request that names no op the service knows (errors only): a label
never takes a value from the wire, so its values stay few."""
OPS: Final[tuple[str, ...]] = (*SERVICE_OPS, RUN_BATCH)


class QpuMetrics:
    """Per op: evaluation times and errors, recorded without a lock, read at scrape time.

    >>> m = QpuMetrics()
    >>> with m.timed("estimate"):
    ...     pass
    >>> m.eval_ns["estimate"].count, m.errors["estimate"]
    (1, 0)
    """

    def __init__(self) -> None:
        self.eval_ns: dict[str, NsHistogram] = {op: NsHistogram() for op in OPS}
        """Time to answer each request, per op (failed ones included)."""
        self.errors: dict[str, int] = dict.fromkeys((*OPS, INVALID_OP), 0)
        """Requests answered with an error, per op."""

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        """Time the block as one ``op``; an exception out of it counts as its error."""
        t0 = time.perf_counter_ns()
        try:
            yield
        except Exception:
            self.errors[op] += 1
            raise
        finally:
            self.eval_ns[op].observe(time.perf_counter_ns() - t0)

    def collect(self) -> Iterator[Metric]:
        """The metric families, for a prometheus-client registry."""
        yield histogram_family(
            QPU_EVAL_SECONDS,
            "Time the QPU worker took to answer one request, per op (run_batch: one batch "
            "of a continuous run), in seconds",
            ("op",),
            {(op,): h for op, h in self.eval_ns.items()},
        )
        errors = CounterMetricFamily(
            QPU_ERRORS,
            "Requests the QPU worker answered with an error, per op (invalid: no known op)",
            labels=("op",),
        )
        for op, n in list(self.errors.items()):
            errors.add_metric((op,), n)
        yield errors

    def __repr__(self) -> str:
        counts = {op: h.count for op, h in self.eval_ns.items() if h.count}
        return f"QpuMetrics({counts}, errors={sum(self.errors.values())})"
