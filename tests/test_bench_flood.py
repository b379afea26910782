"""``python -m bench flood``: a good client timed while bad keys flood a CURVE broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_module


@pytest.mark.timeout(240)
def test_flood_refuses_every_bad_key_and_keeps_serving_the_good_client(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "flood.json", tmp_path / "flood.png"
    proc = run_module(
        "bench", "flood", "--handshakes", "40", "--parallel", "10", "--n", "200", "--rate", "200",
        "--json", str(out_json), "--plot", str(out_png), timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out_json.read_text())
    flood = doc["flood"]
    assert doc["config"]["rate"] == 200
    assert flood["wall_s"] >= 39 / 200  # paced: the 40th handshake starts after 39 gaps
    # Every bad key was refused, none accepted, and the broker counted each refusal (a
    # handshake that libzmq retried before the socket closed may count twice).
    assert flood["refused_seen_by_flooder"] == 40
    assert flood["refused_counted_by_broker"] >= 40
    phases = doc["phases"]
    assert phases["before"]["n"] == phases["after"]["n"] == 200
    assert phases["during"]["n"] >= 1  # the good client got replies while the flood ran
    for name, p in phases.items():
        assert 0 < p["min_us"] <= p["p50_us"] <= p["p99_us"] <= p["max_us"], name
    assert phases["before"]["p50_vs_before"] == pytest.approx(1.0)
    assert "the broker counted" in proc.stdout
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flood_rejects_bad_settings() -> None:
    done = run_module("bench", "flood", "--handshakes", "0", timeout=60)
    assert done.returncode == 2 and "handshakes must be >= 1" in done.stderr
    done = run_module("bench", "flood", "--rate", "-1", timeout=60)
    assert done.returncode == 2 and "rate must be >= 0" in done.stderr
