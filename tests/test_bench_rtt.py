"""``python -m bench rtt``: a small real run of every peer, its JSON and plot, and teardown."""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from bench.rtt import chunk_sizes, rotated
from bench.rtt_config import PEERS, RttConfig, parse_peers
from bench.stats import LatencySummary
from tests.conftest import ROOT, run_module


def _expected_peers() -> set[str]:
    return set(PEERS) if importlib.util.find_spec("rpcq") else set(PEERS) - {"rpcq"}


@pytest.mark.timeout(180)
def test_rtt_smoke_writes_table_json_and_plot(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "out" / "rtt.json", tmp_path / "plots" / "rtt.png"
    proc = run_module(
        "bench", "rtt", "--n", "300", "--warmup", "100",
        "--json", str(out_json), "--plot", str(out_png), timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    doc = json.loads(out_json.read_text())
    assert set(doc["peers"]) == _expected_peers()
    for name, p in doc["peers"].items():
        assert p["n"] == 300, name
        assert 0 < p["min_us"] <= p["p50_us"] <= p["p99_us"] <= p["p999_us"] <= p["max_us"], name
        assert p["p50_vs_proxy"] > 0 and p["p99_vs_proxy"] > 0, name
        assert p["p50_vs_proxy"] == pytest.approx(p["p50_us"] / doc["peers"]["proxy"]["p50_us"])
        assert name in proc.stdout
    assert doc["peers"]["proxy"]["p50_vs_proxy"] == pytest.approx(1.0)
    cfg = doc["config"]
    assert (cfg["n"], cfg["warmup"], cfg["payload_bytes"], cfg["transport"]) == (
        300,
        100,
        512,
        "ipc",
    )
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["cpu_model"]
    assert {"pyzmq", "libzmq", "msgpack", "numpy", "uvloop", "rpcq"} <= set(doc["versions"])
    assert "p50 vs. proxy" in proc.stdout
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _wait_for_stderr(proc: subprocess.Popen[str], text: str, timeout: float) -> None:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if sel.select(left):
                line = proc.stderr.readline()
                assert line, f"bench exited ({proc.wait(10)}) before printing {text!r}"
                if text in line:
                    return
    raise AssertionError(f"no {text!r} from the bench within {timeout} s")


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass  # exited while we looked
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds servers through /proc")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_rtt_interrupted_stops_every_server(sig: signal.Signals) -> None:
    with tempfile.TemporaryDirectory(prefix="nlbt-") as tmp:  # short: ipc paths are limited
        env = {**os.environ, "TMPDIR": tmp, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "bench", "rtt", "--n", "1000000", "--warmup", "10"]
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            _wait_for_stderr(proc, "round 1/", timeout=60)
            assert len(_pids_mentioning(tmp)) >= 6  # every server is up
            proc.send_signal(sig)
            assert proc.wait(30) == 130
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            assert proc.stderr is not None
            proc.stderr.close()
        assert _pids_mentioning(tmp) == []


def test_chunks_and_rotation_are_fair() -> None:
    assert chunk_sizes(20_003, 10) == [2001, 2001, 2001] + [2000] * 7
    assert sum(chunk_sizes(300, 7)) == 300
    peers = ("a", "b", "c")
    firsts = [rotated(peers, r)[0] for r in range(3)]
    assert firsts == ["a", "b", "c"]


def test_config_rejects_bad_settings() -> None:
    assert parse_peers("rpcq, proxy") == ("proxy", "rpcq")
    with pytest.raises(ValueError, match="unknown peer"):
        parse_peers("proxy,zmtp")
    with pytest.raises(ValueError, match="rounds"):
        RttConfig(n=5, rounds=10)
    with pytest.raises(ValueError, match="transport"):
        RttConfig(transport="udp")  # type: ignore[arg-type]


def test_summary_uses_numpy_percentiles() -> None:
    rng = np.random.default_rng(7)
    samples = rng.integers(50_000, 5_000_000, size=10_000, dtype=np.int64)
    s = LatencySummary.of(samples)
    assert s.p50_us == pytest.approx(np.percentile(samples, 50) / 1000)
    assert s.p999_us == pytest.approx(np.percentile(samples, 99.9) / 1000)
    assert s.min_us <= s.p50_us <= s.p99_us <= s.p999_us <= s.max_us
    assert s.n == 10_000


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys\nfrom bench.cli import build_parser\nbuild_parser()\n"
        "print(sorted({'numpy', 'zmq', 'matplotlib', 'client.sync_client'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
