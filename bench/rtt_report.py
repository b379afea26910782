"""The ``rtt`` result, and how it is shown: a text table and a JSON document."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.machine import banner
from bench.rtt_config import BASELINES, PEER_INFO, RttConfig, chunk_sizes
from bench.stats import LatencySummary, ratio

REWARM_PER_CHUNK: Final = 20
"""Untimed round trips before each chunk, so that no peer pays for waking after a pause."""


@dataclass(frozen=True, slots=True)
class IdleSpan:
    """CPU spent over a span with no request: by the client process, and by the servers
    (the lane's worker and the broker, heartbeating)."""

    wall_ns: int
    client_ns: int
    servers_ns: int | None

    def per_second_us(self) -> dict[str, float | None]:
        """Microseconds of CPU per second, for the client and the servers."""
        s = self.wall_ns / 1e9
        return {
            "client_us_per_s": self.client_ns / 1e3 / s,
            "servers_us_per_s": None if self.servers_ns is None else self.servers_ns / 1e3 / s,
        }


@dataclass(frozen=True, slots=True)
class IdleCpu:
    """What an idle lane costs: the same idle span with the lane session open, and after
    it was closed."""

    lane_open: IdleSpan
    lane_closed: IdleSpan

    def to_dict(self) -> dict[str, Any]:
        """Both spans' CPU per second."""
        return {
            "lane_open": self.lane_open.per_second_us(),
            "lane_closed": self.lane_closed.per_second_us(),
        }


@dataclass
class CpuUse:
    """CPU time one peer spent over its timed chunks: in this process (its client) and in
    its servers, beside the wall time and the round trips it took."""

    round_trips: int = 0
    wall_ns: int = 0
    client_ns: int = 0
    servers_ns: int | None = 0
    """None where a server's CPU time could not be read (no ``/proc``)."""

    def add(
        self, n: int, wall_ns: int, client_ns: int, servers0: int | None, servers1: int | None
    ) -> None:
        """One chunk of ``n`` round trips: its wall time, this process's CPU time, and the
        servers' CPU time before and after (None: unreadable)."""
        self.round_trips += n
        self.wall_ns += wall_ns
        self.client_ns += client_ns
        if self.servers_ns is None or servers0 is None or servers1 is None:
            self.servers_ns = None
        else:
            self.servers_ns += servers1 - servers0

    @property
    def total_ns(self) -> int | None:
        """Client and servers together; None if the servers' time is unknown."""
        return None if self.servers_ns is None else self.client_ns + self.servers_ns

    def us_per_round_trip(self) -> float | None:
        """CPU µs, client and servers together, per round trip."""
        total = self.total_ns
        return None if total is None or not self.round_trips else total / self.round_trips / 1e3

    def cores(self) -> float | None:
        """CPU time over wall time: how many cores the peer kept busy while it ran."""
        total = self.total_ns
        return None if total is None or not self.wall_ns else total / self.wall_ns

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per round trip in µs, and cores busy."""
        n = self.round_trips or 1
        return {
            "client_us_per_round_trip": self.client_ns / n / 1e3,
            "servers_us_per_round_trip": (
                None if self.servers_ns is None else self.servers_ns / n / 1e3
            ),
            "us_per_round_trip": self.us_per_round_trip(),
            "cores_busy": self.cores(),
        }


@dataclass(frozen=True)
class RttResult:
    """Everything one ``rtt`` run measured, in table order."""

    config: RttConfig
    samples_ns: dict[str, npt.NDArray[np.int64]]
    summaries: dict[str, LatencySummary]
    cpu: dict[str, CpuUse]
    machine: dict[str, Any]
    versions: dict[str, str | None]
    event_loop: str
    """The asyncio loop class the AsyncClient ran on (uvloop when installed)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Peers that were asked for but not run, and why."""
    idle_lane: IdleCpu | None = None
    """What the lane peer's open lane cost while idle (None: the lane peer did not run)."""

    def twins(self) -> dict[str, TwinRatio]:
        """Each peer that ran beside its twin (:attr:`PeerInfo.twin`): the ratios to it."""
        out = {}
        for name in self.summaries:
            twin = PEER_INFO[name].twin
            if twin is not None and twin in self.summaries:
                out[name] = TwinRatio.of(self, name, twin)
        return out

    def vs(self, name: str, baseline: str) -> tuple[float | None, float | None]:
        """``name``'s (p50, p99) divided by ``baseline``'s, or None if it did not run."""
        base = self.summaries.get(baseline)
        s = self.summaries[name]
        if base is None:
            return None, None
        return ratio(s.p50_us, base.p50_us), ratio(s.p99_us, base.p99_us)


@dataclass(frozen=True, slots=True)
class TwinRatio:
    """A peer against its twin, the same path less one feature (CURVE, metrics).

    Whether a difference is more than noise: the run's rounds time both peers close
    together, so each round gives one p50 ratio. If the overall ratio is within the spread
    of the per-round ratios, the rounds themselves disagree by that much.
    """

    twin: str
    p50: float | None
    p99: float | None
    round_p50_min: float
    round_p50_max: float

    @classmethod
    def of(cls, result: RttResult, name: str, twin: str) -> TwinRatio:
        """Ratios of ``name`` to ``twin`` in ``result``, overall and round by round."""
        r50, r99 = result.vs(name, twin)
        sizes = chunk_sizes(result.config.n, result.config.rounds)
        per_round = [
            float(np.median(a) / np.median(b))
            for a, b in zip(
                _chunks(result.samples_ns[name], sizes),
                _chunks(result.samples_ns[twin], sizes),
                strict=True,
            )
        ]
        return cls(twin, r50, r99, min(per_round), max(per_round))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "twin": self.twin,
            "p50_vs_twin": self.p50,
            "p99_vs_twin": self.p99,
            "round_p50_vs_twin_min": self.round_p50_min,
            "round_p50_vs_twin_max": self.round_p50_max,
        }


