"""The broker's /metrics: a real broker process with ``--metrics-port 0``, real workers,
scraped over HTTP and parsed with prometheus_client's own parser; and the dashboard."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from broker.broker import Broker
from broker.config import BrokerConfig
from broker.metrics import BrokerCollector
from broker.registry import MALFORMED_REASONS, OUTCOMES
from client import (
    Client,
    QueueFull,
    RequestTimeout,
    ServiceUnavailable,
    Session,
    UnknownSession,
    WorkerError,
    WorkerLost,
)
from client.arguments import DEFAULT_METRICS_HOST
from client.metrics_export import METRICS_LINE, new_registry
from client.wire import ErrorInfo, encode_header
from control_sim.stack.processes import START_TIMEOUT_S
from tests.conftest import (
    ROOT,
    Stack,
    needs_lanes,
    one_line_error,
    run_module,
    spawn,
    wait_for_workers,
    wait_until,
)
from tests.peers.mdp_rfc import MDPC02, MDPW02, PlainWorker, V2Client, echo
from tests.test_failures import held_by

pytestmark = pytest.mark.timeout(120)

DASHBOARD = ROOT / "docs" / "grafana" / "nearloop.json"

WORKER_METRICS: tuple[tuple[str, str], ...] = (
    ("nearloop_decode_seconds", "histogram"),
    ("nearloop_decode_batch_size", "histogram"),
    ("nearloop_qpu_eval_seconds", "histogram"),
    ("nearloop_stream_reaction_seconds", "histogram"),
    ("nearloop_stream_backlog", "gauge"),
)
"""The metrics the workers and producers export (python -m decoders, control_sim qpu|qec,
``--metrics-port``), with their types: the dashboard may use these beside the broker's."""

MUST_SHOW = (
    "nearloop_requests_total",
    "nearloop_request_seconds_bucket",
    "nearloop_queue_depth",
    "nearloop_workers",
    "nearloop_worker_credit",
    "nearloop_sessions",
    "nearloop_lanes",
    "nearloop_malformed_total",
    "nearloop_auth_refused_total",
    *(name + ("_bucket" if kind == "histogram" else "") for name, kind in WORKER_METRICS),
)
"""What the dashboard must show, each on some panel."""

STEADY_WORKER = ("--heartbeat-ms", "200", "--liveness", "5")
"""A worker that a busy machine does not take for dead (1 s of silence allowed)."""


@dataclass
class MetricsBroker:
    """A ``python -m broker --metrics-port 0`` and where it listens."""

    proc: subprocess.Popen[str]
    endpoint: str
    url: str


def start_broker(stack: Stack, *extra: str) -> MetricsBroker:
    """A broker on ipc that serves /metrics on a free port; reads its METRICS line, which
    comes before READY."""
    proc = spawn(["-m", "broker", "--bind", stack.endpoint("ipc"), "--metrics-port", "0", *extra])
    stack.procs.append(proc)
    first, ready = first_lines(proc, 2)
    assert first.startswith(METRICS_LINE + " http://127.0.0.1:"), first
    assert ready.startswith("READY "), ready
    return MetricsBroker(proc, ready.split()[1], first.split()[1])


def first_lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    """The first ``n`` lines ``proc`` prints, in order (none skipped), within the start
    timeout."""
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        lines.extend(proc.stdout.readline() for _ in range(n))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    assert not reader.is_alive(), f"no {n} lines within {START_TIMEOUT_S} s: {lines}"
    return lines


