"""The ``rtt`` result, and how it is shown: a text table and a JSON document."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.machine import banner
from bench.rtt_config import BASELINE, RttConfig
from bench.rtt_peers import PEER_INFO
from bench.stats import LatencySummary, ratio

REWARM_PER_CHUNK: Final = 20
"""Untimed round trips before each chunk, so that no peer pays for waking after a pause."""


@dataclass(frozen=True)
class RttResult:
    """Everything one ``rtt`` run measured, in table order."""

    config: RttConfig
    samples_ns: dict[str, npt.NDArray[np.int64]]
    summaries: dict[str, LatencySummary]
    machine: dict[str, Any]
    versions: dict[str, str | None]
    event_loop: str
    """The asyncio loop class the AsyncClient ran on (uvloop when installed)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Peers that were asked for but not run, and why."""

    def vs_baseline(self, name: str) -> tuple[float | None, float | None]:
        """``name``'s (p50, p99) divided by the proxy's, or None if the proxy did not run."""
        base = self.summaries.get(BASELINE)
        s = self.summaries[name]
        if base is None:
            return None, None
        return ratio(s.p50_us, base.p50_us), ratio(s.p99_us, base.p99_us)


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
        "all clients run in this one."
    )


def _ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


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
    head = (
        f"{'peer':<16}{'hops':>4}{'p50 µs':>10}{'p99 µs':>10}{'p99.9 µs':>10}{'max µs':>10}"
        f"{'p50 vs. proxy':>15}{'p99 vs. proxy':>15}"
    )
    lines += [head, "-" * len(head)]
    for name, s in result.summaries.items():
        r50, r99 = result.vs_baseline(name)
        lines.append(
            f"{name:<16}{PEER_INFO[name].hops:>4}{s.p50_us:>10.1f}{s.p99_us:>10.1f}"
            f"{s.p999_us:>10.1f}{s.max_us:>10.1f}{_ratio_text(r50):>15}{_ratio_text(r99):>15}"
        )
    lines += ["", "hops: process-to-process messages per round trip; each is a kernel wake-up."]
    if BASELINE not in result.summaries:
        lines.append(f"vs. proxy: n/a, because the {BASELINE} peer was not run (see --peers).")
    for name in result.summaries:
        info = PEER_INFO[name]
        lines += [f"{name:<16}{info.label}", f"{'':<16}payload: {info.payload}"]
    lines += [f"skipped: {name}: {why}" for name, why in result.skipped.items()]
    return "\n".join(lines)


def to_json_doc(result: RttResult) -> dict[str, Any]:
    """The JSON document: metadata, method, and each peer's summary and ratios."""
    cfg = result.config
    peers: dict[str, Any] = {}
    for name, s in result.summaries.items():
        info = PEER_INFO[name]
        r50, r99 = result.vs_baseline(name)
        peers[name] = {
            "label": info.label,
            "hops": info.hops,
            "payload": info.payload,
            **s.to_dict(),
            "p50_vs_proxy": r50,
            "p99_vs_proxy": r99,
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
        "baseline": BASELINE,
        "unit": "microseconds",
        "peers": peers,
        "skipped": result.skipped,
    }
