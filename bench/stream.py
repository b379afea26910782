"""``python -m bench stream``: the syndrome loop against the offline pipeline, one run.

For each surface-code distance (rounds = distance, circuit-level noise p):

- **offline**: one process samples a block with stim, then decodes it with the same
  decoder's ``decode_batch``, block after block. A block's "reaction time" there is its
  decode time (it is emitted when sampled).
- **streamed, 1 and 2 workers**: ``control_sim qec``'s producer streams the same blocks
  to ``python -m decoders`` workers, unpaced (the window bounds it), over each transport:
  ``lane`` (one shared-memory lane per worker, ``lane="require"``) and ``broker``
  (``lane="off"``, every block through the broker).
- **paced sweep**: the streamed run at a block every T µs, for each T given, with 1 and
  with 2 workers, over each transport. A period is *backlog-free* when nothing is lost
  and the backlog never reaches the window (no push-back: over the whole run the
  decoders kept pace with the producer), and *kept up with* when, besides, p99
  reaction time is below the period. Each run sends 1000 blocks and lasts at least
  1 s (10,000 blocks at 100 µs): a decoder pool a few percent too slow fills the window
  within a second, where 1000 blocks at a short period could end before it does. The
  smallest of each is reported per transport and worker count.

Throughput is decoded shots per second of wall time, and MB/s of detection events.

CPU is reported beside latency (:mod:`bench.cpu`): the producer's, the broker's and the
workers', each as a share of one core over the timed part of the run (from the clock's
start, after warm-up and sampling, to the end of the drain). Polling buys latency with
CPU, and on two cores that CPU is the decoders'. Each paced period also has the ratios
of the lane's p50 and p99 reaction time, and its total CPU, to the broker's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from bench.cpu import processes_cpu_ns, wait_asleep
from bench.errors import BenchError
from bench.machine import describe_machine, library_versions
from client.arguments import DEFAULT_P, DEFAULT_SEED, write_json
from client.lane.support import lane_support_missing
from client.latency import LatencySummary
from client.wire.lanes import LaneMode
from control_sim.qec.codes import CodeSpec
from control_sim.qec.run import QecConfig, qec_ok, run_qec
from control_sim.qec.source import SyndromeSampler
from control_sim.stack.local_stack import LocalStack, StackSpec
from control_sim.stack.processes import ServerGroup
from decoders.names import DEFAULT_DECODER_SERVICE
from decoders.registry import make_decoder

DEFAULT_DISTANCES: Final = (5, 9)
DEFAULT_PERIODS_US: Final = (2000, 1000, 500, 200, 100)
TRANSPORTS: Final = ("lane", "broker")
"""``lane``: a lane to each worker (the run fails without one); ``broker``: none."""
_LANE_MODE: Final[dict[str, LaneMode]] = {"lane": "require", "broker": "off"}


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
    transports: tuple[str, ...] = TRANSPORTS
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

    def __post_init__(self) -> None:
        bad = [t for t in self.transports if t not in TRANSPORTS]
        if bad or not self.transports:
            raise ValueError(f"transports are {', '.join(TRANSPORTS)}; got {self.transports}")


def streamed(
    spec: CodeSpec,
    config: StreamBenchConfig,
    workers: int,
    *,
    period_us: int | None,
    transport: str,
) -> dict[str, Any]:
    """The same blocks through a local broker to ``workers`` decoder workers, over
    ``transport`` (``lane`` or ``broker``)."""
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
        lane=_LANE_MODE[transport],
    )
    stack = StackSpec(
        decoder_workers=workers,
        decoder=config.decoder,
        decoder_service=DEFAULT_DECODER_SERVICE,
    )
    with LocalStack(stack) as local:
        meter = CpuMeter(local.servers, workers)
        s = run_qec(qec, local.endpoint, on_start=meter.start)
        s["cpu"] = meter.stop()
    s["mode"] = "streamed" if period_us is None else "paced"
    s["workers"] = workers
    s["transport"] = transport
    s.pop("errors", None)
    if period_us is not None:
        s["backlog_free"] = bool(qec_ok(s) and s["backlog_max"] < qec.window)
        s["kept_up"] = bool(
            s["backlog_free"]
            and s["reaction_us"] is not None
            and s["reaction_us"]["p99"] < period_us
        )
    return s


class CpuMeter:
    """The CPU the producer (this process), the broker and the decoder workers spend
    between :meth:`start` and :meth:`stop`, as percent of one core over that wall time.
    Servers are read asleep (:func:`bench.cpu.wait_asleep`), so a polling thread's
    figure is current; a server's share is None where it cannot be read."""

    def __init__(self, servers: ServerGroup, workers: int) -> None:
        self.broker = (servers.process("broker").pid,)
        self.workers = tuple(servers.process(f"decoder-{i}").pid for i in range(workers))
        self._t0 = self._own0 = 0
        self._broker0: int | None = None
        self._workers0: int | None = None

    def start(self) -> None:
        """Read the counters as the timed part starts."""
        wait_asleep((*self.broker, *self.workers))
        self._broker0 = processes_cpu_ns(self.broker)
        self._workers0 = processes_cpu_ns(self.workers)
        self._own0 = time.process_time_ns()
        self._t0 = time.perf_counter_ns()

    def stop(self) -> dict[str, float | None]:
        """The shares since :meth:`start`, in percent of one core."""
        wall_ns = time.perf_counter_ns() - self._t0
        own_ns = time.process_time_ns() - self._own0
        wait_asleep((*self.broker, *self.workers))
        broker1, workers1 = processes_cpu_ns(self.broker), processes_cpu_ns(self.workers)

        def pct(ns: int | None) -> float | None:
            return None if ns is None or wall_ns <= 0 else 100.0 * ns / wall_ns

        broker = None if broker1 is None or self._broker0 is None else broker1 - self._broker0
        workers = None if workers1 is None or self._workers0 is None else workers1 - self._workers0
        parts = [own_ns, broker, workers]
        total = None if None in parts else sum(p for p in parts if p is not None)
        return {
            "producer_pct": pct(own_ns),
            "broker_pct": pct(broker),
            "workers_pct": pct(workers),
            "total_pct": pct(total),
        }


