"""``python -m bench soak``: both loops for a minute, a decoder worker and the broker
killed once each, every process's RSS and descriptors sampled, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.soak_report import kill_intervals, p99_goal, process_goals, windows
from tests.conftest import one_line_error, run_module

SERIES = {"bench", "broker", "decoder-0", "decoder-1", "qpu-0", "decoder-2", "broker-2"}


@pytest.mark.timeout(420)
def test_a_minute_with_both_kills_loses_nothing(tmp_path: Path) -> None:
    out_json = tmp_path / "soak.json"
    done = run_module(
        "bench", "soak", "--minutes", "1", "--window-s", "12", "--sample-s", "1",
        "--kill-margin-s", "3", "--json", str(out_json), timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    doc = json.loads(out_json.read_text())

    # Every process incarnation has its own series, sampled through its life.
    series = {s["name"]: s for s in doc["processes"]}
    assert set(series) == SERIES
    for name, s in series.items():
        assert len(s["t_s"]) == len(s["rss_kib"]) == len(s["fds"]) >= 3, name
        assert min(s["rss_kib"]) > 0 and min(s["fds"]) > 0, name
    kills = {k["what"]: k for k in doc["kills"]}
    assert kills["decoder"]["at_s"] == pytest.approx(24, abs=3)
    assert kills["broker"]["at_s"] == pytest.approx(42, abs=3)
    assert series["decoder-0"]["ended_s"] == pytest.approx(kills["decoder"]["at_s"], abs=1)
    assert series["broker"]["ended_s"] == pytest.approx(kills["broker"]["at_s"], abs=1)
    assert series["decoder-0"]["pid"] == kills["decoder"]["killed_pid"]
    assert series["broker-2"]["pid"] == kills["broker"]["replacement_pid"]
    for k in doc["kills"]:
        assert k["at_s"] < k["started_s"] <= k["ready_s"]
        # Both loops were served again after the replacement came up.
        assert k["requests_resumed_after_ready_s"] is not None
        assert k["reaction_resumed_after_ready_s"] is not None
    assert series["broker-2"]["started_s"] >= kills["broker"]["at_s"]

    # Nothing was lost: every request answered, every block decoded.
    r, b = doc["requests"], doc["blocks"]
    assert r["sent"] >= 600 and r["sent"] == r["answered"] and r["unanswered"] == 0
    assert b["sent"] >= 3000 and b["sent"] == b["decoded"]
    assert b["lost"] == b["failed"] == b["unanswered"] == 0
    assert doc["loop_errors"] == {"requests": None, "blocks": None}
    # Both clients saw the broker go (the stream stored its model again in the new one);
    # what was in flight then was sent again, not lost.
    assert r["restarts"] >= 1 and r["lost_in_flight"] == 0 and r["resent"] >= 0
    assert b["reconnects"] >= 1 and b["models_restored"] >= 1

    # Five 12 s windows, each with both loops' percentiles; the kills are marked.
    rows = doc["windows"]
    assert [w["index"] for w in rows] == [0, 1, 2, 3, 4]
    for w in rows:
        for loop in ("requests", "reaction"):
            s = w[loop]
            assert s["n"] > 0 and 0 < s["p50"] <= s["p99"] <= s["p999"] <= s["max"]
    assert rows[2]["kills_inside"] == [0] and rows[3]["kills_inside"] == [1]
    assert rows[2]["requests_excluding_kills"]["n"] < rows[2]["requests"]["n"]
    assert sum(w["reaction"]["n"] for w in rows) == b["decoded"]

    # The goals are evaluated and their definitions written down, whatever the verdict.
    g = doc["goals"]
    assert {"rss", "fds", "p99"} <= set(g)
    for goal in g.values():
        assert goal["definition"]
    assert {p["name"] for p in g["rss"]["processes"]} == SERIES
    assert {p["name"] for p in g["fds"]["processes"]} == SERIES - {"decoder-0", "broker"}
    assert len(g["p99"]["excluding_kills"]["requests"]["ratios"]) == 5
    assert "goals:" in done.stdout and "kill: broker" in done.stdout
    assert out_json.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _series(
    name: str, started_s: float, rss: list[int], fds: list[int], **kw: Any
) -> dict[str, Any]:
    t = [started_s + i for i in range(len(rss))]
    return {"name": name, "pid": 1, "started_s": started_s, "ended_s": kw.get("ended_s"),
            "t_s": t, "rss_kib": rss, "fds": fds}  # fmt: skip


def test_rss_and_fd_goals_per_incarnation() -> None:
    flat = _series("flat", 0.0, [100, 100, 105, 109, 110], [5, 5, 6, 5, 5])
    grows = _series("grows", 0.0, [100, 100, 100, 111, 100], [5, 5, 5, 5, 7])
    late = _series("late", 3.0, [100, 200], [5, 5])  # no sample after its first window
    killed = _series("killed", 0.0, [100, 100, 100], [5, 5, 9], ended_s=2.0)
    g = process_goals([flat, grows, late, killed], window_s=1.0)
    rss = {r["name"]: r for r in g["rss"]["processes"]}
    assert rss["flat"]["ok"] and rss["flat"]["growth"] == pytest.approx(0.10)
    assert not rss["grows"]["ok"] and rss["grows"]["growth"] == pytest.approx(0.11)
    assert rss["late"]["evaluated"] is False and rss["late"]["ok"] is None
    assert rss["killed"]["ok"]
    assert not g["rss"]["met"]
    fds = {r["name"]: r for r in g["fds"]["processes"]}
    assert set(fds) == {"flat", "grows", "late"}  # a killed process is not judged
    assert fds["flat"]["ok"] and fds["flat"]["max"] == 6
    assert not fds["grows"]["ok"] and not g["fds"]["met"]
    g = process_goals([flat], window_s=1.0)
    assert g["rss"]["met"] and g["fds"]["met"]


def test_windows_and_p99_exclude_the_kill_interval() -> None:
    rng = np.random.default_rng(7)
    sent = np.sort(rng.uniform(0, 30, 3000))
    lat = rng.integers(900, 1100, sent.size).astype(np.int64) * 1000
    spike = (sent >= 15) & (sent < 17)
    lat[spike] = 50_000_000  # a kill's spike, 50 ms
    before = int(np.searchsorted(sent, 14.5))
    lat[before] = 4_000_000_000  # sent before the kill, answered 4 s later: the kill's too
    intervals = kill_intervals([{"at_s": 15.0, "ready_s": 16.0}], margin_s=1.0)
    assert intervals == [(15.0, 17.0)]
    rows = windows({"requests": (sent, lat), "reaction": (sent, lat)}, 30.0, 10.0, intervals)
    assert [w["kills_inside"] for w in rows] == [[], [0], []]
    assert sum(w["requests"]["n"] for w in rows) == sent.size
    assert rows[1]["requests"]["max"] == pytest.approx(4_000_000)
    kept = rows[1]["requests_excluding_kills"]
    assert kept["max"] < 1100
    assert kept["n"] == rows[1]["requests"]["n"] - int(spike.sum()) - 1
    p = p99_goal(rows)
    assert p["met"] and not p["met_all_samples"]
    assert p["all"]["requests"]["worst"] > 40
    assert p["all"]["requests"]["spread"] > 40
    assert p["excluding_kills"]["requests"]["spread"] < 1.2


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--minutes", "0"], "--minutes must be a number > 0"),
        (["--minutes", "1", "--decoder-kill-at", "1.5"], "--decoder-kill-at is a fraction"),
        (["--minutes", "1", "--broker-kill-at", "0.4"], "must differ"),
        (["--minutes", "1"], "--window-s 300 is longer than the run"),
        (["--minutes", "1", "--window-s", "10", "--decoder-workers", "1"], "must be >= 2"),
        (["--minutes", "1", "--window-s", "10", "--sample-s", "20"], "longer than a window"),
        (["--distance", "4"], "odd"),
        (["--minutes", "x"], "invalid float value"),
    ],
)
def test_bad_arguments_are_one_error_line(args: list[str], says: str) -> None:
    line = one_line_error(run_module("bench", "soak", *args, timeout=60))
    assert says in line
