"""VQE through the ``qpu`` service: QpuClient against a real broker and ``python -m control_sim
qpu`` worker, the ``control_sim vqe`` command line end to end, and ``bench vqe`` at tiny size.

Every run is seeded. The exact estimator is deterministic, and with shots both sides draw
their per-call seeds alike, so a run through the broker must return exactly what the
same run in-process returns.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit, qpy  # type: ignore[import-untyped, unused-ignore]
from qiskit.circuit import Parameter  # type: ignore[import-untyped, unused-ignore]

from client import Client, RemoteError
from client.errors import remote_error
from control_sim.qpu.client import CircuitInfo, QpuClient
from control_sim.qpu.errors import QpuError
from control_sim.qpu.evaluator import QpuEvaluator
from control_sim.stack.local_stack import LocalStack, StackSpec
from control_sim.vqe import h2
from control_sim.vqe.comparison import VqeConfig, compare_h2_vqe, run_vqe_session
from control_sim.vqe.driver import h2_registration
from tests.conftest import LANES_MISSING, ROOT, needs_lanes, one_line_error, run_module
from tests.test_qpu_core import BELL_QASM

REQUIRED_FIELDS = {
    "energy", "exact_energy", "error_mha", "iterations", "evaluations", "loop_us",
    "inproc_loop_us", "wall_s",
}  # fmt: skip


@pytest.fixture(scope="module")
def qpu_endpoint() -> Iterator[str]:
    """A broker and one ``python -m control_sim qpu`` worker, shared by this module."""
    with LocalStack(StackSpec(qpu_workers=1)) as stack:
        yield stack.endpoint


@pytest.fixture
def qpu(qpu_endpoint: str) -> Iterator[QpuClient]:
    with Client(qpu_endpoint, timeout=10) as c:
        yield QpuClient(c, timeout=10)


@pytest.fixture(
    params=[
        pytest.param(None, id="any-worker"),
        pytest.param("off", id="session-broker"),
        pytest.param("require", id="session-lane", marks=needs_lanes),
    ]
)
def each_qpu(request: pytest.FixtureRequest, qpu_endpoint: str) -> Iterator[QpuClient]:
    """A QpuClient calling any worker through the broker, or through a session, over the
    broker or a lane."""
    lane = request.param
    with Client(qpu_endpoint, timeout=10) as c:
        if lane is None:
            yield QpuClient(c, timeout=10)
            return
        with QpuClient.open(c, lane=lane, timeout=10) as q:
            assert q.lane == ("shm" if lane == "require" else "zmq")
            yield q


# --- QpuClient --------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_register_and_estimate_match_the_evaluator_in_process(qpu: QpuClient) -> None:
    source, observables = h2_registration()
    info = qpu.register_qasm3(source, observables)
    assert isinstance(info, CircuitInfo)
    assert (info.num_qubits, info.num_parameters, info.num_observables) == (2, 4, 1)
    assert info.parameters == ("t0", "t1", "t2", "t3") and info.estimable
    assert qpu.register_qasm3(source, observables).circuit == info.circuit  # registered once

    local = QpuEvaluator(seed=0)
    local_id = local.registry.register_qasm3(source, observables)
    xs = np.random.default_rng(3).uniform(-np.pi, np.pi, (3, 4))
    values, stds = qpu.estimate(info.circuit, xs)
    assert values.shape == stds.shape == (3, 1) and values.dtype == np.float64
    np.testing.assert_allclose(values, local.estimate(local_id, xs).values, atol=1e-12)
    assert not stds.any()
    one, _ = qpu.estimate(info.circuit, xs[0])
    assert one.shape == (1, 1) and one[0, 0] == pytest.approx(values[0, 0], abs=1e-12)

    noisy, noisy_std = qpu.estimate(info.circuit, xs, shots=400, seed=9)
    again, _ = qpu.estimate(info.circuit, xs, shots=400, seed=9)
    np.testing.assert_array_equal(noisy, again)  # seeded: reproducible
    np.testing.assert_array_equal(noisy, local.estimate(local_id, xs, shots=400, seed=9).values)
    assert (noisy_std > 0).all()


@pytest.mark.timeout(60)
def test_energy_fn_sends_only_the_circuit_id_and_the_parameters(qpu: QpuClient) -> None:
    source, observables = h2_registration()
    info = qpu.register_qasm3(source, observables)
    sent: list[tuple[Any, tuple[np.ndarray, ...]]] = []
    request = qpu.client.request

    def spy(service: str, body: Any = None, *arrays: np.ndarray, **kw: Any) -> Any:
        sent.append((dict(body), arrays))
        return request(service, body, *arrays, **kw)

    qpu.client.request = spy  # type: ignore[method-assign]
    energy = qpu.energy_fn(info.circuit, shots=200, seed=5)
    xs = np.zeros((2, 4))
    out = energy(xs)
    assert out.shape == (2,) and np.isfinite(out).all()
    energy(xs)
    assert len(sent) == 2
    for body, arrays in sent:
        assert set(body) == {"op", "circuit", "shots", "seed"} and body["circuit"] == info.circuit
        assert len(arrays) == 1 and arrays[0].dtype == np.float64 and arrays[0].shape == (2, 4)
    assert sent[0][0]["seed"] != sent[1][0]["seed"]  # each call its own shot seed


@pytest.mark.timeout(60)
def test_register_qpy_and_sample(each_qpu: QpuClient) -> None:
    qpu = each_qpu
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    info = qpu.register_qpy(buffer.getvalue(), [{"ZZ": 1.0}])
    assert info.parameters == ("theta",) and info.num_observables == 1
    values, _ = qpu.estimate(info.circuit, [[0.0], [np.pi / 2]])
    np.testing.assert_allclose(values[:, 0], [1.0, 1.0], atol=1e-12)  # a Bell pair: ZZ = 1

    bell = qpu.register_qasm3(BELL_QASM, [[("ZZ", 1.0)]])
    got = qpu.sample(bell.circuit, [[0.0], [np.pi / 2]], shots=200, seed=4)
    assert got.num_bits == 2 and got.shots == 200 and got.bits.shape == (2, 200, 1)
    ints = got.to_ints()
    assert (ints[0] == 0).all()  # theta = 0: |00>
    assert set(np.unique(ints[1]).tolist()) == {0, 3}  # (|00> + |11>)/sqrt(2)
    assert got.bit_order == "big"


@pytest.mark.timeout(60)
def test_service_errors_arrive_with_their_type(each_qpu: QpuClient) -> None:
    qpu = each_qpu
    info = qpu.register_qasm3(*h2_registration())
    cases: list[tuple[str, Callable[[], object]]] = [
        ("unknown_circuit", lambda: qpu.estimate("no-such-circuit", np.zeros(4))),
        ("bad_parameters", lambda: qpu.estimate(info.circuit, np.zeros(3))),
        ("bad_shots", lambda: qpu.estimate(info.circuit, np.zeros(4), shots=0)),
        ("invalid_qasm", lambda: qpu.register_qasm3("OPENQASM 3.0; qubit q; nonsense q;")),
        ("bad_observable", lambda: qpu.register_qasm3(BELL_QASM, [[("ZZZ", 1.0)]])),
        ("invalid_qpy", lambda: qpu.register_qpy(b"not qpy at all")),
    ]
    for kind, call in cases:
        with pytest.raises(RemoteError) as caught:
            call()
        assert caught.value.type == kind, (kind, caught.value)
        assert type(caught.value) is type(remote_error("qpu", kind, "")), "typed by QpuClient"
        assert isinstance(caught.value, QpuError) and caught.value.service == "qpu"
    assert qpu.estimate(info.circuit, np.zeros(4))[0].shape == (1, 1)  # still serving


# --- VQE through the broker ---------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("optimizer", "maxiter"), [("spsa", 200), ("cobyla", 120)])
def test_vqe_through_the_broker_reaches_chemical_accuracy(
    qpu_endpoint: str, optimizer: str, maxiter: int
) -> None:
    config = VqeConfig(optimizer=optimizer, maxiter=maxiter, seed=5, warmup_calls=2)  # type: ignore[arg-type]
    cmp = compare_h2_vqe(qpu_endpoint, config)
    r = cmp.remote
    exact = h2.exact_ground_energy()
    assert r.exact_energy == pytest.approx(exact, abs=1e-12)
    assert r.energy_exact_at_x is not None
    assert abs(r.energy_exact_at_x - exact) * 1e3 < 1.6
    assert 0 <= r.error_mha < 1.6 and r.chemically_accurate
    if optimizer == "spsa":
        assert r.iterations == maxiter and r.calls == maxiter + 2  # + calibration, + final
    assert len(r.iteration_us) == r.iterations and (r.call_us > 0).all()
    assert cmp.same_result  # the broker changes nothing but the time it takes
    assert cmp.circuit.num_parameters == h2.NUM_PARAMETERS


@pytest.mark.timeout(60)
def test_vqe_with_shots_reports_a_finite_error_at_the_returned_point(qpu_endpoint: str) -> None:
    s = run_vqe_session(qpu_endpoint, VqeConfig(shots=500, maxiter=60, seed=11, warmup_calls=2))
    assert s["shots"] == 500 and s["energy_exact_at_x"] is not None
    assert math.isfinite(s["error_mha"]) and s["error_mha"] >= 0
    assert s["error_mha"] == pytest.approx((s["energy_exact_at_x"] - s["exact_energy"]) * 1e3)
    assert abs(s["energy"] - s["energy_exact_at_x"]) < 0.2  # one noisy estimate of it
    assert s["same_result"] and s["inproc_error_mha"] == pytest.approx(s["error_mha"])


@needs_lanes
@pytest.mark.timeout(60)
@pytest.mark.parametrize("optimizer", ["spsa", "cobyla"])
def test_vqe_over_a_lane_returns_what_the_broker_and_in_process_return(
    qpu_endpoint: str, optimizer: str
) -> None:
    base = VqeConfig(optimizer=optimizer, maxiter=40, seed=3, warmup_calls=2)  # type: ignore[arg-type]
    lane = compare_h2_vqe(qpu_endpoint, base)  # lane="auto", the default: co-located here
    broker = compare_h2_vqe(qpu_endpoint, VqeConfig(**{**_fields(base), "lane": "off"}))
    assert (lane.lane, lane.lane_refused) == ("shm", None)
    assert (broker.lane, broker.lane_refused) == ("zmq", "lane='off'")
    # Same seed, same optimizer, same deterministic evaluator: the same numbers exactly.
    for a, b in [(lane.remote, broker.remote), (lane.remote, lane.inproc)]:
        assert np.array_equal(a.x, b.x) and a.energy == b.energy
        assert np.array_equal(a.history, b.history) and a.calls == b.calls
    assert lane.same_result and broker.same_result


@needs_lanes
@pytest.mark.timeout(60)
def test_vqe_with_shots_over_a_lane_sees_the_same_shot_noise_as_in_process(
    qpu_endpoint: str,
) -> None:
    s = run_vqe_session(
        qpu_endpoint, VqeConfig(shots=300, maxiter=30, seed=4, warmup_calls=1, lane="require")
    )
    assert s["lane"] == "shm" and s["lane_mode"] == "require"
    assert s["same_result"] and s["inproc_energy"] == s["energy"]


def _fields(config: VqeConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in VqeConfig.__dataclass_fields__}


# --- the command line ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_vqe_cli_json_with_its_own_local_stack(tmp_path: Path) -> None:
    out = tmp_path / "vqe.json"
    done = run_module("control_sim", "vqe", "--maxiter", "80", "--seed", "2", "--json", str(out))
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert set(s) >= REQUIRED_FIELDS
    assert s["exact_energy"] == pytest.approx(h2.PUBLISHED_GROUND_ENERGY_HA, abs=1e-7)
    assert s["energy"] == pytest.approx(s["exact_energy"], abs=1.6e-3)
    assert 0 <= s["error_mha"] < 1.6 and s["chemically_accurate"]
    assert s["iterations"] == 80 and s["evaluations"] == 2 * 80 + 32 + 1
    for key in ("loop_us", "inproc_loop_us", "call_us"):
        lat = s[key]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"], key
    assert s["loop_p50_vs_inproc"] == pytest.approx(
        s["loop_us"]["p50"] / s["inproc_loop_us"]["p50"]
    )
    assert 0 < s["wall_s"] < s["session_s"] and s["local_stack"] is True
    assert s["optimizer"] == "spsa" and s["shots"] is None and s["seed"] == 2
    assert s["same_result"] is True


@pytest.mark.timeout(60)
def test_vqe_cli_with_shots_writes_the_error(tmp_path: Path, qpu_endpoint: str) -> None:
    out = tmp_path / "vqe.json"
    args = ["--connect", qpu_endpoint, "--shots", "400", "--maxiter", "40", "--seed", "1"]
    done = run_module("control_sim", "vqe", *args, "--json", str(out))
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert s["shots"] == 400 and s["local_stack"] is False
    assert math.isfinite(s["error_mha"]) and s["energy_exact_at_x"] is not None


@pytest.mark.timeout(60)
def test_vqe_cli_prints_a_readable_summary(qpu_endpoint: str) -> None:
    done = run_module("control_sim", "vqe", "--connect", qpu_endpoint, "--optimizer", "cobyla")
    assert done.returncode == 0, done.stderr
    assert "cobyla, exact estimator" in done.stdout
    assert "chemically accurate" in done.stdout and "NOT" not in done.stdout
    via = "over the lane" if LANES_MISSING is None else "through broker"
    assert f"loop     {via} p50" in done.stdout and "in-process p50" in done.stdout
    done = run_module("control_sim", "vqe", "--connect", qpu_endpoint, "--lane", "off")
    assert done.returncode == 0, done.stderr
    assert "transport through the broker (lane='off')" in done.stdout
    assert "loop     through broker p50" in done.stdout


@needs_lanes
@pytest.mark.timeout(60)
@pytest.mark.parametrize("lane", ["require", "off"])
def test_vqe_cli_lane_option_picks_the_transport_and_says_so(
    tmp_path: Path, qpu_endpoint: str, lane: str
) -> None:
    out = tmp_path / "vqe.json"
    args = ["--connect", qpu_endpoint, "--maxiter", "20", "--lane", lane, "--json", str(out)]
    done = run_module("control_sim", "vqe", *args)
    assert done.returncode == 0, done.stderr
    s = json.loads(out.read_text())
    assert s["lane_mode"] == lane and s["same_result"]
    if lane == "require":
        assert s["lane"] == "shm" and s["lane_refused"] is None
    else:
        assert s["lane"] == "zmq" and s["lane_refused"] == "lane='off'"


@pytest.mark.timeout(60)
def test_vqe_cli_lane_require_without_lanes_is_one_clear_error(qpu_endpoint: str) -> None:
    env = {**os.environ, "NEARLOOP_NO_LANE": "1"}
    args = ["--connect", qpu_endpoint, "--maxiter", "5", "--lane", "require"]
    done = subprocess.run(
        [sys.executable, "-m", "control_sim", "vqe", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    line = one_line_error(done)
    assert "lane='require'" in line and "NEARLOOP_NO_LANE" in line
    assert done.stdout == ""  # it stopped before any VQE ran


@pytest.mark.timeout(60)
def test_vqe_cli_refuses_bad_input_clearly(qpu_endpoint: str) -> None:
    line = one_line_error(run_module("control_sim", "vqe", "--shots", "1"))
    assert "argument --shots: must be >= 2, got 1" in line
    done = run_module("control_sim", "vqe", "--connect", qpu_endpoint, "--service", "nosuch")
    line = one_line_error(done)
    assert "no worker for 'nosuch'" in line and "nearloop qpu --connect" in line
    line = one_line_error(run_module("control_sim", "vqe", "--connect", "localhost:5555"))
    assert "'localhost:5555' names no transport" in line
    line = one_line_error(run_module("control_sim", "vqe", "--lane", "fast"))
    assert "argument --lane: invalid choice: 'fast'" in line


# --- the benchmark ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_bench_vqe_smoke_writes_table_json_and_plot(tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "out" / "vqe.json", tmp_path / "plots" / "vqe.png"
    args = ["--maxiter", "60", "--rounds", "2", "--warmup", "5"]
    done = run_module("bench", "vqe", *args, "--json", str(out_json), "--plot", str(out_png))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out_json.read_text())
    remote = {"broker"} if LANES_MISSING is not None else {"lane", "broker"}
    assert set(doc["peers"]) == {"in-process"} | remote
    assert set(doc["skipped"]) == ({"lane"} if LANES_MISSING is not None else set())
    base = doc["peers"]["in-process"]
    for name, p in doc["peers"].items():
        assert p["n"] == 60, name
        assert 0 < p["min_us"] <= p["p50_us"] <= p["p99_us"] <= p["p999_us"] <= p["max_us"], name
        assert p["p50_vs_inproc"] == pytest.approx(p["p50_us"] / base["p50_us"])
        assert math.isfinite(p["error_mha_max"]) and p["runs"] == 2  # too short to converge
        assert name in done.stdout
        cpu = p["cpu"]
        assert cpu["client_us_per_iteration"] > 0 and cpu["cores_busy"] > 0, name
        if cpu["servers_us_per_iteration"] is not None:  # readable where /proc has schedstat
            assert cpu["us_per_iteration"] == pytest.approx(
                cpu["client_us_per_iteration"] + cpu["servers_us_per_iteration"]
            )
    assert doc["goal_pct"] == 10 and set(doc["overhead"]) == remote
    for name, o in doc["overhead"].items():
        p50 = doc["peers"][name]["p50_us"]
        assert o["p50_pct"] == pytest.approx((p50 - base["p50_us"]) / base["p50_us"] * 100)
        assert o["p50_ratio"] == pytest.approx(p50 / base["p50_us"])
        assert o["meets_goal"] == (o["p50_pct"] <= 10)
        assert f"overhead of the {name} (p50)" in done.stdout
    assert doc["config"]["iterations"] == 60 and doc["config"]["optimizer"] == "spsa"
    assert doc["machine"]["cpu_count"] >= 1 and doc["date"]
    assert {"pyzmq", "numpy", "qiskit", "qiskit-aer"} <= set(doc["versions"])
    assert "p50 vs. in-proc" in done.stdout and "CPU µs/it" in done.stdout
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
