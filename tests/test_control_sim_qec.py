"""``python -m control_sim qec`` as a user runs it: its own local stack or ``--connect``,
JSON out, and every way a user can get it wrong answered in one line.

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

from client.wire.limits import MAX_MODEL_BYTES
from control_sim.qec.codes import CodeSpec
from control_sim.qec.source import SyndromeSampler
from tests.conftest import Stack, one_line_error, run_module

FIELDS = {
    "shots", "blocks_sent", "blocks_decoded", "blocks_failed", "duplicates_dropped", "lost",
    "logical_errors", "ler", "reaction_us", "late_blocks", "backlog_max", "slip_us_max",
    "wall_s", "decoder", "decoders", "decoder_service", "workers",
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
    out = tmp_path / "new-folder" / "qec.json"  # --json creates the folder
    args = ["--code", code, "--distance", str(distance), "--rounds", str(rounds), "--p", str(p)]
    args += ["--shots", "6000", "--block-shots", "500", "--workers", "2", "--seed", "21"]
    # Paced, every block is marked late against a 1 us deadline: no reply is that fast.
    args += ["--json", str(out)]
    if period:
        args += ["--period-us", str(period), "--deadline-us", "1"]
    done = run_qec(*args)
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert set(s) >= FIELDS
    assert s["blocks_sent"] == s["blocks_decoded"] == 12 and s["blocks_failed"] == 0
    assert s["lost"] == 0 and s["duplicates_dropped"] == 0
    # The decoder named is the one the workers' replies name.
    assert s["decoder"] == "pymatching" and s["decoders"] == {"pymatching": 12}
    assert s["workers"] == 2
    spec = CodeSpec(code, distance, rounds, p)  # type: ignore[arg-type]
    assert s["logical_errors"] == offline_logical_errors(spec, 21, 6000, 500)
    assert s["logical_errors"] > 0, "noise this strong must give some logical errors"
    assert s["ler"] == pytest.approx(s["logical_errors"] / 6000)
    r = s["reaction_us"]
    assert 0 < r["p50"] <= r["p99"] <= r["p999"] <= r["max"]
    assert 1 <= s["backlog_max"] <= 64
    if period:
        assert s["period_us"] == period and s["deadline_us"] == 1
        assert s["late_blocks"] == s["blocks_sent"]
    else:
        assert s["deadline_us"] is None and s["late_blocks"] == 0


def test_qec_seed_has_a_default_and_the_run_is_reproducible(tmp_path: Path) -> None:
    outs = [tmp_path / f"{i}.json" for i in range(2)]
    args = ["--code", "repetition", "--distance", "3", "--rounds", "2", "--p", "0.05"]
    args += ["--shots", "2000", "--block-shots", "500", "--workers", "1"]
    for out in outs:
        done = run_qec(*args, "--json", str(out))
        assert done.returncode == 0, done.stderr
    first, second = (json.loads(out.read_text()) for out in outs)
    assert first["seed"] == second["seed"] == 2026
    assert first["logical_errors"] == second["logical_errors"] > 0


@pytest.mark.timeout(180)
def test_qec_on_the_aer_backend_prints_a_readable_summary() -> None:
    args = ["--code", "repetition", "--distance", "3", "--rounds", "2", "--p", "0.02"]
    done = run_qec(*args, "--backend", "aer", "--shots", "400", "--block-shots", "100",
                   "--workers", "1", "--seed", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "decoded 4" in done.stdout and "lost 0" in done.stdout
    assert "aer sampler" in done.stdout and "reaction p50" in done.stdout
    assert "1 local decoder workers (pymatching)" in done.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--p", "0.7"], "error: p must be in [0, 0.5), got 0.7"),
        # One bound, one message, whatever the distance below it or even.
        (["--distance", "0"], "the distance must be odd and >= 3, got 0"),
        (["--distance", "1"], "the distance must be odd and >= 3, got 1"),
        (["--distance", "4"], "the distance must be odd and >= 3, got 4"),
        (["--backend", "aer", "--code", "surface"], "the aer backend runs only the repetition"),
        (["--connect", "localhost:5555"], "'localhost:5555' names no transport"),
        (["--connect", "ipc:///tmp/nl-none.sock", "--decoder", "bposd"], "--decoder: only for"),
        (["--connect", "ipc:///tmp/nl-none.sock", "--workers", "3"], "--workers: only for"),
    ],
    ids=["p", "distance-0", "distance-1", "distance-even", "aer-surface", "endpoint",
         "decoder-with-connect", "workers-with-connect"],
)  # fmt: skip
def test_qec_refuses_bad_arguments_in_one_line(args: list[str], says: str) -> None:
    line = one_line_error(run_qec(*args, timeout=80))
    assert says in line and "qec --help" in line


@pytest.mark.timeout(60)
def test_qec_with_no_broker_at_connect_says_so_in_one_line(tmp_path: Path) -> None:
    ep = f"ipc://{tmp_path}/nobody.sock"
    line = one_line_error(run_qec("--connect", ep, "--distance", "3", timeout=50))
    assert f"no broker answered at {ep}" in line and "nearloop broker --bind" in line


@pytest.mark.timeout(60)
def test_qec_with_no_decoder_workers_says_how_to_start_one(stack: Stack) -> None:
    broker = stack.broker("ipc")
    line = one_line_error(run_qec("--connect", broker.endpoint, "--distance", "3", timeout=50))
    assert "no worker for 'decode'" in line and "nearloop decoders --connect" in line


@pytest.mark.timeout(120)
def test_qec_with_connect_reports_the_decoder_the_workers_ran(stack: Stack, tmp_path: Path) -> None:
    broker = stack.broker("ipc")
    ep = broker.endpoint
    stack.server("-m", "decoders", "--connect", ep, "--service", "decode", "--decoder", "bposd")
    out = tmp_path / "qec.json"
    args = ["--connect", ep, "--distance", "3", "--rounds", "2", "--shots", "2000"]
    done = run_qec(*args, "--block-shots", "500", "--json", str(out))
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert s["decoder"] == "bposd" and s["decoders"] == {"bposd": 4}
    assert s["workers"] is None and s["decoder_service"] == "decode"


@pytest.mark.timeout(120)
def test_a_failed_block_fails_the_run(stack: Stack, tmp_path: Path) -> None:
    broker = stack.broker("ipc")
    ep = broker.endpoint
    # The worker lets the 16 warm-up blocks through, then fails every third block.
    stack.server("-m", "tests.peers.failing_decoder", ep, "decode", "--after", "16", "--every", "3")
    out = tmp_path / "qec.json"
    args = ["--connect", ep, "--distance", "3", "--rounds", "2", "--shots", "3000"]
    done = run_qec(*args, "--block-shots", "500", "--json", str(out))
    line = one_line_error(done, status=1)
    assert line == "error: 2 blocks failed and 0 were lost of 6 sent"
    s = json.loads(out.read_text())
    assert (s["blocks_sent"], s["blocks_decoded"], s["blocks_failed"], s["lost"]) == (6, 4, 2, 0)
    assert len(s["errors"]) == 2 and all("failed on purpose" in e for e in s["errors"])


@pytest.mark.timeout(240)
def test_a_model_too_large_for_the_wire_is_one_line(stack: Stack) -> None:
    broker = stack.broker("ipc")
    ep = broker.endpoint
    stack.server("-m", "decoders", "--connect", ep, "--service", "decode", "--decoder", "bposd")
    # d=101 with 5 rounds: a detector error model of about 60 MB, over MAX_MODEL_BYTES.
    done = run_qec("--connect", ep, "--distance", "101", "--shots", "1000", timeout=230)
    line = one_line_error(done)
    assert "model of" in line and f"exceeds {MAX_MODEL_BYTES}" in line
