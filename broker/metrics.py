"""The broker's Prometheus metrics: a collector that reads its counters at scrape time.

The loop only adds to plain integers (``Broker.stats``, ``Broker.malformed``,
``Broker.auth_refused``, each service's :class:`~broker.registry.ServiceCounts`) and
records into :class:`~client.wire.histogram.NsHistogram`; it takes no lock. The collector
runs on the exporter's thread (:func:`client.metrics_export.serve_metrics`) and copies
each dict, list or deque before it iterates it (one call, atomic under the GIL), so a
scrape that races the loop may be one count behind, never wrong. Names, labels and the
outcome definitions are in PROTOCOL.md §4.9.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from broker.registry import LANE_OUTCOMES, OUTCOMES
from client.metrics_export import histogram_family, new_registry

if TYPE_CHECKING:
    from broker.broker import Broker

REQUESTS_HELP: Final = (
    "Client requests by what became of them. ok: a FINAL forwarded that is not a nearloop "
    "error reply; error: a FINAL that is one (a worker's error reply); expired: its ttl ran "
    "out while it was queued; refused: answered by the broker without dispatch (queue "
    "full, too large, no room for a new service, unknown session); lost: failed because "
    "its worker died (past max_redispatch, or holding its session); redispatched: re-sent "
    "after its worker died (not terminal: it ends as one of the others). Requests through a "
    "session count under the session's service; nl.session counts those refused before a "
    "session is known. mmi.* and the broker's own nl.* services are not counted."
)
"""One home for the outcome definitions the exposition carries (PROTOCOL.md §4.9 too)."""

STATS_HELP: Final[dict[str, str]] = {
    "oversized": "requests refused for a body over the message size limit",
    "queue_full": "requests refused because their queue was full",
    "expired": "requests whose ttl ran out while queued",
    "undeliverable": "messages dropped because their peer was gone or not reading",
    "stale_replies": "worker replies to requests no longer held (late, or re-sent)",
    "unknown_worker": "worker commands from peers not registered (sent DISCONNECT)",
    "workers_registered": "workers registered (READY accepted)",
    "workers_expired": "workers removed for missing their heartbeats",
    "workers_disconnected": "workers that sent DISCONNECT",
    "redispatched": "requests re-sent after their worker died",
    "worker_lost": "requests failed after max_redispatch workers died holding them",
    "partials_dropped_v01": "PARTIAL replies not sent to MDP/0.1 clients, which take one reply",
    "internal_errors": "bugs caught by the loop, which went on",
    "services_refused": "new service names refused at max_services",
    "sessions_opened": "sessions opened",
    "sessions_closed": "sessions closed by their client",
    "sessions_lost": "sessions whose worker died",
    "sessions_expired": "sessions forgotten after session_idle_ms idle",
    "lanes_opened": "session lanes opened",
    "lanes_closed": "session lanes closed",
    "roles_refused": "READYs from keys not allowed to be a worker (of that service)",
}
"""Help for each ``Broker.stats`` counter, exported as ``nearloop_broker_<name>_total``
(``malformed`` has its own family, by reason)."""


def _label(name: bytes) -> str:
    return name.decode("ascii", "replace")  # service names are printable ASCII


class BrokerCollector(Collector):
    """Reads a :class:`~broker.broker.Broker`'s counters when Prometheus scrapes."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        """The broker's metric families, as they stand now."""
        b = self.broker
        counts = list(b.counts.by_name.items())
        requests = CounterMetricFamily(
            "nearloop_requests", REQUESTS_HELP, labels=["service", "outcome"]
        )
        for name, c in counts:
            service = _label(name)
            for outcome, n in zip(OUTCOMES, list(c.outcomes), strict=True):
                requests.add_metric([service, outcome], n)
        yield requests
        lane = CounterMetricFamily(
            "nearloop_lane_requests",
            "Requests answered over shared-memory lanes, which never pass the broker, by "
            "service and outcome (ok, error), as the workers' heartbeats report them: up to "
            "one heartbeat interval behind.",
            labels=["service", "outcome"],
        )
        for name, c in counts:
            for outcome, n in zip(LANE_OUTCOMES, list(c.lane_outcomes), strict=True):
                lane.add_metric([_label(name), outcome], n)
        yield lane
        yield histogram_family(
            "nearloop_request_seconds",
            "Time from the broker's receipt of a request to its forwarding of the FINAL "
            "(ok and error outcomes), by service.",
            ["service"],
            {(_label(name),): c.latency for name, c in counts},
        )
        yield from self._gauges()
        malformed = CounterMetricFamily(
            "nearloop_malformed",
            "Malformed messages dropped (or answered with an error), by reason: "
            + ", ".join(b.malformed)
            + " (PROTOCOL.md §4.9).",
            labels=["reason"],
        )
        for reason, n in list(b.malformed.items()):
            malformed.add_metric([reason], n)
        yield malformed
        refused = CounterMetricFamily(
            "nearloop_auth_refused",
            "Handshakes refused by the authentication handler, by mechanism.",
            labels=["mechanism"],
        )
        for mechanism, n in list(b.auth_refused.items()):
            refused.add_metric([mechanism], n)
        yield refused
        for stat, n in list(b.stats.items()):
            if stat != "malformed":
                help_text = STATS_HELP.get(stat, f"the broker's {stat} counter (mmi.stats)")
                yield CounterMetricFamily(f"nearloop_broker_{stat}", help_text, value=n)

    def _gauges(self) -> Iterator[Metric]:
        b = self.broker
        depth = GaugeMetricFamily(
            "nearloop_queue_depth",
            "Requests waiting in the broker for a worker of the service: its queue, and "
            "session requests waiting for their worker's credit.",
            labels=["service"],
        )
        workers = GaugeMetricFamily(
            "nearloop_workers", "Workers registered for the service.", labels=["service"]
        )
        credit = GaugeMetricFamily(
            "nearloop_worker_credit",
            "Credit the broker holds for the service's workers: requests it can dispatch "
            "now without queueing.",
            labels=["service"],
        )
        pinned: dict[bytes, int] = {}
        for w in list(b.workers.values()):
            if w.pinned:
                name = w.service.name
                pinned[name] = pinned.get(name, 0) + len(w.pinned)
        for svc in list(b.services.values()):
            label = [_label(svc.name)]
            depth.add_metric(label, svc.n_queued + pinned.get(svc.name, 0))
            workers.add_metric(label, svc.workers)
            credit.add_metric(label, sum(w.free for w in list(svc.waiting)))
        yield depth
        yield workers
        yield credit
        sessions = list(b.sessions.values())
        yield GaugeMetricFamily(
            "nearloop_sessions",
            "Sessions the broker holds (lost ones included, until closed or expired).",
            value=len(sessions),
        )
        yield GaugeMetricFamily(
            "nearloop_lanes",
            "Sessions with a shared-memory lane open (their requests bypass the broker).",
            value=sum(1 for s in sessions if s.lane is not None),
        )


def broker_registry(broker: Broker) -> CollectorRegistry:
    """A registry of ``broker``'s metrics and the process metrics, to serve
    (:func:`client.metrics_export.start_metrics`)."""
    registry = new_registry()
    registry.register(BrokerCollector(broker))
    return registry