def scrape(url: str) -> dict[str, Metric]:
    """One scrape, parsed: metric families by name."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Metric], family: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with exactly ``labels`` (None if there is none)."""
    found = [s.value for s in families[family].samples if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def outcomes(families: dict[str, Metric]) -> dict[str, dict[str, int]]:
    """``nearloop_requests_total`` as {service: {outcome: count}}, zero counts left out."""
    table: dict[str, dict[str, int]] = {}
    for s in families["nearloop_requests"].samples:
        assert s.name == "nearloop_requests_total" and s.labels["outcome"] in OUTCOMES, s
        if s.value:
            table.setdefault(s.labels["service"], {})[s.labels["outcome"]] = int(s.value)
    return table


def settled(url: str, want: dict[str, dict[str, int]]) -> dict[str, Metric]:
    """Scrape until the outcome counts equal ``want`` (the broker counts a FINAL just after
    forwarding it, so a scrape may come before the last count); fail with what it shows."""
    last: list[dict[str, dict[str, int]]] = []

    def check() -> dict[str, Metric] | None:
        families = scrape(url)
        last[:] = [outcomes(families)]
        return families if last[0] == want else None

    try:
        result: dict[str, Metric] = wait_until(check, 20, "the counts", every=0.05)
    except AssertionError:
        assert last[0] == want  # shows the difference
        raise
    return result


def gauge_is(url: str, family: str, value: float, **labels: str) -> None:
    """Wait (bounded) until gauge ``family`` with ``labels`` reads ``value``."""
    wait_until(
        lambda: sample(scrape(url), family, family, **labels) == value,
        20,
        f"{family}{labels} == {value}",
        every=0.05,
    )


def test_counters_match_what_was_sent(stack: Stack, zctx: zmq.Context[Any]) -> None:
    broker = start_broker(stack, "--max-queue", "1", "--max-redispatch", "1")
    ep = broker.endpoint
    stack.worker(ep, "echo", *STEADY_WORKER)
    wait_for_workers(ep, "echo", 1)
    plain = [PlainWorker(zctx, ep, f"plain{v}".encode(), echo, version=v) for v in (1, 2)]
    for w in plain:
        w.start()
    try:
        for v in (1, 2):
            wait_for_workers(ep, f"plain{v}", 1)
        _send_everything(broker, stack, zctx)
    finally:
        for w in plain:
            w.stop()
    want = {
        "echo": {"ok": 7, "error": 3},  # 5 calls + 2 through a session; 3 handler errors
        "nl.session": {"refused": 1},  # no such session
        "nobody": {"refused": 1},  # queue full (its first request still waits)
        "nobody2": {"expired": 1},
        "slow": {"redispatched": 1, "lost": 1},
        "plain1": {"ok": 1, "error": 1},  # MDP/0.1 worker: the body comes as a zmq.Frame
        "plain2": {"ok": 1, "error": 1},
    }
    families = settled(broker.url, want)
    latency = "nearloop_request_seconds"
    for service, counts in want.items():
        answered = counts.get("ok", 0) + counts.get("error", 0)
        n = sample(families, latency, latency + "_count", service=service)
        assert n == answered, (service, n)
        inf = sample(families, latency, latency + "_bucket", service=service, le="+Inf")
        assert inf == answered, (service, inf)
    echo_s = sample(families, latency, latency + "_sum", service="echo")
    # 10 answers, each within the client's 20 s timeout: the sum is in seconds, not ns.
    assert echo_s is not None and 0 < echo_s < 10 * 20
    malformed = {
        s.labels["reason"]: s.value
        for s in families["nearloop_malformed"].samples
        if s.name == "nearloop_malformed_total"
    }
    assert malformed == {
        reason: (1.0 if reason in ("not_mdp", "bad_request", "bad_worker_command") else 0.0)
        for reason in MALFORMED_REASONS
    }
    total = sample(families, "nearloop_broker_redispatched", "nearloop_broker_redispatched_total")
    assert total == 1
    assert "nearloop_broker_malformed" not in families  # that is nearloop_malformed_total
    assert "nearloop_auth_refused" in families  # filled by the authentication handler
    # The library's default process metrics.
    cpu = sample(families, "process_cpu_seconds", "process_cpu_seconds_total")
    assert cpu is not None and cpu > 0
    rss = sample(families, "process_resident_memory_bytes", "process_resident_memory_bytes")
    assert rss is not None and rss > 1e6
    assert "python_gc_objects_collected" in families
    # mmi.stats shows the same outcomes.
    with Client(ep, timeout=10) as c:
        stats = c.broker_stats()
    assert stats["requests"]["slow"]["redispatched"] == 1
    assert stats["requests"]["echo"]["error"] == 3


def _send_everything(broker: MetricsBroker, stack: Stack, zctx: zmq.Context[Any]) -> None:
    """Every outcome at least once, checking the gauges while they are non-zero."""
    ep, url = broker.endpoint, broker.url
    gauge_is(url, "nearloop_workers", 1, service="echo")
    gauge_is(url, "nearloop_worker_credit", 1, service="echo")
    with Client(ep, timeout=20) as c:
        for i in range(5):
            assert c.request("echo", {"i": i}).body["echo"] == {"i": i}
        for _ in range(3):
            with pytest.raises(WorkerError):
                c.request("echo", {"op": "fail"})
        with c.open_session("echo", lane="off") as s:
            assert [s.request({"op": "count"}).body["count"] for _ in range(2)] == [1, 2]
            gauge_is(url, "nearloop_sessions", 1)
        gauge_is(url, "nearloop_sessions", 0)
        with pytest.raises(UnknownSession):
            Session(c, 987654, "echo", "none").request({"op": "count"})
        with pytest.raises((ServiceUnavailable, RequestTimeout)):
            c.request("nobody2", timeout=1.0)  # the broker may queue it for 0.9 s
        waiting = c.submit("nobody", timeout=100)
        gauge_is(url, "nearloop_queue_depth", 1, service="nobody")
        with pytest.raises(QueueFull):
            c.request("nobody")
        waiting.abandon()
        _redispatched_then_lost(c, stack, ep, url)
    v2 = V2Client(zctx, ep)
    error_header = encode_header(id=7, kind="error", error=ErrorInfo("worker_error", "no"))
    for service in (b"plain1", b"plain2"):
        assert v2.request(service, [b"error"])[1] == [b"error"]  # plain bytes: ok
        assert v2.request(service, [error_header])[1] == [error_header]  # a nearloop error
    raw = zctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(ep)
    raw.send_multipart([b"junk", b"x"])  # not_mdp
    raw.send_multipart([MDPW02, b"\x77"])  # bad_worker_command
    raw.send_multipart([MDPC02, b"\x01", b"bad name"])  # bad_request, and an error reply
    assert raw.poll(10_000) and raw.recv_multipart()[0] == MDPC02
    raw.close()


def _redispatched_then_lost(c: Client, stack: Stack, ep: str, url: str) -> None:
    """With --max-redispatch 1: the first worker holding a request dies (redispatched), then
    the second (lost)."""
    mark = stack.tmp / "mark"
    mark.mkdir()
    quick = ("--heartbeat-ms", "100", "--liveness", "5")
    stack.worker(ep, "slow", *quick)
    pending = c.submit("slow", {"op": "sleep", "s": 600, "mark": str(mark)}, timeout=60)
    first = held_by(mark)
    gauge_is(url, "nearloop_workers", 1, service="slow")
    os.kill(first, signal.SIGKILL)
    (mark / str(first)).unlink()
    stack.worker(ep, "slow", *quick)
    second = held_by(mark, timeout=30)  # after the broker finds the first one dead
    assert second != first
    os.kill(second, signal.SIGKILL)
    with pytest.raises(WorkerLost):
        pending.result()


def test_scrapes_parse_while_the_loop_is_busy(stack: Stack) -> None:
    broker = start_broker(stack)
    stack.worker(broker.endpoint, "echo", *STEADY_WORKER)
    wait_for_workers(broker.endpoint, "echo", 1)
    n_requests = 600
    done = threading.Event()
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            with Client(broker.endpoint, timeout=20) as c:
                for i in range(n_requests):
                    c.request("echo", i)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    seen: list[int] = []
    while not done.is_set() or len(seen) < 3:
        families = scrape(broker.url)  # parses, or raises
        ok = int(sample(families, "nearloop_requests", "nearloop_requests_total",
                        service="echo", outcome="ok") or 0)  # fmt: skip
        count = sample(
            families, "nearloop_request_seconds", "nearloop_request_seconds_count", service="echo"
        )
        assert count is None or abs(count - ok) <= 1  # read a moment apart, never wrong
        seen.append(ok)
    thread.join(30)
    assert not errors, errors
    assert seen == sorted(seen), "a counter went back"
    assert seen[0] < n_requests, "no scrape ran while the client was busy"
    settled(broker.url, {"echo": {"ok": n_requests}})


@needs_lanes
def test_lanes_gauge(stack: Stack) -> None:
    broker = start_broker(stack)
    stack.worker(broker.endpoint, "echo", *STEADY_WORKER)
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint, timeout=20) as c:
        with c.open_session("echo", lane="require") as s:
            assert s.request({"op": "count"}).body["count"] == 1
            gauge_is(broker.url, "nearloop_lanes", 1)
            gauge_is(broker.url, "nearloop_sessions", 1)
        gauge_is(broker.url, "nearloop_lanes", 0)


