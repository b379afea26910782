"""What ``bench soak`` reports: counts, latency per window, the goals, the plot.

The goals, as evaluated here (their definitions are written into the JSON, under
``goals``, word for word):

- **RSS.** Per process incarnation (a replaced or restarted process is a new one), the
  *baseline* is its last sample at or before the end of its first window: ``window_s``
  after it started (for the processes there from the start, the end of the run's first
  window). Its *growth* is the largest sample after the baseline divided by the
  baseline, minus 1. Met when no incarnation grows by more than 10 %. An incarnation
  with no sample after its baseline (killed within its first window, or started less
  than a window before the end) is not evaluated, and says so.
- **File descriptors.** Per incarnation alive at the end of the run: its open file
  descriptors at its last sample against its baseline (the same sample as for RSS).
  Met when none has more at the end. Killed incarnations are not judged.
- **p99.** Each window's p99, per loop, divided by the first window's; met when every
  ratio is at most 1.5. Two views, both reported: over every sample, and excluding the
  samples in flight at any moment from each kill until ``kill_margin_s`` after its
  replacement's READY (sent before that interval ends, answered after it begins).
  The verdict the report leads with is the second: the kills are the faults the run
  injects on purpose, and their spike is reported on its own (per kill: the samples
  in its interval, their p99 and max, and how soon each loop was served after the
  replacement's READY).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from bench.soak_config import P99_RATIO_GOAL, RSS_GROWTH_GOAL
from bench.stats import LatencySummary

if TYPE_CHECKING:
    from bench.soak_loops import ParamLoop, StreamLoop

LOOPS: Final = ("requests", "reaction")
"""The two latencies: a qpu request's round trip, and a block's reaction time."""
LOOP_LABELS: Final = {
    "requests": "qpu request round trip",
    "reaction": "stream reaction time",
}
TIMELINE_BUCKETS_PER_WINDOW: Final = 30

RSS_DEFINITION: Final = (
    "Per process incarnation (a replaced or restarted process is a new one): the baseline "
    "is its last sample at or before the end of its first window, window_s after it "
    "started (the run's first window for a process there from the start). Growth is the "
    "largest sample after the baseline divided by the baseline, minus 1. Met when no "
    "incarnation grows by more than 10 %. An incarnation with no sample after its "
    "baseline is not evaluated."
)
FDS_DEFINITION: Final = (
    "Per incarnation alive at the end of the run: open file descriptors at its last "
    "sample against its baseline (the RSS baseline's sample). Met when none has more at "
    "the end. Killed incarnations are not judged."
)
P99_DEFINITION: Final = (
    "Per loop, each window's p99 divided by the first window's; met when every ratio is "
    "at most 1.5. Reported over all samples and excluding the samples in flight at any "
    "moment from each kill until kill_margin_s after its replacement's READY (sent before "
    "that interval ends, answered after it begins); the verdict ('met') is the one "
    "excluding the kills, whose spike is reported per kill. A window is placed by the "
    "time its samples were sent."
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _brief(latency_ns: IntArray) -> dict[str, float] | None:
    if latency_ns.size == 0:
        return None
    return {"n": int(latency_ns.size), **LatencySummary.of(latency_ns).brief()}


def kill_intervals(events: Sequence[dict[str, Any]], margin_s: float) -> list[tuple[float, float]]:
    """The seconds the "excluding kills" view leaves out: from each kill to ``margin_s``
    after its replacement's READY."""
    return [(e["at_s"], e["ready_s"] + margin_s) for e in events]


def in_flight(
    sent_s: FloatArray, latency_ns: IntArray, intervals: Sequence[tuple[float, float]]
) -> npt.NDArray[np.bool_]:
    """Which samples were in flight at some moment of one of ``intervals``: sent before
    it ended, and answered after it began (a block sent just before a kill and answered
    after the restart is the kill's, as much as one sent during it)."""
    done_s = sent_s + latency_ns / 1e9
    hit = np.zeros(sent_s.size, dtype=bool)
    for a, b in intervals:
        hit |= (sent_s < b) & (done_s >= a)
    return hit


