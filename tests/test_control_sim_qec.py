"""``python -m control_sim qec`` as a user runs it: its own local stack, JSON out.

The LER is checked against an independent offline estimate on the same seeded samples:
stim and pymatching are deterministic, so the logical error count must be equal.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pymatching
import pytest

from control_sim.qec.codes import CodeSpec
from control_sim.qec.source import SyndromeSampler
from tests.conftest import run_module

FIELDS = {
    "shots", "blocks_sent", "blocks_decoded", "duplicates_dropped", "lost", "logical_errors",
    "ler", "reaction_us", "late_blocks", "backlog_max", "slip_us_max", "wall_s",
}  # fmt: skip


def run_qec(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return run_module("control_sim", "qec", *args, timeout=timeout)


def offline_logical_errors(spec: CodeSpec, seed: int, shots: int, block_shots: int) -> int:
    sampler = SyndromeSampler(spec, seed=seed)
    sampler.sample_block(1)  # the warm-up block the run samples first
    m = pymatching.Matching.from_detector_error_model(sampler.dem)
    errors = 0
    for start in range(0, shots, block_shots):
        dets, obs = sampler.sample_block(min(block_shots, shots - start))
        pred = m.decode_batch(dets, bit_packed_shots=True, bit_packed_predictions=True)
        errors += int(np.any(pred != obs, axis=1).sum())
    return errors


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("code", "distance", "rounds", "p", "period"),
    [("surface", 3, 4, 0.008, None), ("repetition", 5, 3, 0.03, 2000)],
)
def test_qec_json_matches_an_offline_estimate(
    tmp_path: Path, code: str, distance: int, rounds: int, p: float, period: int | None
) -> None:
    out = tmp_path / "qec.json"
    args = ["--code", code, "--distance", str(distance), "--rounds", str(rounds), "--p", str(p)]
    args += ["--shots", "6000", "--block-shots", "500", "--workers", "2", "--seed", "21"]
    args += ["--json", str(out)] + (["--period-us", str(period)] if period else [])
    done = run_qec(*args)
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert set(s) >= FIELDS
    assert s["blocks_sent"] == s["blocks_decoded"] == 12
    assert s["lost"] == 0 and s["duplicates_dropped"] == 0
    spec = CodeSpec(code, distance, rounds, p)  # type: ignore[arg-type]
    assert s["logical_errors"] == offline_logical_errors(spec, 21, 6000, 500)
    assert s["logical_errors"] > 0, "noise this strong must give some logical errors"
    assert s["ler"] == pytest.approx(s["logical_errors"] / 6000)
    r = s["reaction_us"]
    assert 0 < r["p50"] <= r["p99"] <= r["p999"] <= r["max"]
    assert 1 <= s["backlog_max"] <= 64
    if period:
        assert s["deadline_us"] == period and s["late_blocks"] <= s["blocks_sent"]


@pytest.mark.timeout(180)
def test_qec_on_the_aer_backend_prints_a_readable_summary() -> None:
    args = ["--code", "repetition", "--distance", "3", "--rounds", "2", "--p", "0.02"]
    done = run_qec(*args, "--backend", "aer", "--shots", "400", "--block-shots", "100",
                   "--workers", "1", "--seed", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "decoded 4" in done.stdout and "lost 0" in done.stdout
    assert "aer sampler" in done.stdout and "reaction p50" in done.stdout


@pytest.mark.timeout(60)
def test_qec_refuses_bad_arguments_clearly() -> None:
    done = run_qec("--code", "surface", "--distance", "3", "--p", "0.7", "--seed", "1")
    assert done.returncode == 2 and "p" in done.stderr
    done = run_qec("--distance", "0", "--seed", "1")
    assert done.returncode == 2 and "must be >= 1" in done.stderr
