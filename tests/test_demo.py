"""``python -m control_sim demo`` end to end, as a new user runs it (smaller QEC run)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from client.lane.support import lane_support_missing
from control_sim.stack.local_stack import LocalStack, StackSpec
from tests.conftest import Stack, one_line_error, run_module

pytestmark = pytest.mark.timeout(120)


def _demo(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "demo.json"
    proc = run_module(
        "control_sim", "demo", "--qec-shots", "10000", "--json", str(out), *extra, timeout=100
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_the_demo_starts_its_stack_runs_both_loops_and_says_so(tmp_path: Path) -> None:
    proc, s = _demo(tmp_path)
    vqe, qec = s["vqe"], s["qec"]
    assert s["local_stack"] and s["stack_start_s"] > 0
    assert vqe["chemically_accurate"] and 0 <= vqe["error_mha"] < 1.6
    assert abs(vqe["exact_energy"] - -1.857275) < 1e-5  # the published H2 value
    assert vqe["loop_us"]["p50"] > 0 and vqe["inproc_loop_us"]["p50"] > 0
    # --lane auto, the default: the QPU worker is co-located, so a lane where lanes work
    assert vqe["lane_mode"] == "auto"
    assert vqe["lane"] == ("shm" if lane_support_missing() is None else "zmq")
    assert qec["blocks_decoded"] == qec["blocks_sent"] == 20 and qec["lost"] == 0
    assert qec["reaction_us"]["p50"] > 0 and qec["ler"] is not None
    for text in ("VQE H2", "chemically accurate", "in-process p50", "LER", "reaction p50"):
        assert text in proc.stdout
    assert "demo OK" in proc.stdout


def test_the_demo_uses_an_existing_broker_with_connect(tmp_path: Path) -> None:
    spec = StackSpec(decoder_workers=1, qpu_workers=1)
    with LocalStack(spec) as stack:
        args = ["--connect", stack.endpoint, "--optimizer", "cobyla", "--lane", "off"]
        proc, s = _demo(tmp_path, *args)
    assert not s["local_stack"] and s["endpoint"] == stack.endpoint
    assert (s["vqe"]["lane"], s["vqe"]["lane_refused"]) == ("zmq", "lane='off'")
    assert "transport through the broker (lane='off')" in proc.stdout
    assert s["vqe"]["optimizer"] == "cobyla" and s["vqe"]["chemically_accurate"]
    assert s["qec"]["lost"] == 0 and s["qec"]["blocks_failed"] == 0
    assert s["qec"]["decoder"] == "pymatching"  # what the workers said, not a label
    assert f"broker at {stack.endpoint}" in proc.stdout


def test_a_failed_block_fails_the_demo(stack: Stack, tmp_path: Path) -> None:
    broker = stack.broker("ipc")
    ep = broker.endpoint
    stack.server("-m", "control_sim", "qpu", "--connect", ep)
    # It lets the 16 warm-up blocks through, then fails every fifth block.
    stack.server("-m", "tests.peers.failing_decoder", ep, "decode", "--after", "16", "--every", "5")
    out = tmp_path / "demo.json"
    args = ["--connect", ep, "--optimizer", "cobyla", "--qec-shots", "10000", "--json", str(out)]
    proc = run_module("control_sim", "demo", *args, timeout=100)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = json.loads(out.read_text())
    assert s["vqe"]["chemically_accurate"]  # the VQE alone would pass
    qec = s["qec"]
    assert (qec["blocks_sent"], qec["blocks_failed"], qec["lost"]) == (20, 4, 0)
    assert "demo FAILED" in proc.stdout and "demo OK" not in proc.stdout


def test_the_demo_with_nothing_at_connect_is_one_line(stack: Stack) -> None:
    broker = stack.broker("ipc")
    line = one_line_error(run_module("control_sim", "demo", "--connect", broker.endpoint))
    assert "no worker for 'decode', 'qpu'" in line
    assert "nearloop decoders --connect" in line and "nearloop qpu --connect" in line