def windows(
    samples: dict[str, tuple[FloatArray, IntArray]],
    duration_s: float,
    window_s: float,
    intervals: Sequence[tuple[float, float]],
) -> list[dict[str, Any]]:
    """Per window ``[i * window_s, (i + 1) * window_s)`` (the last one ends with the
    run): each loop's latency summary by the time each sample was sent, over all
    samples and excluding ``intervals``."""
    count = max(1, math.ceil(duration_s / window_s - 1e-9))
    out = []
    for i in range(count):
        a, b = i * window_s, min((i + 1) * window_s, duration_s)
        if i == count - 1:
            b = math.inf  # a block sent at the very end belongs to the last window
        row: dict[str, Any] = {"index": i, "start_s": a, "end_s": min(b, duration_s)}
        for loop, (sent_s, lat_ns) in samples.items():
            inside = (sent_s >= a) & (sent_s < b)
            row[loop] = _brief(lat_ns[inside])
            kept = inside & ~in_flight(sent_s, lat_ns, intervals)
            row[f"{loop}_excluding_kills"] = _brief(lat_ns[kept])
        row["kills_inside"] = [k for k, (ka, _) in enumerate(intervals) if a <= ka < b]
        out.append(row)
    return out


def timeline(
    samples: dict[str, tuple[FloatArray, IntArray]], duration_s: float, bucket_s: float
) -> dict[str, Any]:
    """p50, p99 and max per ``bucket_s`` of sending time, per loop, for the plot."""
    edges = np.arange(0.0, duration_s + bucket_s, bucket_s)
    out: dict[str, Any] = {"bucket_s": bucket_s, "start_s": edges[:-1].tolist()}
    for loop, (sent_s, lat_ns) in samples.items():
        idx = np.digitize(sent_s, edges) - 1
        cols: dict[str, list[float | None]] = {"p50_us": [], "p99_us": [], "max_us": []}
        for k in range(edges.size - 1):
            us = lat_ns[idx == k] / 1000.0
            if us.size == 0:
                for c in cols.values():
                    c.append(None)
                continue
            p50, p99 = np.percentile(us, (50.0, 99.0))
            cols["p50_us"].append(float(p50))
            cols["p99_us"].append(float(p99))
            cols["max_us"].append(float(us.max()))
        out[loop] = cols
    return out


def _baseline_index(t_s: Sequence[float], at_s: float) -> int | None:
    idx = [i for i, t in enumerate(t_s) if t <= at_s + 1e-9]
    return idx[-1] if idx else None


def process_goals(series: Sequence[dict[str, Any]], window_s: float) -> dict[str, Any]:
    """The RSS and file-descriptor goals per incarnation (see the module)."""
    rss_rows, fd_rows = [], []
    for s in series:
        t, rss, fds = s["t_s"], s["rss_kib"], s["fds"]
        base_at = s["started_s"] + window_s
        b = _baseline_index(t, base_at)
        after = None if b is None else b + 1
        row: dict[str, Any] = {"name": s["name"], "pid": s["pid"], "baseline_at_s": base_at}
        if b is None or after is None or after >= len(t):
            row.update(evaluated=False, why="no sample after its first window", ok=None)
            rss_rows.append(row)
        else:
            peak = max(rss[after:])
            growth = peak / rss[b] - 1.0
            row.update(
                evaluated=True,
                baseline_kib=rss[b],
                max_after_kib=peak,
                growth=growth,
                ok=peak <= rss[b] * (1.0 + RSS_GROWTH_GOAL),
            )
            rss_rows.append(row)
        if s["ended_s"] is not None:
            continue  # killed: its descriptors went with it
        frow: dict[str, Any] = {"name": s["name"], "pid": s["pid"]}
        if b is None or not t:
            frow.update(evaluated=False, why="no sample at the end of its first window", ok=None)
        else:
            frow.update(
                evaluated=True,
                baseline=fds[b],
                end=fds[-1],
                max=max(fds[b:]),
                end_at_s=t[-1],
                ok=fds[-1] <= fds[b],
            )
        fd_rows.append(frow)
    rss_judged = [r["ok"] for r in rss_rows if r["evaluated"]]
    fd_judged = [r["ok"] for r in fd_rows if r["evaluated"]]
    return {
        "rss": {
            "definition": RSS_DEFINITION,
            "limit": RSS_GROWTH_GOAL,
            "met": bool(rss_judged) and all(rss_judged),
            "processes": rss_rows,
        },
        "fds": {
            "definition": FDS_DEFINITION,
            "met": bool(fd_judged) and all(fd_judged),
            "processes": fd_rows,
        },
    }


