"""``python -m bench rtt``: a small real run of every peer, its JSON and plot, and teardown."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

import client
from bench import rtt_clients
from bench.rtt import rotated
from bench.rtt_clients import ShmFloorClient
from bench.rtt_config import (
    BASELINES,
    DEFAULT_PEERS,
    PEER_INFO,
    PEERS,
    RttConfig,
    chunk_sizes,
    parse_peers,
    with_extras,
)
from bench.rtt_floor import NAME_PREFIX
from bench.stats import LatencySummary
from control_sim.stack.processes import ServerGroup
from tests.conftest import LANES_MISSING, ROOT, run_module


@pytest.fixture
def stack_servers() -> Iterator[ServerGroup]:
    with ServerGroup() as servers:
        yield servers


def _expected_peers() -> set[str]:
    """Every peer, but those whose library is missing here (they are skipped, and said so)."""
    missing = set() if importlib.util.find_spec("rpcq") else {"rpcq"}
    if LANES_MISSING is not None:
        missing.add("lane")
    return set(DEFAULT_PEERS) - missing


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
    assert doc["baselines"] == ["shm-floor", "proxy"]
    for name, p in doc["peers"].items():
        assert p["n"] == 300, name
        assert 0 < p["min_us"] <= p["p50_us"] <= p["p99_us"] <= p["p999_us"] <= p["max_us"], name
        for base, key in (("proxy", "proxy"), ("shm-floor", "shm_floor")):
            b = doc["peers"][base]
            assert p[f"p50_vs_{key}"] == pytest.approx(p["p50_us"] / b["p50_us"]), name
            assert p[f"p99_vs_{key}"] == pytest.approx(p["p99_us"] / b["p99_us"]), name
        _assert_cpu_use(name, p["cpu"])
        assert name in proc.stdout
    assert doc["peers"]["proxy"]["p50_vs_proxy"] == pytest.approx(1.0)
    assert doc["peers"]["shm-floor"]["p50_vs_shm_floor"] == pytest.approx(1.0)
    cfg = doc["config"]
    assert (cfg["n"], cfg["warmup"], cfg["payload_bytes"], cfg["transport"]) == (
        300,
        100,
        512,
        "ipc",
    )
    assert doc["machine"]["cpu_count"] >= 1 and doc["machine"]["cpu_model"]
    assert {"pyzmq", "libzmq", "msgpack", "numpy", "uvloop", "rpcq"} <= set(doc["versions"])
    assert "p50 vs. proxy" in proc.stdout and "p50 vs. floor" in proc.stdout
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _assert_cpu_use(name: str, cpu: dict[str, float | None]) -> None:
    """CPU figures are there, finite and plausible: never more cores than the machine has."""
    for key in ("client_us_per_round_trip", "servers_us_per_round_trip", "us_per_round_trip"):
        value = cpu[key]
        assert value is not None and math.isfinite(value) and value >= 0, (name, key, cpu)
    cores = cpu["cores_busy"]
    assert cores is not None and 0 < cores <= (os.cpu_count() or 1) * 1.05, (name, cpu)


def _shm_floor_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(f"{NAME_PREFIX}*")}


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="lists /dev/shm")
@pytest.mark.timeout(120)
def test_the_floors_run_and_leave_no_shared_memory_behind(tmp_path: Path) -> None:
    before = _shm_floor_segments()
    out_json = tmp_path / "rtt.json"
    proc = run_module(
        "bench", "rtt", "--peers", "inproc,shm-floor", "--n", "200", "--warmup", "20",
        "--rounds", "2", "--json", str(out_json), timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "leaked" not in proc.stderr  # no resource tracker cleaning up after us
    doc = json.loads(out_json.read_text())
    for name in ("inproc", "shm-floor"):
        p = doc["peers"][name]
        assert p["n"] == 200
        assert 0 < p["min_us"] <= p["p50_us"] <= p["max_us"] and math.isfinite(p["max_us"])
        assert p["p50_vs_proxy"] is None  # proxy did not run: no ratio, and the table says so
        _assert_cpu_use(name, p["cpu"])
    assert "vs. proxy: n/a" in proc.stdout
    # The floor polls on both sides: its server spends CPU on every round trip too (how
    # many cores that keeps busy depends on what else the machine runs).
    floor_cpu = doc["peers"]["shm-floor"]["cpu"]
    assert floor_cpu["servers_us_per_round_trip"] > 0 and floor_cpu["client_us_per_round_trip"] > 0
    assert _shm_floor_segments() == before


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="lists /dev/shm")
def test_a_mailbox_round_trips_with_a_server_process_and_is_unlinked_at_once(
    stack_servers: ServerGroup, tmp_path: Path
) -> None:
    before = _shm_floor_segments()
    ep = f"ipc://{tmp_path}/floor.sock"
    stack_servers.start("shm echo", ["-m", "bench.rtt_servers", "shm-echo", "--bind", ep])
    stack_servers.wait_ready()
    ctx: zmq.Context[Any] = zmq.Context()
    payload = bytes(range(256)) * 2
    try:
        peer = ShmFloorClient("shm-floor", ctx, ep, payload)
        try:
            assert _shm_floor_segments() == before  # attached on both sides, name gone
            for _ in range(3):  # a batch, the server back asleep, and again
                times = client.run(peer.round_trips(50))
                assert len(times) == 50 and all(t > 0 for t in times)
                client.run(peer.pause())
        finally:
            client.run(peer.aclose())
    finally:
        ctx.destroy(linger=0)
    assert _shm_floor_segments() == before


def test_every_peer_names_a_client_class_and_a_known_stack() -> None:
    """Adding a peer is one PeerInfo entry and one PeerClient class."""
    known_stacks = {
        None, "shm-floor", "direct", "proxy", "nearloop", "rpcq",
        "direct-curve", "nearloop-curve", "nearloop-curve-local", "nearloop-metrics",
    }  # fmt: skip
    for name, info in PEER_INFO.items():
        assert info.name == name and info.hops >= 0 and info.label and info.payload
        cls = getattr(rtt_clients, info.client)
        assert isinstance(cls, type) and issubclass(cls, rtt_clients.PeerClient), name
        assert info.stack in known_stacks, name
        assert info.twin is None or (info.twin in PEERS and info.extra is not None), name
    assert tuple(PEER_INFO) == PEERS and set(BASELINES) <= set(DEFAULT_PEERS)


@pytest.mark.timeout(240)
def test_curve_and_metrics_peers_run_beside_their_twins(tmp_path: Path) -> None:
    """``--curve`` and ``--metrics`` add the CURVE and /metrics paths, each timed in the
    same run as the path without it, and the report states the ratio to that twin."""
    out_json = tmp_path / "rtt.json"
    proc = run_module(
        "bench", "rtt", "--transport", "tcp", "--curve", "--metrics", "--peers", "proxy",
        "--n", "300", "--warmup", "50", "--rounds", "3", "--json", str(out_json), timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out_json.read_text())
    twins = {
        "direct-curve": "direct",
        "nearloop-curve": "nearloop",
        "nearloop-curve-local": "nearloop",
        "nearloop-metrics": "nearloop",
    }
    assert set(doc["peers"]) == {"proxy", *twins, *twins.values()}
    for name, twin in twins.items():
        p, t = doc["peers"][name], doc["peers"][twin]
        assert p["n"] == 300 and p["twin"] == twin
        assert p["p50_vs_twin"] == pytest.approx(p["p50_us"] / t["p50_us"])
        assert p["p99_vs_twin"] == pytest.approx(p["p99_us"] / t["p99_us"])
        assert 0 < p["round_p50_vs_twin_min"] <= p["round_p50_vs_twin_max"]
        assert f"{name} vs. {twin} (side by side)" in proc.stdout
        _assert_cpu_use(name, p["cpu"])
    assert "twin" not in doc["peers"]["nearloop"]


def test_curve_peers_need_tcp() -> None:
    with pytest.raises(ValueError, match="needs --transport tcp"):
        RttConfig(peers=("nearloop", "nearloop-curve"), transport="ipc")
    assert with_extras(("proxy",), ("metrics",)) == ("proxy", "nearloop", "nearloop-metrics")
    done = run_module("bench", "rtt", "--curve", timeout=60)
    assert done.returncode == 2 and "needs --transport tcp" in done.stderr


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
    before = _shm_floor_segments()
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
    assert _shm_floor_segments() == before


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


@pytest.mark.timeout(60)
def test_the_plain_mdp_worker_stays_registered_while_unused(
    stack_servers: ServerGroup, tmp_path: Path
) -> None:
    """The broker heartbeats an idle worker; the worker must heartbeat back on its own
    clock, or the broker drops it after liveness x 2.5 s (here 2.5 s) and broker-mdp
    fails in a long run."""
    ep = f"ipc://{tmp_path}/b.sock"
    stack_servers.start("broker", ["-m", "broker", "--bind", ep, "--liveness", "1"])
    stack_servers.start(
        "mdp worker", ["-m", "bench.rtt_servers", "mdp-echo-worker", "--connect", ep]
    )
    stack_servers.wait_ready()
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        peer = rtt_clients.MdpClient("broker-mdp", ctx, ep, b"ping")
        assert len(client.run(peer.round_trips(1))) == 1
        time.sleep(4.0)  # idle past the broker's 2.5 s expiry
        assert len(client.run(peer.round_trips(3))) == 3
        client.run(peer.aclose())
    finally:
        ctx.destroy(linger=0)