@needs_lanes
def test_requests_over_lanes_are_counted_from_the_workers_heartbeats(stack: Stack) -> None:
    """Lane requests never pass the broker; their workers' heartbeats say how many they
    answered, and the broker exports them apart, by outcome."""
    broker = start_broker(stack)
    stack.worker(broker.endpoint, "echo", *STEADY_WORKER)
    wait_for_workers(broker.endpoint, "echo", 1)
    with Client(broker.endpoint, timeout=20) as c, c.open_session("echo", lane="require") as s:
        for i in range(7):
            assert s.request({"op": "count"}).body["count"] == i + 1
        for _ in range(2):
            with pytest.raises(WorkerError):
                s.request({"op": "fail"})

    def lane_counts() -> list[float | None]:
        families = scrape(broker.url)
        return [
            sample(families, "nearloop_lane_requests", "nearloop_lane_requests_total",
                   service="echo", outcome=outcome)
            for outcome in ("ok", "error")
        ]  # fmt: skip

    wait_until(lambda: lane_counts() == [7, 2], 20, "7 ok and 2 error lane requests counted")
    families = scrape(broker.url)
    # None of them went through the broker's queue (the session's open and close are not
    # requests of the service).
    for outcome in ("ok", "error"):
        assert sample(
            families, "nearloop_requests", "nearloop_requests_total", service="echo",
            outcome=outcome,
        ) in (None, 0)  # fmt: skip
    with Client(broker.endpoint, timeout=10) as c:
        assert c.broker_stats()["lane_requests"] == {"echo": {"ok": 7, "error": 2}}


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc: its socket inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m.group(1))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_without_metrics_port_the_broker_serves_nothing(stack: Stack) -> None:
    served = start_broker(stack)
    port = int(served.url.rsplit(":", 1)[1].split("/")[0])
    assert _listening_tcp_ports(served.proc.pid) == {port}
    proc = spawn(["-m", "broker", "--bind", stack.endpoint("ipc", "plain")])
    stack.procs.append(proc)
    (first,) = first_lines(proc, 1)
    assert first.startswith("READY "), first  # no METRICS line before it
    assert _listening_tcp_ports(proc.pid) == set()