def lane_vs_broker(sweep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (workers, period) run over both transports: the lane's p50 and p99
    reaction time and total CPU, each divided by the broker's."""
    by_key = {(s["workers"], s["period_us"], s["transport"]): s for s in sweep}
    out = []
    for (w, period, transport), lane in by_key.items():
        broker = by_key.get((w, period, "broker"))
        if transport != "lane" or broker is None:
            continue
        row: dict[str, Any] = {"workers": w, "period_us": period}
        for q in ("p50", "p99"):
            a, b = lane["reaction_us"], broker["reaction_us"]
            row[q] = a[q] / b[q] if a and b and b[q] > 0 else None
        a_cpu, b_cpu = lane["cpu"]["total_pct"], broker["cpu"]["total_pct"]
        row["cpu"] = a_cpu / b_cpu if a_cpu is not None and b_cpu else None
        out.append(row)
    return out


def run(config: StreamBenchConfig) -> dict[str, Any]:
    """Every measurement of one run, as the JSON document. Without lanes here, the lane
    transport is skipped, and the document says why."""
    skipped: dict[str, str] = {}
    if "lane" in config.transports and (missing := lane_support_missing()) is not None:
        skipped["lane"] = f"no lane here: {missing}"
        print(f"skipping the lane transport: {missing}", flush=True)
        rest = tuple(t for t in config.transports if t != "lane")
        if not rest:
            raise BenchError(f"no transport left to run: {skipped['lane']}")
        config = replace(config, transports=rest)
    per_distance = []
    for d in config.distances:
        spec = CodeSpec("surface", d, d, config.p)
        print(f"d={d}: offline ...", flush=True)
        rows = [offline(spec, config)]
        for t in config.transports:
            for w in config.workers:
                print(f"d={d}: streamed over {t}, {w} worker(s) ...", flush=True)
                rows.append(streamed(spec, config, w, period_us=None, transport=t))
        sweep = []
        for t in config.transports:
            for w in config.workers:
                for period in config.periods_us:
                    print(f"d={d}: paced at {period} us over {t}, {w} worker(s) ...", flush=True)
                    sweep.append(streamed(spec, config, w, period_us=period, transport=t))
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
                "lane_vs_broker": lane_vs_broker(sweep),
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
        "skipped": skipped,
    }


def smallest_periods(sweep: list[dict[str, Any]], flag: str) -> dict[str, int | None]:
    """Per transport and worker count (keys ``"lane/1"``, strings as in JSON), the
    smallest period whose run has ``flag`` (``kept_up`` or ``backlog_free``) set, or None
    if none has."""
    out: dict[str, int | None] = {}
    for s in sweep:
        key = f"{s['transport']}/{s['workers']}"
        best = out.setdefault(key, None)
        if s[flag] and (best is None or s["period_us"] < best):
            out[key] = s["period_us"]
    return out


def _pct(v: float | None) -> str:
    return "   n/a" if v is None else f"{v:>6.0f}"


def _ratio(v: float | None) -> str:
    return "    n/a" if v is None else f"{v:>6.2f}x"


