"""The workers' and producers' ``/metrics``: a real decoder worker, QPU worker and QEC
producer with ``--metrics-port 0``, scraped over HTTP and parsed with prometheus-client's
own parser; the counts must match what the test sent."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from client import Client, RemoteError, Stream
from client.metrics_export import METRICS_LINE, new_registry, serve_metrics
from control_sim.qec.codes import CodeSpec
from control_sim.qec.source import SyndromeSampler
from control_sim.qpu.client import QpuClient
from control_sim.qpu.errors import BadParameters
from control_sim.stack.processes import START_TIMEOUT_S, wait_for_line
from tests.conftest import Stack, one_line_error, run_module, spawn, wait_for_workers

pytestmark = pytest.mark.timeout(120)

ONE_QUBIT = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'


def scrape(url: str) -> list[Sample]:
    """Every sample ``url`` serves, parsed by prometheus-client."""
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``."""
    found = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def start_with_metrics(stack: Stack, *args: str) -> str:
    """Start ``python ARGS --metrics-port 0``; returns the URL its METRICS line names
    (printed before its READY line, which it waits for too)."""
    proc = spawn([*args, "--metrics-port", "0"])
    stack.procs.append(proc)
    line = wait_for_line(proc, METRICS_LINE, START_TIMEOUT_S, name=args[1])
    wait_for_line(proc, "READY", START_TIMEOUT_S, name=args[1])
    return line.split()[1]


@pytest.fixture
def sampler() -> SyndromeSampler:
    return SyndromeSampler(CodeSpec("repetition", 3, 3, 0.01), seed=7)


def test_decoder_worker_and_stream_metrics(stack: Stack, sampler: SyndromeSampler) -> None:
    ep = stack.broker("ipc").endpoint
    url = start_with_metrics(stack, "-m", "decoders", "--connect", ep, "--decoder", "pymatching")
    wait_for_workers(ep, "decode", 1)
    blocks = [sampler.sample_block(n)[0] for n in (10, 20, 30, 40, 50)]
    registry = new_registry()
    server = serve_metrics(registry, host="127.0.0.1", port=0)
    try:
        with Client(ep, timeout=20) as c:
            # One block in flight at a time: every block is one decode call of its own.
            stream = Stream(c, "decode", sampler.dem, window=1, lane="off")
            stream.register_metrics(registry)
            with stream:
                for b in blocks:
                    stream.send(b, timeout=20)
                results = stream.drain(20)
            with pytest.raises(RemoteError):
                c.request("decode", {"not": "a block"})
        assert [r.ok for r in results] == [True] * 5
        worker = scrape(url)
        producer = scrape(server.url)
    finally:
        server.close()
    pm = {"decoder": "pymatching"}
    assert value(worker, "nearloop_decode_seconds_count", **pm) == 5
    assert value(worker, "nearloop_decode_seconds_sum", **pm) > 0
    assert value(worker, "nearloop_decode_batch_size_count", **pm) == 5
    assert value(worker, "nearloop_decode_batch_size_sum", **pm) == 150
    # Buckets are cumulative: the 10- and 20-shot calls are at or under 20, all under 50.
    assert value(worker, "nearloop_decode_batch_size_bucket", le="20.0", **pm) == 2
    assert value(worker, "nearloop_decode_batch_size_bucket", le="50.0", **pm) == 5
    assert value(worker, "nearloop_decode_blocks_total", **pm) == 6
    assert value(worker, "nearloop_decode_errors_total", **pm) == 1
    assert value(worker, "process_cpu_seconds_total") > 0  # the default process metrics
    svc = {"service": "decode"}
    assert value(producer, "nearloop_stream_reaction_seconds_count", **svc) == 5
    reaction_s = sum(r.reaction_ns for r in results) / 1e9
    assert value(producer, "nearloop_stream_reaction_seconds_sum", **svc) == pytest.approx(
        reaction_s
    )
    assert value(producer, "nearloop_stream_backlog", **svc) == 0