def _chunks(samples: npt.NDArray[np.int64], sizes: list[int]) -> list[npt.NDArray[np.int64]]:
    return np.split(samples, np.cumsum(sizes)[:-1])


def method_text(config: RttConfig) -> str:
    """How the run was done, in one paragraph."""
    per_chunk = config.n // config.rounds
    return (
        f"{config.payload_bytes} B request and echo, one in flight, over {config.transport}://; "
        f"per peer {config.warmup} untimed warm-up round trips, then {config.n} timed ones "
        f"(time.perf_counter_ns around each call). Interleaved: {config.rounds} rounds; in each "
        f"round every peer runs a chunk of ~{per_chunk} timed round trips after "
        f"{REWARM_PER_CHUNK} untimed ones, and the peer order rotates by one each round, so "
        "drift on a shared machine hits every peer alike. Servers run in their own processes; "
        "all clients run in this one. CPU use: this process's CPU time and the peer's "
        "servers' (Linux schedstat, read while they sleep) over its timed chunks; for "
        "shm-floor that includes waking its server for each chunk (a ZeroMQ round trip)."
    )


def _ratio_text(value: float | None) -> str:
    """Two decimals, but three significant digits under 0.1 and none from 100."""
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}x"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


_SHORT: Final = {"shm-floor": "floor", "proxy": "proxy"}
"""The baselines' names in the table's column heads."""


def ratio_key(stat: str, baseline: str) -> str:
    """The JSON key of a ratio: ``p50_vs_proxy``, ``p99_vs_shm_floor``."""
    return f"{stat}_vs_{baseline.replace('-', '_')}"