def format_report(doc: dict[str, Any]) -> str:
    """The tables ``bench stream`` prints."""
    out = []
    cfg = doc["config"]
    for res in doc["results"]:
        d = res["distance"]
        out.append(f"\nsurface d={d}, rounds={d}, p={cfg['p']}, {cfg['block_shots']}-shot blocks")
        out.append(
            f"{'mode':<10}{'over':>7}{'workers':>8}{'shots/s':>12}{'MB/s':>8}{'vs offline':>11}"
            f"{'p50 us':>9}{'p99 us':>9}{'p99.9 us':>10}{'max us':>9}{'lost':>6}{'cpu %':>7}"
        )
        for r in res["throughput"]:
            rt = r["reaction_us"]
            cpu = r.get("cpu", {}).get("total_pct")
            out.append(
                f"{r['mode']:<10}{r.get('transport') or '-':>7}{r['workers']:>8}"
                f"{r['shots_per_s']:>12,.0f}{r['mb_per_s']:>8.2f}"
                f"{r['throughput_vs_offline']:>10.2f}x{rt['p50']:>9.0f}{rt['p99']:>9.0f}"
                f"{rt['p999']:>10.0f}{rt['max']:>9.0f}{r['lost']:>6} {_pct(cpu)}"
            )
        for t in cfg["transports"]:
            for w in cfg["workers"]:
                out.append(
                    f"paced over {t}, {cfg['paced_block_shots']}-shot blocks, {w} worker(s) "
                    "(cpu: % of one core: producer, broker, workers, total):"
                )
                out.append(
                    f"{'period us':>10}{'p50 us':>9}{'p99 us':>9}{'max us':>9}{'late':>6}"
                    f"{'backlog':>8}{'slip max':>9}{'lost':>6}{'prod':>7}{'broker':>7}"
                    f"{'workers':>8}{'total':>7}  backlog-free  kept up"
                )
                for s in res["paced"]:
                    if s["workers"] != w or s["transport"] != t:
                        continue
                    rt = s["reaction_us"] or dict.fromkeys(("p50", "p99", "max"), float("nan"))
                    c = s["cpu"]
                    out.append(
                        f"{s['period_us']:>10}{rt['p50']:>9.0f}{rt['p99']:>9.0f}{rt['max']:>9.0f}"
                        f"{s['late_blocks']:>6}{s['backlog_max']:>8}{s['slip_us_max']:>9.0f}"
                        f"{s['lost']:>6} {_pct(c['producer_pct'])} {_pct(c['broker_pct'])}  "
                        f"{_pct(c['workers_pct'])} {_pct(c['total_pct'])}  "
                        f"{'yes' if s['backlog_free'] else 'no':<12}  "
                        f"{'yes' if s['kept_up'] else 'no'}"
                    )
                key = f"{t}/{w}"
                free = res["smallest_period_backlog_free_us"].get(key)
                kept = res["smallest_period_kept_up_us"].get(key)
                out.append(
                    f"smallest period backlog-free: {free} us; kept up with (p99 < period "
                    f"too): {kept} us"
                )
        if res["lane_vs_broker"]:
            out.append("lane vs broker (ratios of lane to broker; below 1: the lane is lower):")
            out.append(f"{'workers':>8}{'period us':>10}{'p50':>9}{'p99':>9}{'cpu':>9}")
            for r in res["lane_vs_broker"]:
                out.append(
                    f"{r['workers']:>8}{r['period_us']:>10} {_ratio(r['p50'])} "
                    f"{_ratio(r['p99'])} {_ratio(r['cpu'])}"
                )
    return "\n".join(out)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Throughput against offline; paced p99 reaction time, and total CPU, against the
    period, per transport."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.5))
    plot_throughput(ax1, doc)
    plot_paced(ax2, doc)
    plot_cpu(ax3, doc)
    fig.suptitle(f"bench stream, {doc['date']}, {doc['machine'].get('cpu_model', '')}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _label(r: dict[str, Any]) -> str:
    if not r["workers"]:
        return str(r["mode"])
    return f"{r['mode']} {r.get('transport', '')} ({r['workers']}w)"


def plot_throughput(ax: Any, doc: dict[str, Any]) -> None:
    """Shots per second per mode, grouped by distance."""
    results = doc["results"]
    labels = [_label(r) for r in results[0]["throughput"]]
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
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", which="both", alpha=0.3)


_STYLE: Final = {"lane": "o-", "broker": "s--"}


def _paced_runs(doc: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(label, runs sorted by period) for each distance, transport and worker count."""
    for res in doc["results"]:
        for t in doc["config"]["transports"]:
            for w in doc["config"]["workers"]:
                runs = sorted(
                    (s for s in res["paced"] if s["workers"] == w and s["transport"] == t),
                    key=lambda s: s["period_us"],
                )
                if runs:
                    yield f"d={res['distance']}, {t}, {w}w", runs


def plot_paced(ax: Any, doc: dict[str, Any]) -> None:
    """p99 reaction time against the period; below the diagonal keeps up, and a cross
    marks a period whose window filled (not backlog-free)."""
    pushed_back: list[tuple[int, float]] = []
    for label, runs in _paced_runs(doc):
        runs = [s for s in runs if s["reaction_us"]]
        if not runs:
            continue
        style = _STYLE.get(runs[0]["transport"], "o-")
        ax.plot([s["period_us"] for s in runs], [s["reaction_us"]["p99"] for s in runs],
                style, label=label)  # fmt: skip
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
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def plot_cpu(ax: Any, doc: dict[str, Any]) -> None:
    """Total CPU (producer, broker and workers) against the period."""
    for label, runs in _paced_runs(doc):
        pts = [(s["period_us"], s["cpu"]["total_pct"]) for s in runs]
        pts = [(x, y) for x, y in pts if y is not None]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, _STYLE.get(runs[0]["transport"], "o-"), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("period (µs, log)")
    ax.set_ylabel("CPU, % of one core (all processes)")
    ax.set_title("paced: CPU vs period")
    ax.legend(fontsize=7)
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