def p99_goal(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each window's p99 over the first window's, per loop and view."""
    out: dict[str, Any] = {"definition": P99_DEFINITION, "limit": P99_RATIO_GOAL}
    verdicts: dict[str, bool] = {}
    for view in ("all", "excluding_kills"):
        per_loop: dict[str, Any] = {}
        met = True
        for loop in LOOPS:
            key = loop if view == "all" else f"{loop}_excluding_kills"
            first = rows[0][key]
            ratios: list[float | None] = []
            for r in rows:
                if first is None or r[key] is None or first["p99"] <= 0:
                    ratios.append(None)
                    continue
                ratios.append(r[key]["p99"] / first["p99"])
            judged = [x for x in ratios if x is not None]
            ok = bool(judged) and len(judged) == len(ratios) and max(judged) <= P99_RATIO_GOAL
            p99s = [r[key]["p99"] for r in rows if r[key] is not None]
            per_loop[loop] = {
                "ratios": ratios,
                "worst": max(judged) if judged else None,
                "ok": ok,
                # Not a goal: the slowest window's p99 over the fastest's, which a slow
                # first window (start-up) cannot hide.
                "spread": max(p99s) / min(p99s) if p99s and min(p99s) > 0 else None,
            }
            met &= ok
        out[view] = per_loop
        verdicts[view] = met
    out["met_all_samples"] = verdicts["all"]
    out["met"] = verdicts["excluding_kills"]
    return out


def _resumed_s(sent_s: FloatArray, lat_ns: IntArray, ready_s: float) -> float | None:
    """From ``ready_s`` to the first answer that came after it."""
    done = sent_s + lat_ns / 1e9
    later = done[done >= ready_s]
    return float(later.min() - ready_s) if later.size else None


def kill_spikes(
    events: Sequence[dict[str, Any]],
    samples: dict[str, tuple[FloatArray, IntArray]],
    failed: dict[str, tuple[FloatArray, IntArray]],
    margin_s: float,
) -> list[dict[str, Any]]:
    """Per kill: each loop's samples (and failures) in flight during its interval, and
    how soon after the replacement's READY the loop was answered again."""
    out = []
    for e, (a, b) in zip(events, kill_intervals(events, margin_s), strict=True):
        row = {**e, "excluded_from_s": a, "excluded_to_s": b}
        for loop, (sent_s, lat_ns) in samples.items():
            row[loop] = _brief(lat_ns[in_flight(sent_s, lat_ns, [(a, b)])])
            f_sent, f_ns = failed[loop]
            row[f"{loop}_failed"] = int(in_flight(f_sent, f_ns, [(a, b)]).sum())
            row[f"{loop}_resumed_after_ready_s"] = _resumed_s(sent_s, lat_ns, e["ready_s"])
        out.append(row)
    return out


def build_report(
    *,
    config: dict[str, Any],
    duration_s: float,
    end_s: float,
    param: ParamLoop,
    stream: StreamLoop,
    events: list[dict[str, Any]],
    series: list[dict[str, Any]],
    machine: dict[str, Any],
    versions: dict[str, str | None],
) -> dict[str, Any]:
    """The JSON document of one run."""
    window_s, margin_s = config["window_s"], config["kill_margin_s"]
    samples = {"requests": param.samples.arrays(), "reaction": stream.samples.arrays()}
    failed = {"requests": param.samples.failures(), "reaction": stream.samples.failures()}
    intervals = kill_intervals(events, margin_s)
    rows = windows(samples, duration_s, window_s, intervals)
    answered = param.samples.answered
    blocks: dict[str, Any] = dict(stream.counts())
    requests = {
        "sent": param.sent,
        "answered": answered,
        "failed": sum(param.samples.errors.values()),
        "unanswered": param.sent - answered,
        "errors": dict(param.samples.errors),
        "first_errors": param.samples.first_errors,
        **param.link_counts(),
        "latency_us": _brief(samples["requests"][1]),
    }
    blocks.update(
        unanswered=blocks["sent"] - blocks["decoded"],
        slip_max_ms=stream.slip_max_ms,
        errors=dict(stream.samples.errors),
        first_errors=stream.samples.first_errors,
        reaction_us=_brief(samples["reaction"][1]),
    )
    goals = process_goals(series, window_s)
    goals["p99"] = p99_goal(rows)
    return {
        "benchmark": "soak",
        "config": config,
        "machine": machine,
        "versions": versions,
        "date": machine["date"][:10],
        "duration_s": duration_s,
        "end_s": end_s,
        "requests": requests,
        "blocks": blocks,
        "loop_errors": {"requests": param.error, "blocks": stream.error},
        "stream_drained": stream.drained,
        "kills": kill_spikes(events, samples, failed, margin_s),
        "windows": rows,
        "timeline": timeline(samples, duration_s, max(window_s / TIMELINE_BUCKETS_PER_WINDOW, 0.2)),
        "processes": series,
        "goals": goals,
    }


def unanswered(doc: dict[str, Any]) -> bool:
    """True if a request or a block went unanswered, or a loop ended with an error."""
    errors = [e for e in doc["loop_errors"].values() if e]
    return bool(
        doc["requests"]["unanswered"]
        or doc["blocks"]["unanswered"]
        or errors
        or not doc["stream_drained"]
    )


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return f"{'-':>8}{'-':>8}{'-':>9}{'-':>9}{'-':>7}"
    s = summary
    return f"{s['p50']:>8.0f}{s['p99']:>8.0f}{s['p999']:>9.0f}{s['max']:>9.0f}{s['n']:>7}"


def _yes(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def format_report(doc: dict[str, Any]) -> str:
    """The text ``bench soak`` prints."""
    r, b = doc["requests"], doc["blocks"]
    out = [
        f"\nsoak: {doc['duration_s']:.0f} s, windows of {doc['config']['window_s']:g} s",
        f"requests  sent {r['sent']}  answered {r['answered']}  failed {r['failed']} "
        f"{r['errors'] or ''}  unanswered {r['unanswered']}  re-sent {r['resent']} "
        f"(broker restarts seen {r['restarts']})",
        f"blocks    sent {b['sent']}  decoded {b['decoded']}  failed {b['failed']}  lost "
        f"{b['lost']}  re-sent {b['resent']} (broker gone) {b['retried']} (timed out or "
        f"worker lost)  duplicates dropped {b['duplicates_dropped']}  "
        f"late {b['late']}  backlog max {b['backlog_max']}  unanswered {b['unanswered']}",
        f"          the clock: {b['late_ticks']} ticks released late (the window was full), "
        f"slip max {b['slip_max_ms']:.0f} ms (a block's reaction time counts from its "
        "release)",
    ]
    for name, err in doc["loop_errors"].items():
        if err:
            out.append(f"  the {name} loop ended early: {err}")
    out += [f"  error    {e}" for e in r["first_errors"] + b["first_errors"]]
    for k in doc["kills"]:
        rq, rb = k["requests_resumed_after_ready_s"], k["reaction_resumed_after_ready_s"]
        out.append(
            f"kill: {k['killed']} at {k['at_s']:.1f} s; {k['replacement']} READY at "
            f"{k['ready_s']:.1f} s ({k['ready_s'] - k['at_s']:.2f} s later); answered again "
            f"{'-' if rq is None else f'{rq:.3f}'} s (requests), "
            f"{'-' if rb is None else f'{rb:.3f}'} s (blocks) after READY"
        )
        for loop in LOOPS:
            out.append(
                f"   {LOOP_LABELS[loop]:<24} in flight in [{k['excluded_from_s']:.1f}, "
                f"{k['excluded_to_s']:.1f}] s: p50/p99/p99.9/max us, n "
                f"{_cell(k[loop])}  failed {k[f'{loop}_failed']}"
            )
    out.append("latency per window (us): p50, p99, p99.9, max, n; * = a kill in the window")
    head = f"{'p50':>8}{'p99':>8}{'p99.9':>9}{'max':>9}{'n':>7}"
    out.append(f"{'window':<16}{'requests':^41}  {'reaction':^41}")
    out.append(f"{'':<16}{head}  {head}")
    for w in doc["windows"]:
        mark = "*" if w["kills_inside"] else " "
        span = f"{w['start_s']:.0f}-{w['end_s']:.0f} s{mark}"
        out.append(f"{span:<16}{_cell(w['requests'])}  {_cell(w['reaction'])}")
        if w["kills_inside"]:
            out.append(
                f"{'  w/o kills':<16}{_cell(w['requests_excluding_kills'])}  "
                f"{_cell(w['reaction_excluding_kills'])}"
            )
    g = doc["goals"]
    out.append("goals:")
    for row in g["rss"]["processes"]:
        if row["evaluated"]:
            out.append(
                f"  RSS  {row['name']:<10} {row['baseline_kib'] / 1024:7.1f} MiB -> max "
                f"{row['max_after_kib'] / 1024:7.1f} MiB ({row['growth']:+.1%})"
                f"  {_yes(row['ok'])}"
            )
        else:
            out.append(f"  RSS  {row['name']:<10} not evaluated: {row['why']}")
    out.append(
        f"  RSS growth <= {RSS_GROWTH_GOAL:.0%} after the first window: {_yes(g['rss']['met'])}"
    )
    for row in g["fds"]["processes"]:
        if row["evaluated"]:
            out.append(
                f"  fds  {row['name']:<10} {row['baseline']} after warm-up -> "
                f"{row['end']} at the end (max {row['max']})  {_yes(row['ok'])}"
            )
    out.append(f"  no file descriptor leaked: {_yes(g['fds']['met'])}")
    p = g["p99"]
    for view, label in (("excluding_kills", "excluding kills"), ("all", "all samples")):
        for loop in LOOPS:
            v = p[view][loop]
            ratios = " ".join("-" if x is None else f"{x:.2f}" for x in v["ratios"])
            spread = "-" if v["spread"] is None else f"{v['spread']:.2f}"
            out.append(
                f"  p99/first window, {LOOP_LABELS[loop]}, {label}: {ratios}  "
                f"{_yes(v['ok'])} (slowest/fastest window {spread})"
            )
    out.append(
        f"  each window's p99 within {P99_RATIO_GOAL:g}x of the first: "
        f"{_yes(p['met'])} excluding kills, {_yes(p['met_all_samples'])} over all samples"
    )
    return "\n".join(out)


def _kill_lines(ax: Any, doc: dict[str, Any]) -> None:
    for k in doc["kills"]:
        ax.axvline(k["at_s"], color="red", linewidth=0.8, linestyle="--")
        ax.annotate(
            f"kill {k['what']}",
            (k["at_s"], 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color="red",
            rotation=90,
            va="top",
            ha="right",
        )


def plot_memory(ax: Any, doc: dict[str, Any], *, field: str = "rss_kib") -> None:
    """RSS (MiB) or open file descriptors (``field="fds"``) of every process incarnation
    over time, with the kills marked."""
    for s in doc["processes"]:
        ys = np.asarray(s[field], dtype=np.float64)
        if field == "rss_kib":
            ys = ys / 1024.0
        ax.plot(s["t_s"], ys, label=f"{s['name']} ({s['pid']})", linewidth=1.2)
    _kill_lines(ax, doc)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("RSS (MiB)" if field == "rss_kib" else "open file descriptors")
    ax.set_title("resident memory" if field == "rss_kib" else "open file descriptors")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)


def plot_timeline(ax: Any, doc: dict[str, Any]) -> None:
    """Each loop's p50 and p99 per bucket of sending time (log scale), kills marked."""
    tl = doc["timeline"]
    xs = np.asarray(tl["start_s"]) + tl["bucket_s"] / 2
    for loop in LOOPS:
        for q, style in (("p50_us", "-"), ("p99_us", ":")):
            ys = np.asarray([np.nan if v is None else v for v in tl[loop][q]], dtype=np.float64)
            ax.plot(xs, ys / 1000.0, style, label=f"{LOOP_LABELS[loop]} {q[:3]}", linewidth=1.2)
    _kill_lines(ax, doc)
    ax.set_yscale("log")
    ax.set_xlabel("time sent (s)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title(f"latency per {tl['bucket_s']:g} s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)


def plot_windows(ax: Any, doc: dict[str, Any]) -> None:
    """Each window's p99 over the first window's, per loop, both views, with the goal."""
    idx = [w["index"] for w in doc["windows"]]
    p = doc["goals"]["p99"]
    for view, style in (("excluding_kills", "o-"), ("all", "x--")):
        for loop in LOOPS:
            ys = [np.nan if v is None else v for v in p[view][loop]["ratios"]]
            label = f"{LOOP_LABELS[loop]} ({view.replace('_', ' ')})"
            ax.plot(idx, ys, style, label=label)
    ax.axhline(P99_RATIO_GOAL, color="k", linestyle=":", linewidth=1, label="goal")
    ax.set_xlabel("window")
    ax.set_ylabel("p99 / first window's p99")
    ax.set_title(f"p99 per {doc['config']['window_s']:g} s window")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6)


def plot(doc: dict[str, Any], path: Any) -> None:
    """RSS, file descriptors, latency over time and p99 per window, in one PNG (the
    Agg canvas; no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 9), layout="constrained")
    FigureCanvasAgg(fig)
    (a1, a2), (a3, a4) = fig.subplots(2, 2)
    plot_memory(a1, doc)
    plot_memory(a2, doc, field="fds")
    plot_timeline(a3, doc)
    plot_windows(a4, doc)
    m = doc["machine"]
    fig.suptitle(
        f"bench soak, {doc['duration_s']:.0f} s, {doc['date']}, {m.get('cpu_model', '')}",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
