"""Broker settings."""

from __future__ import annotations

from dataclasses import dataclass

from broker.endpoints import check_group_member, resolve_group
from client.wire import (
    DEFAULT_HEARTBEAT_MS,
    DEFAULT_LIVENESS,
    MAX_HEARTBEAT_MS,
    MAX_SESSIONS,
    MIN_HEARTBEAT_MS,
)
from client.wire.spin import DEFAULT_MAX_SPIN_US

MAX_BROKER_SPIN_US = 10_000


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything the broker can be told.

    ``heartbeat_ms`` is the broker's own interval: how often it heartbeats plain
    Majordomo workers and the longest it sleeps. Workers that declare an interval in their
    READY are heartbeated at theirs and expire after ``liveness`` of their intervals;
    plain workers expire after ``liveness`` x 2.5 s, the RFC reference rate.
    """

    endpoints: tuple[str, ...]
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    liveness: int = DEFAULT_LIVENESS
    request_ttl_ms: int = 10_000
    max_ttl_ms: int = 600_000
    """The longest a request's own ``ttl_ms`` may keep it queued."""
    max_queue: int = 10_000
    max_services: int = 1024
    max_redispatch: int = 2
    max_sessions: int = MAX_SESSIONS
    session_idle_ms: int = 600_000
    """A session with nothing in flight is forgotten after this long without a request."""
    spin_us: int = DEFAULT_MAX_SPIN_US
    """The longest the broker polls for its next message, after handling one, before it
    sleeps in the kernel; 0 turns polling off. Below this bound the window adapts: the
    broker polls only while messages come close together, for about as long as the
    recent gaps between them (:class:`client.wire.spin.SpinPolicy`)."""
    sndhwm: int = 100_000
    rcvhwm: int = 100_000
    linger_ms: int = 1000
    curve_secret: str | None = None
    """The broker's secret certificate file (``NAME.key_secret``): with it, every tcp
    endpoint is a CURVE server and peers need a key in an allow-list (:mod:`broker.auth`);
    None: no CURVE (NULL mechanism)."""
    allow_clients: str | None = None
    """A directory of public certificates (``*.key``) admitted as clients."""
    allow_workers: tuple[tuple[str | None, str], ...] = ()
    """``(service, directory)`` pairs of public certificates admitted as workers of that
    service, or of every service where it is None (and as clients too)."""
    insecure: bool = False
    """Bind tcp endpoints that other hosts can reach without CURVE (:mod:`broker.endpoints`)."""
    ipc_group: str | None = None
    """Group (name or gid) given the broker's ipc sockets, mode 0660; None: owner only, 0600."""
    metrics_port: int | None = None
    """Serve Prometheus metrics at ``http://metrics_host:metrics_port/metrics`` (0: any free
    port; None: none), from prometheus-client's thread (:mod:`broker.metrics`)."""
    metrics_host: str = "127.0.0.1"
    """Loopback, as ``client.arguments.DEFAULT_METRICS_HOST`` (not imported: the broker
    loads no client library code)."""

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("the broker needs at least one endpoint to bind")
        if not MIN_HEARTBEAT_MS <= self.heartbeat_ms <= MAX_HEARTBEAT_MS:
            raise ValueError(
                f"heartbeat_ms must be in {MIN_HEARTBEAT_MS}..{MAX_HEARTBEAT_MS}, "
                f"got {self.heartbeat_ms}"
            )
        for name in (
            "liveness", "request_ttl_ms", "max_ttl_ms", "max_queue", "max_services",
            "max_sessions", "session_idle_ms",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.spin_us <= MAX_BROKER_SPIN_US:
            raise ValueError(f"spin_us must be in 0..{MAX_BROKER_SPIN_US}, got {self.spin_us}")
        if self.max_redispatch < 0:
            raise ValueError("max_redispatch must be >= 0")
        has_lists = self.allow_clients is not None or bool(self.allow_workers)
        if self.curve_secret is None and has_lists:
            raise ValueError("allow-lists need CURVE: give the broker's secret key too")
        if self.curve_secret is not None and not has_lists:
            raise ValueError(
                "CURVE needs at least one allow-list of client or worker keys, "
                "or no peer could connect"
            )
        for service, _ in self.allow_workers:
            if service is not None and not service:
                raise ValueError("an allow-list's service name must not be empty")
        if self.ipc_group is not None:
            check_group_member(resolve_group(self.ipc_group))
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port must be in 0..65535, got {self.metrics_port}")
        if not self.metrics_host:
            raise ValueError("metrics_host must name an address")
