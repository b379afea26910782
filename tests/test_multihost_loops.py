"""Both loops across four "hosts": network namespaces joined by a bridge (:mod:`tests.netns`).

The broker runs in one namespace, the QPU worker (``python -m control_sim qpu``) in a
second, two pymatching decoder workers (``python -m decoders``) in a third, and the
drivers (``control_sim vqe`` and a paced ``control_sim qec`` stream) in a fourth. Every
peer talks to the broker over tcp with CURVE keys made by ``nearloop keygen``; each host
has its own ``NEARLOOP_HOST_ID``, so no shared-memory lane crosses a namespace. The test
reads the broker's stats over its ipc endpoint, which is a file, not a network address.

A cut link is a bridge port set down: no FIN, no RST, the packets vanish. Heartbeats are
short (200 ms, liveness 3) so a partition is seen in bounded time; every other bound is
generous, for a busy two-core machine. Needs root and iproute2.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BrokerProc,
    Stack,
    broker_stats,
    run_module,
    spawn,
    stop_process,
    wait_for_workers,
    wait_until,
)
from tests.netns import Host, needs_netns, network

pytestmark = [pytest.mark.timeout(300), needs_netns]

HOSTS = ("broker", "qpu", "decoders", "driver")
HEARTBEAT_MS = 200
"""Broker and workers: a partition is seen after 3 silent heartbeats (600 ms). 100 ms
passed here too; 200 ms leaves a worker starved of CPU on a busy machine some margin."""
DECODER_WORKERS = 2
DRIVER_TIMEOUT_S = 30.0
"""Each driver's bound on one call or block: far above a cut's length."""
RUN_TIMEOUT_S = 200.0
"""Bound on a driver's whole run."""
REREGISTER_TIMEOUT_S = 30.0
"""Bound on workers registering again once their link is back."""
CUT_S = 1.0
"""How long a link stays cut once the broker has expired its workers: five heartbeats,
enough for the workers to give up on the broker too."""
VQE_SEED = 7
QEC = ("--code", "surface", "--distance", "3", "--rounds", "3", "--p", "0.001", "--seed", "7")
QEC_BLOCK_SHOTS = 200
QEC_PERIOD_US = 5000


@dataclass
class Cluster:
    """The broker, its workers and their keys, spread over the four hosts."""

    stack: Stack
    hosts: dict[str, Host]
    keys: Path
    broker: BrokerProc

    @property
    def tcp(self) -> str:
        """The broker's CURVE endpoint, on the hub's bridge address."""
        return self.broker.endpoints[0]

    @property
    def ipc(self) -> str:
        """Its plain ipc endpoint, for this test's stats."""
        return self.broker.endpoints[1]

    def curve(self, name: str) -> list[str]:
        """``--curve`` for the key pair ``name``."""
        secret = next(self.keys.glob(f"*/{name}.key_secret"))
        return ["--curve", str(secret), str(self.keys / "broker" / "broker.key")]

    def start_decoders(self) -> list[subprocess.Popen[str]]:
        return [self.start_decoder() for _ in range(DECODER_WORKERS)]

    def start_decoder(self) -> subprocess.Popen[str]:
        return self.stack.server(
            "-m", "decoders", "--connect", self.tcp, "--decoder", "pymatching",
            "--heartbeat-ms", str(HEARTBEAT_MS), *self.curve("decoder"),
            runner=self.hosts["decoders"].runner(),
        )  # fmt: skip

    def start_qpu(self) -> subprocess.Popen[str]:
        return self.stack.server(
            "-m", "control_sim", "qpu", "--connect", self.tcp,
            "--heartbeat-ms", str(HEARTBEAT_MS), *self.curve("qpu"),
            runner=self.hosts["qpu"].runner(),
        )  # fmt: skip

    def drive(
        self, kind: str, out: Path, *args: str, timeout_s: float = DRIVER_TIMEOUT_S
    ) -> subprocess.Popen[str]:
        """Start ``control_sim KIND`` in the driver's host, writing its JSON to ``out``
        and its stderr to ``out`` with the suffix ``.err``."""
        with out.with_suffix(".err").open("w") as err:
            proc = spawn(
                ["-m", "control_sim", kind, "--connect", self.tcp, *self.curve("driver"),
                 "--timeout-s", str(timeout_s), "--json", str(out), *args],
                self.hosts["driver"].runner(), stderr=err,
            )  # fmt: skip
        self.stack.procs.append(proc)
        return proc

    def vqe(self, out: Path, timeout_s: float = DRIVER_TIMEOUT_S) -> subprocess.Popen[str]:
        return self.drive("vqe", out, "--seed", str(VQE_SEED), timeout_s=timeout_s)

    def qec(
        self, out: Path, blocks: int, timeout_s: float = DRIVER_TIMEOUT_S
    ) -> subprocess.Popen[str]:
        shots = str(blocks * QEC_BLOCK_SHOTS)
        return self.drive(
            "qec", out, *QEC, "--shots", shots, "--block-shots", str(QEC_BLOCK_SHOTS),
            "--period-us", str(QEC_PERIOD_US), timeout_s=timeout_s,
        )  # fmt: skip

    def stats(self) -> dict[str, Any]:
        return broker_stats(self.ipc)

    def served(self, service: str) -> int:
        """Requests of ``service`` the broker has seen answered."""
        return int(self.stats()["requests"].get(service, {}).get("ok", 0))