def test_the_metrics_host_default_is_loopback_everywhere() -> None:
    assert BrokerConfig(endpoints=("inproc://x",)).metrics_host == DEFAULT_METRICS_HOST
    assert DEFAULT_METRICS_HOST == "127.0.0.1"


def test_metrics_port_in_use_is_one_line_and_exit_2(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sock_path = stack.tmp / "inuse.sock"
        done = run_module("broker", "--bind", f"ipc://{sock_path}", "--metrics-port", str(port))
    line = one_line_error(done)
    assert f"127.0.0.1:{port}" in line and "in use" in line, line
    assert done.stdout == ""  # neither METRICS nor READY
    assert not sock_path.exists()  # it stopped before binding its endpoints
    bad = run_module("broker", "--bind", f"ipc://{sock_path}", "--metrics-port", "70000")
    assert "--metrics-port" in one_line_error(bad)


# --- the dashboard -------------------------------------------------------------------

_PROMQL_FUNCTIONS = {
    "sum", "avg", "max", "min", "count", "rate", "irate", "increase", "histogram_quantile",
    "clamp_min", "topk", "label_values", "deriv", "delta", "abs", "vector",
}  # fmt: skip
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "info": ("_info",),
}


def _exported_names(families: Iterator[Metric]) -> set[str]:
    names = set()
    for f in families:
        names |= {f.name + suffix for suffix in _SUFFIXES.get(f.type, ("",))}
        names |= {s.name for s in f.samples}
    return names


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not a function,
    an aggregation keyword, a label, a variable or a duration."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # dashboard variables
    expr = re.sub(r"(?<![\w:])\d[\d.]*(e[+-]?\d+)?", "", expr)  # numbers
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?", expr):
        word = m.group(0).rstrip("( ")
        if m.group(1):
            assert word in _PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr!r}"
        elif word not in ("bool", "offset", "and", "or", "unless"):
            names.add(word)
    return names


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())  # inside a collapsed row


def test_dashboard_imports_and_reads_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["schemaVersion"] >= 30 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    broker = Broker(BrokerConfig(endpoints=("inproc://dashboard",)))
    try:
        registry = new_registry()
        registry.register(BrokerCollector(broker))
        exported = _exported_names(registry.collect())
    finally:
        broker.close()
    for name, kind in WORKER_METRICS:
        exported |= {name + suffix for suffix in _SUFFIXES[kind]}
    used: set[str] = set()
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    titles = [p["title"] for p in panels]
    assert len(set(titles)) == len(titles), titles
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], f"panel {panel['title']!r} has no target"
        for target in panel["targets"]:
            names = _metric_names(target["expr"])
            assert names, target
            assert names <= exported, (panel["title"], names - exported)
            used |= names
    for name in MUST_SHOW:
        assert name in used, f"no panel shows {name}"
    quantiles = " ".join(
        t["expr"] for p in panels for t in p["targets"] if "nearloop_request_seconds" in t["expr"]
    )
    for q in ("0.5", "0.99", "0.999"):
        assert f"histogram_quantile({q}," in quantiles, q


def test_promql_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (service, le) (rate(nearloop_request_seconds_bucket"
        '{service=~"$service"}[$__rate_interval])))'
    )
    assert _metric_names(expr) == {"nearloop_request_seconds_bucket"}
    assert _metric_names("sum(nearloop_lanes) / clamp_min(nearloop_sessions, 1e-9)") == {
        "nearloop_lanes", "nearloop_sessions"
    }  # fmt: skip
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        _metric_names("histogram_quantil(0.5, x)")