def format_table(result: RttResult) -> str:
    """The human-readable report: context lines, the table, and footnotes."""
    cfg, m, v = result.config, result.machine, result.versions
    lines = [
        banner("rtt", m),
        f"pyzmq {v['pyzmq']} (libzmq {v['libzmq']}) · msgpack {v['msgpack']} · "
        f"numpy {v['numpy']} · uvloop {v['uvloop']} · rpcq {v['rpcq']} · "
        f"AsyncClient loop: {result.event_loop}",
        *textwrap.wrap(method_text(cfg), width=100),
        "",
    ]
    w = max(len(name) for name in (*result.summaries, "peer")) + 2
    head = f"{'peer':<{w}}{'hops':>4}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'max µs':>10}"
    for base in BASELINES:
        head += f"{'p50 vs. ' + _SHORT[base]:>15}{'p99 vs. ' + _SHORT[base]:>15}"
    head += f"{'CPU µs/rt':>11}{'cores':>7}"
    lines += [head, "-" * len(head)]
    for name, s in result.summaries.items():
        row = (
            f"{name:<{w}}{PEER_INFO[name].hops:>4}{s.p50_us:>9.1f}{s.p99_us:>9.1f}"
            f"{s.p999_us:>10.1f}{s.max_us:>10.1f}"
        )
        for base in BASELINES:
            r50, r99 = result.vs(name, base)
            row += f"{_ratio_text(r50):>15}{_ratio_text(r99):>15}"
        cpu = result.cpu[name]
        row += f"{_cell(cpu.us_per_round_trip(), '.1f'):>11}{_cell(cpu.cores(), '.2f'):>7}"
        lines.append(row)
    lines += [
        "",
        "hops: process-to-process messages per round trip; each one that sleeps is a "
        "kernel wake-up.",
        "floor: the shm-floor peer. CPU µs/rt: CPU time of the client and its servers per "
        "round trip; cores: that CPU time over the wall time (2.00: both cores busy).",
    ]
    for base in BASELINES:
        if base not in result.summaries:
            lines.append(f"vs. {_SHORT[base]}: n/a, because {base} was not run (see --peers).")
    for name in result.summaries:
        info = PEER_INFO[name]
        lines += [f"{name:<{w}}{info.label}", f"{'':<{w}}payload: {info.payload}"]
    for name, t in result.twins().items():
        lines.append(
            f"{name} vs. {t.twin} (side by side): p50 {_ratio_text(t.p50)}, p99 "
            f"{_ratio_text(t.p99)}; p50 ratio round by round "
            f"{_ratio_text(t.round_p50_min)}..{_ratio_text(t.round_p50_max)}."
        )
    lines += [f"skipped: {name}: {why}" for name, why in result.skipped.items()]
    if result.idle_lane is not None:
        lane_open = result.idle_lane.lane_open.per_second_us()
        lane_closed = result.idle_lane.lane_closed.per_second_us()
        lines.append(
            "idle, µs of CPU per second: with the lane open, client "
            f"{lane_open['client_us_per_s']:.0f}, servers (worker and broker, heartbeating) "
            f"{_cell(lane_open['servers_us_per_s'], '.0f')}; after closing it, client "
            f"{lane_closed['client_us_per_s']:.0f}, servers "
            f"{_cell(lane_closed['servers_us_per_s'], '.0f')}."
        )
    return "\n".join(lines)


def legend(result: RttResult) -> dict[str, str]:
    """Each peer's legend text for the plot: its p50, its ratios to the baselines that ran,
    and the cores it kept busy."""
    out = {}
    for name, s in result.summaries.items():
        parts = [f"p50 {s.p50_us:.3g} µs"]
        for base in BASELINES:
            r50, _ = result.vs(name, base)
            if r50 is not None and base != name:
                parts.append(f"{r50:.3g}x {_SHORT[base]}")
        cores = result.cpu[name].cores()
        if cores is not None:
            parts.append(f"{cores:.1f} cores")
        out[name] = f"{name} ({' · '.join(parts)})"
    return out


def to_json_doc(result: RttResult) -> dict[str, Any]:
    """The JSON document: metadata, method, and each peer's summary, ratios and CPU use."""
    cfg = result.config
    peers: dict[str, Any] = {}
    twins = result.twins()
    for name, s in result.summaries.items():
        info = PEER_INFO[name]
        ratios: dict[str, float | None] = {}
        for base in BASELINES:
            ratios[ratio_key("p50", base)], ratios[ratio_key("p99", base)] = result.vs(name, base)
        twin = twins.get(name)
        peers[name] = {
            "label": info.label,
            "hops": info.hops,
            "payload": info.payload,
            **s.to_dict(),
            **ratios,
            **({} if twin is None else twin.to_dict()),
            "cpu": result.cpu[name].to_dict(),
        }
    return {
        "benchmark": "rtt",
        "date": result.machine["date"],
        "machine": result.machine,
        "versions": result.versions,
        "event_loop": result.event_loop,
        "config": {
            "n": cfg.n,
            "warmup": cfg.warmup,
            "rounds": cfg.rounds,
            "rewarm_per_chunk": REWARM_PER_CHUNK,
            "payload_bytes": cfg.payload_bytes,
            "transport": cfg.transport,
            "peers": list(cfg.peers),
            "seed": cfg.seed,
        },
        "method": method_text(cfg),
        "baselines": list(BASELINES),
        "idle_lane": None if result.idle_lane is None else result.idle_lane.to_dict(),
        "unit": "microseconds",
        "peers": peers,
        "skipped": result.skipped,
    }