def test_qpu_worker_metrics(stack: Stack) -> None:
    ep = stack.broker("ipc").endpoint
    url = start_with_metrics(stack, "-m", "control_sim", "qpu", "--connect", ep)
    wait_for_workers(ep, "qpu", 1)
    with Client(ep, timeout=30) as c:
        qpu = QpuClient(c)
        info = qpu.register_qasm3(ONE_QUBIT, [[("Z", 1.0)]])
        for theta in (0.1, 0.2, 0.3):
            qpu.estimate(info.circuit, np.array([theta]))
        for _ in range(2):
            qpu.sample(info.circuit, np.array([0.5]), shots=16, seed=1)
        with pytest.raises(BadParameters):
            qpu.estimate(info.circuit, np.zeros(3))
        with pytest.raises(RemoteError):
            c.request("qpu", {"op": "no such op"})
    samples = scrape(url)
    counts = {
        op: value(samples, "nearloop_qpu_eval_seconds_count", op=op)
        for op in ("register", "describe", "estimate", "sample", "run_batch")
    }
    assert counts == {"register": 1, "describe": 0, "estimate": 4, "sample": 2, "run_batch": 0}
    errors = {
        op: value(samples, "nearloop_qpu_errors_total", op=op)
        for op in ("register", "estimate", "sample", "invalid")
    }
    assert errors == {"register": 0, "estimate": 1, "sample": 0, "invalid": 1}


def _scrapes_until_exit(proc: subprocess.Popen[str], url: str) -> Iterator[list[Sample]]:
    """Scrape ``url`` until ``proc`` exits: a connection refused or reset ends the
    scrapes, if the process exits within a bound."""
    while proc.poll() is None:
        try:
            yield scrape(url)
        except OSError:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{url} failed while its process ran on") from None
            return


def test_qec_producer_metrics(stack: Stack, tmp_path: Path) -> None:
    ep = stack.broker("ipc").endpoint
    stack.server("-m", "decoders", "--connect", ep, "--decoder", "pymatching")
    wait_for_workers(ep, "decode", 1)
    out = tmp_path / "qec.json"
    proc = spawn(
        [
            "-m", "control_sim", "qec", "--connect", ep, "--code", "repetition",
            "--distance", "3", "--rounds", "3", "--shots", "2000", "--block-shots", "100",
            "--period-us", "100000", "--metrics-port", "0", "--json", str(out),
        ]
    )  # fmt: skip
    stack.procs.append(proc)
    url = wait_for_line(proc, METRICS_LINE, START_TIMEOUT_S, name="qec").split()[1]
    seen = list(_scrapes_until_exit(proc, url))
    assert proc.wait(60) == 0
    summary: dict[str, Any] = json.loads(out.read_text())
    assert summary["blocks_sent"] == 20 and summary["blocks_decoded"] == 20
    svc = {"service": "decode"}
    counts = [
        value(s, "nearloop_stream_reaction_seconds_count", **svc)
        for s in seen
        if any(x.name == "nearloop_stream_reaction_seconds_count" for x in s)
    ]
    # The stream is registered once it starts, and its count only grows, up to every block.
    assert counts, "no scrape saw the stream"
    assert counts == sorted(counts) and counts[0] >= 0 and counts[-1] <= 20
    assert any(c > 0 for c in counts)
    backlogs = [
        value(s, "nearloop_stream_backlog", **svc)
        for s in seen
        if any(x.name == "nearloop_stream_backlog" for x in s)
    ]
    assert all(0 <= b <= 64 for b in backlogs)


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize(
    "command",
    [
        ["decoders", "--connect", "ipc:///tmp/nl-none.sock", "--decoder", "pymatching"],
        ["control_sim", "qpu", "--connect", "ipc:///tmp/nl-none.sock"],
        ["control_sim", "qec", "--connect", "ipc:///tmp/nl-none.sock", "--shots", "10"],
        ["control_sim", "demo", "--connect", "ipc:///tmp/nl-none.sock"],
    ],
    ids=["decoders", "qpu", "qec", "demo"],
)
def test_metrics_port_in_use_is_one_line(command: list[str]) -> None:
    with _busy_port() as busy:
        port = str(busy.getsockname()[1])
        done = run_module(*command, "--metrics-port", port, timeout=60)
    line = one_line_error(done)
    assert f"127.0.0.1:{port}" in line and "metrics" in line
