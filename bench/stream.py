"""``python -m bench stream``: the syndrome loop against the offline pipeline, one run.

For each surface-code distance (rounds = distance, circuit-level noise p):

- **offline**: one process samples a block with stim, then decodes it with the same
  decoder's ``decode_batch``, block after block. A block's "reaction time" there is its
  decode time (it is emitted when sampled).
- **streamed, 1 and 2 workers**: ``control_sim qec``'s producer streams the same blocks
  through the broker to ``python -m decoders`` workers, unpaced (the window bounds it).
- **paced sweep**: the streamed run at a block every T µs, for each T given, with 1 and
  with 2 workers. A period is *backlog-free* when nothing is lost and the backlog never
  reaches the window (no push-back: over the whole run the decoders kept pace with the
  producer), and *kept up with* when, besides, p99 reaction time is below the period.
  Each run sends 1000 blocks and lasts at least 1 s (10,000 blocks at 100 µs): a
  decoder pool a few percent too slow fills the window within a second, where 1000
  blocks at a short period could end before it does. The smallest of each is reported
  per worker count.

Throughput is decoded shots per second of wall time, and MB/s of detection events.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.machine import describe_machine, library_versions
from client.arguments import DEFAULT_P, DEFAULT_SEED, write_json
from client.latency import LatencySummary
from control_sim.qec.codes import CodeSpec
from control_sim.qec.run import QecConfig, qec_ok, run_qec
from control_sim.qec.source import SyndromeSampler
from control_sim.stack.local_stack import LocalStack, StackSpec
from decoders.names import DEFAULT_DECODER_SERVICE
from decoders.registry import make_decoder

DEFAULT_DISTANCES: Final = (5, 9)
DEFAULT_PERIODS_US: Final = (2000, 1000, 500, 300, 200, 100)


@dataclass(frozen=True, slots=True)
class StreamBenchConfig:
    """One ``bench stream`` run."""

    distances: tuple[int, ...] = DEFAULT_DISTANCES
    p: float = DEFAULT_P
    decoder: str = "pymatching"
    block_shots: int = 1000
    shots: int = 200_000
    paced_block_shots: int = 100
    paced_blocks: int = 1000
    paced_seconds: float = 1.0
    periods_us: tuple[int, ...] = DEFAULT_PERIODS_US
    workers: tuple[int, ...] = (1, 2)
    seed: int = DEFAULT_SEED
    json_path: Path | None = None
    plot_path: Path | None = None


def offline(spec: CodeSpec, config: StreamBenchConfig) -> dict[str, Any]:
    """Sample then decode, in this process, block after block."""
    sampler = SyndromeSampler(spec, seed=config.seed)
    compiled = make_decoder(config.decoder).compile(sampler.dem)
    compiled.decode_batch(sampler.sample_block(config.block_shots)[0])  # warm
    decode_ns: list[int] = []
    errors = 0
    t0 = time.perf_counter_ns()
    for start in range(0, config.shots, config.block_shots):
        dets, obs = sampler.sample_block(min(config.block_shots, config.shots - start))
        t1 = time.perf_counter_ns()
        pred = compiled.decode_batch(dets)
        decode_ns.append(time.perf_counter_ns() - t1)
        errors += int(np.any(pred != obs, axis=1).sum())
    wall_s = (time.perf_counter_ns() - t0) / 1e9
    return {
        "mode": "offline",
        "workers": 0,
        "shots": config.shots,
        "wall_s": wall_s,
        "shots_per_s": config.shots / wall_s,
        "mb_per_s": config.shots * sampler.detector_bytes / wall_s / 1e6,
        "reaction_us": LatencySummary.of(np.asarray(decode_ns, dtype=np.int64)).brief(),
        "logical_errors": errors,
        "lost": 0,
    }


def streamed(
    spec: CodeSpec, config: StreamBenchConfig, workers: int, *, period_us: int | None
) -> dict[str, Any]:
    """The same blocks through a local broker and ``workers`` decoder workers."""
    shots, block_shots = config.shots, config.block_shots
    if period_us is not None:
        blocks = max(config.paced_blocks, math.ceil(config.paced_seconds * 1e6 / period_us))
        shots, block_shots = blocks * config.paced_block_shots, config.paced_block_shots
    qec = QecConfig(
        spec=spec,
        decoder_service=DEFAULT_DECODER_SERVICE,
        shots=shots,
        block_shots=block_shots,
        seed=config.seed,
        period_us=period_us,
    )
    stack = StackSpec(
        decoder_workers=workers,
        decoder=config.decoder,
        decoder_service=DEFAULT_DECODER_SERVICE,
    )
    with LocalStack(stack) as local:
        s = run_qec(qec, local.endpoint)
    s["mode"] = "streamed" if period_us is None else "paced"
    s["workers"] = workers
    s.pop("errors", None)
    if period_us is not None:
        s["backlog_free"] = bool(qec_ok(s) and s["backlog_max"] < qec.window)
        s["kept_up"] = bool(
            s["backlog_free"]
            and s["reaction_us"] is not None
            and s["reaction_us"]["p99"] < period_us
        )
    return s


def run(config: StreamBenchConfig) -> dict[str, Any]:
    """Every measurement of one run, as the JSON document."""
    per_distance = []
    for d in config.distances:
        spec = CodeSpec("surface", d, d, config.p)
        print(f"d={d}: offline ...", flush=True)
        rows = [offline(spec, config)]
        for w in config.workers:
            print(f"d={d}: streamed, {w} worker(s) ...", flush=True)
            rows.append(streamed(spec, config, w, period_us=None))
        sweep = []
        for w in config.workers:
            for period in config.periods_us:
                print(f"d={d}: paced at {period} us, {w} worker(s) ...", flush=True)
                sweep.append(streamed(spec, config, w, period_us=period))
        base = rows[0]["shots_per_s"]
        for r in rows:
            r["throughput_vs_offline"] = r["shots_per_s"] / base
        per_distance.append(
            {
                "distance": d,
                "rounds": d,
                "throughput": rows,
                "paced": sweep,
                "smallest_period_kept_up_us": smallest_periods(sweep, "kept_up"),
                "smallest_period_backlog_free_us": smallest_periods(sweep, "backlog_free"),
            }
        )
    cfg = asdict(config)
    cfg["json_path"] = cfg["plot_path"] = None
    return {
        "benchmark": "stream",
        "config": cfg,
        "machine": describe_machine(),
        "versions": library_versions(),
        "date": time.strftime("%Y-%m-%d"),
        "results": per_distance,
    }


def smallest_periods(sweep: list[dict[str, Any]], flag: str) -> dict[str, int | None]:
    """Per worker count (keys are strings, as in JSON), the smallest period whose run has
    ``flag`` (``kept_up`` or ``backlog_free``) set, or None if none has."""
    out: dict[str, int | None] = {}
    for s in sweep:
        key = str(s["workers"])
        best = out.setdefault(key, None)
        if s[flag] and (best is None or s["period_us"] < best):
            out[key] = s["period_us"]
    return out


def format_report(doc: dict[str, Any]) -> str:
    """The tables ``bench stream`` prints."""
    out = []
    for res in doc["results"]:
        d = res["distance"]
        out.append(f"\nsurface d={d}, rounds={d}, p={doc['config']['p']}, "
                   f"{doc['config']['block_shots']}-shot blocks")  # fmt: skip
        out.append(
            f"{'mode':<10}{'workers':>8}{'shots/s':>12}{'MB/s':>8}{'vs offline':>11}"
            f"{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}{'lost':>6}"
        )
        for r in res["throughput"]:
            rt = r["reaction_us"]
            out.append(
                f"{r['mode']:<10}{r['workers']:>8}{r['shots_per_s']:>12,.0f}{r['mb_per_s']:>8.2f}"
                f"{r['throughput_vs_offline']:>10.2f}x{rt['p50']:>9.0f}{rt['p99']:>9.0f}"
                f"{rt['p999']:>10.0f}{rt['max']:>9.0f}{r['lost']:>6}"
            )
        for w in doc["config"]["workers"]:
            out.append(f"paced, {doc['config']['paced_block_shots']}-shot blocks, {w} worker(s):")
            out.append(
                f"{'period us':>10}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'late':>6}"
                f"{'backlog':>8}{'slip max':>9}{'lost':>6}  backlog-free  kept up"
            )
            for s in res["paced"]:
                if s["workers"] != w:
                    continue
                rt = s["reaction_us"] or dict.fromkeys(("p50", "p99", "max"), float("nan"))
                out.append(
                    f"{s['period_us']:>10}{rt['p50']:>9.0f}{rt['p99']:>9.0f}{rt['max']:>9.0f}"
                    f"{s['late_blocks']:>6}{s['backlog_max']:>8}{s['slip_us_max']:>9.0f}"
                    f"{s['lost']:>6}  {'yes' if s['backlog_free'] else 'no':<12}  "
                    f"{'yes' if s['kept_up'] else 'no'}"
                )
            free = res["smallest_period_backlog_free_us"][str(w)]
            kept = res["smallest_period_kept_up_us"][str(w)]
            out.append(
                f"smallest period backlog-free: {free} us; kept up with (p99 < period too): "
                f"{kept} us"
            )
    return "\n".join(out)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput against offline, and paced p99 reaction time against the period."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_throughput(ax1, doc)
    plot_paced(ax2, doc)
    fig.suptitle(f"bench stream, {doc['date']}, {doc['machine'].get('cpu_model', '')}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_throughput(ax: Any, doc: dict[str, Any]) -> None:
    """Shots per second per mode, grouped by distance."""
    results = doc["results"]
    labels = [f"{r['mode']} ({r['workers']}w)" if r["workers"] else r["mode"]
              for r in results[0]["throughput"]]  # fmt: skip
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs = [j + i * width for j in range(len(results))]
        ys = [res["throughput"][i]["shots_per_s"] for res in results]
        ax.bar(xs, ys, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))])
    ax.set_xticklabels([f"d={r['distance']}" for r in results])
    ax.set_yscale("log")
    ax.set_ylabel("decoded shots / s (log)")
    ax.set_title("throughput: streamed vs offline")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.3)


def plot_paced(ax: Any, doc: dict[str, Any]) -> None:
    """p99 reaction time against the period; below the diagonal keeps up, and a cross
    marks a period whose window filled (not backlog-free)."""
    pushed_back: list[tuple[int, float]] = []
    for res in doc["results"]:
        for w in doc["config"]["workers"]:
            runs = [s for s in res["paced"] if s["workers"] == w and s["reaction_us"]]
            pts = [(s["period_us"], s["reaction_us"]["p99"]) for s in runs]
            if pts:
                xs, ys = zip(*sorted(pts), strict=True)
                ax.plot(xs, ys, "o-", label=f"d={res['distance']}, {w} worker(s): p99 reaction")
            pushed_back += [
                (s["period_us"], s["reaction_us"]["p99"])
                for s in runs
                if not s.get("backlog_free", True)
            ]
    if pushed_back:
        xs, ys = zip(*pushed_back, strict=True)
        ax.scatter(xs, ys, marker="x", s=80, color="k", zorder=3, label="window filled")
    periods = sorted(doc["config"]["periods_us"])
    ax.plot(periods, periods, "k--", linewidth=1, label="reaction = period")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("period (µs, log)")
    ax.set_ylabel("p99 reaction time (µs, log)")
    ax.set_title("paced: p99 reaction vs period")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def main(config: StreamBenchConfig) -> int:
    """Run, print, and write the JSON and plot."""
    doc = run(config)
    print(format_report(doc))
    if config.json_path is not None:
        write_json(config.json_path, doc)
    if config.plot_path is not None:
        plot(doc, config.plot_path)
    return 0