def keygen(folder: Path, name: str) -> None:
    """One key pair, made as an operator would: ``nearloop keygen``."""
    done = run_module("client", "keygen", str(folder), name, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def cluster(stack: Stack) -> Iterator[Cluster]:
    keys = stack.tmp / "keys"
    for folder, name in [
        ("broker", "broker"), ("clients", "driver"), ("qpu-workers", "qpu"),
        ("decoder-workers", "decoder"),
    ]:  # fmt: skip
        keygen(keys / folder, name)
    with network(*HOSTS) as hosts:
        broker = stack.broker(
            "tcp",
            "--curve-secret", str(keys / "broker" / "broker.key_secret"),
            "--allow-clients", str(keys / "clients"),
            "--allow-workers", f"qpu={keys / 'qpu-workers'}",
            "--allow-workers", f"decode={keys / 'decoder-workers'}",
            "--heartbeat-ms", str(HEARTBEAT_MS),
            binds=[f"tcp://{hosts['broker'].address}:*", stack.endpoint("ipc")],
            runner=hosts["broker"].runner(),
        )  # fmt: skip
        c = Cluster(stack, hosts, keys, broker)
        c.start_qpu()
        c.start_decoders()
        wait_for_workers(c.ipc, "qpu", 1, timeout=REREGISTER_TIMEOUT_S)
        wait_for_workers(c.ipc, "decode", DECODER_WORKERS, timeout=REREGISTER_TIMEOUT_S)
        try:
            yield c
        finally:
            stack.close()  # every process before its namespace goes


def ended(proc: subprocess.Popen[str]) -> int:
    """Wait (bounded) for a driver to exit; its exit status. One that runs past
    :data:`RUN_TIMEOUT_S` hangs: it is stopped and the test fails."""
    try:
        return proc.wait(RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError(f"a driver hung past {RUN_TIMEOUT_S} s: {proc.args!r}") from None


def finish(proc: subprocess.Popen[str], out: Path) -> dict[str, Any]:
    """Wait (bounded) for a driver; its exit status must be 0; its JSON summary."""
    status = ended(proc)
    assert status == 0, f"{proc.args!r} exited {status}: {out.with_suffix('.err').read_text()}"
    summary: dict[str, Any] = json.loads(out.read_text())
    return summary


def assert_vqe_ok(s: dict[str, Any]) -> None:
    assert s["chemically_accurate"] and abs(s["error_mha"]) < 1.6, s["error_mha"]
    assert s["lane"] == "zmq", s["lane_refused"]  # hosts apart: no lane, the broker's tcp


def assert_stream_whole(s: dict[str, Any], blocks: int) -> None:
    assert s["blocks_sent"] == blocks, s
    assert s["lost"] == 0 and s["blocks_failed"] == 0, s
    assert s["blocks_decoded"] == s["blocks_sent"], s
    assert s["lane_sent"] == 0, s  # every block crossed the bridge


def reregistered(c: Cluster, service: str, n: int) -> float:
    """Wait for ``n`` workers of ``service``; the seconds it took."""
    t0 = time.monotonic()
    wait_for_workers(c.ipc, service, n, timeout=REREGISTER_TIMEOUT_S)
    return time.monotonic() - t0


def test_both_loops_end_to_end_over_curve_across_four_hosts(cluster: Cluster) -> None:
    blocks = 400
    vqe_out, qec_out = cluster.stack.tmp / "vqe.json", cluster.stack.tmp / "qec.json"
    vqe, qec = cluster.vqe(vqe_out), cluster.qec(qec_out, blocks)
    assert_vqe_ok(finish(vqe, vqe_out))
    assert_stream_whole(finish(qec, qec_out), blocks)
    stats = cluster.stats()
    assert stats["auth_refused"] == {} or sum(stats["auth_refused"].values()) == 0, stats
    assert stats["workers_expired"] == 0, stats


def under_way(c: Cluster, service: str, served: int) -> None:
    """Wait until the broker has seen ``served`` requests of ``service`` answered."""
    wait_until(lambda: c.served(service) >= served, RUN_TIMEOUT_S, f"{served} {service} replies")


def workers_of(c: Cluster, service: str) -> int:
    return int(c.stats()["services"].get(service, {}).get("workers", 0))


def partition(c: Cluster, host: str, service: str | None) -> None:
    """Cut ``host``'s link; wait (bounded) until the broker has expired every worker of
    ``service`` there (if given); hold the cut :data:`CUT_S`; restore it."""
    c.hosts[host].link(up=False)
    if service is not None:
        wait_until(lambda: workers_of(c, service) == 0, 10, f"the broker to expire {service}")
    time.sleep(CUT_S)  # the partition's length, not a wait for anything
    c.hosts[host].link(up=True)


def test_decoders_link_cut_mid_stream_loses_nothing(cluster: Cluster) -> None:
    blocks = 1200  # 6 s at the pace: the cut falls well inside
    out = cluster.stack.tmp / "qec.json"
    qec = cluster.qec(out, blocks)
    under_way(cluster, "decode", 200)
    partition(cluster, "decoders", "decode")
    took_s = reregistered(cluster, "decode", DECODER_WORKERS)
    s = finish(qec, out)
    assert_stream_whole(s, blocks)
    stats = cluster.stats()
    print(f"decoders re-registered {took_s:.3f} s after the link came back; stream: "
          f"retried {s['retried']}, duplicates dropped {s['duplicates_dropped']}; broker: "
          f"expired {stats['workers_expired']}, redispatched {stats['redispatched']}")  # fmt: skip
    assert stats["workers_expired"] == DECODER_WORKERS, stats
    assert stats["redispatched"] >= 1, stats  # blocks sent to the cut-off workers


def both_under_way(
    c: Cluster, vqe_out: Path, qec_out: Path, blocks: int, timeout_s: float
) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """Start the stream, then the VQE once the stream is under way (the stream outlasts
    it), and return once the VQE's loop is under way too."""
    qec = c.qec(qec_out, blocks, timeout_s=timeout_s)
    under_way(c, "decode", 50)
    vqe = c.vqe(vqe_out, timeout_s=timeout_s)
    under_way(c, "qpu", 30)
    assert qec.poll() is None and vqe.poll() is None, "a driver ended before the cut"
    return vqe, qec


def test_driver_link_cut_briefly_both_loops_complete(cluster: Cluster) -> None:
    vqe_out, qec_out = cluster.stack.tmp / "vqe.json", cluster.stack.tmp / "qec.json"
    blocks = 1200
    vqe, qec = both_under_way(cluster, vqe_out, qec_out, blocks, DRIVER_TIMEOUT_S)
    partition(cluster, "driver", None)
    at_cut = cluster.stats()["requests"]
    v, q = finish(vqe, vqe_out), finish(qec, qec_out)
    assert_vqe_ok(v)
    assert_stream_whole(q, blocks)
    # Both loops had work left at the cut: the cut fell inside both runs.
    assert at_cut["qpu"]["ok"] < v["calls"] + v["warmup_calls"], (at_cut, v["calls"])
    assert at_cut["decode"]["ok"] < blocks, at_cut
    print(f"driver cut {CUT_S} s: vqe {v['calls']} calls, error {v['error_mha']:.3f} mHa; "
          f"stream retried {q['retried']}, duplicates {q['duplicates_dropped']}, "
          f"reaction {q['reaction_us']}")  # fmt: skip
    assert cluster.stats()["workers_expired"] == 0


SHORT_TIMEOUT_S = 1.0


def test_driver_link_cut_past_its_timeouts_fails_cleanly(cluster: Cluster) -> None:
    # The driver's link stays cut until both drivers have exited: each must give up
    # within its bounds, saying why in one line, not hang. VQE: its call times out, and
    # that is the line printed (the session's close on the way out times out too, and is
    # only logged: it used to replace the call's error with "no broker answered"). The
    # stream: its full window finds no room within the bound (WindowFull), which names
    # the blocks in flight; it exits before their own timeouts could re-send them.
    vqe_out, qec_out = cluster.stack.tmp / "vqe.json", cluster.stack.tmp / "qec.json"
    vqe, qec = both_under_way(cluster, vqe_out, qec_out, 1200, SHORT_TIMEOUT_S)
    cluster.hosts["driver"].link(up=False)
    t0 = time.monotonic()
    statuses = ended(vqe), ended(qec)
    gave_up_s = time.monotonic() - t0
    cluster.hosts["driver"].link(up=True)
    v_err, q_err = (out.with_suffix(".err").read_text().splitlines() for out in (vqe_out, qec_out))
    assert statuses == (1, 1), (statuses, v_err, q_err)
    assert v_err[-1].startswith("error: ") and f"within {SHORT_TIMEOUT_S:g} s" in v_err[-1]
    assert "no reply from service" in v_err[-1] and "no broker answered" not in v_err[-1], v_err
    assert q_err[-1].startswith("error: ") and "still in flight after" in q_err[-1], q_err
    print(f"driver cut for good: both exited within {gave_up_s:.2f} s; vqe: {v_err[-1]!r}; "
          f"qec: {q_err[-1]!r}")  # fmt: skip


def test_qpu_link_cut_mid_vqe_the_vqe_completes(cluster: Cluster) -> None:
    # The session pinned to the cut-off worker is lost with it; the VQE's QPU client
    # reopens one on the worker once it is back, registers its circuit again, and goes on.
    out = cluster.stack.tmp / "vqe.json"
    vqe = cluster.vqe(out)
    under_way(cluster, "qpu", 30)
    partition(cluster, "qpu", "qpu")
    took_s = reregistered(cluster, "qpu", 1)
    print(f"qpu worker re-registered {took_s:.3f} s after the link came back")
    v = finish(vqe, out)
    assert_vqe_ok(v)
    stats = cluster.stats()
    assert stats["workers_expired"] == 1, stats
    assert stats["sessions_lost"] == 1 and stats["sessions_opened"] == 2, stats
