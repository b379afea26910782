"""The ``qpu`` service: :class:`QpuService` in-process, then a real broker and a real
``python -m control_sim qpu`` worker process.

One table of bad requests runs on both paths: in-process each must raise a QpuError of
the right ``type``; through the broker each must come back as an error reply of that
type (no traceback), and the worker must go on answering good requests.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from qiskit import qasm3, qpy  # type: ignore[import-untyped, unused-ignore]

from client import Client, RemoteError
from client.messages import Message
from client.wire import arrays_to_frames, encode_header, frames_to_arrays, parse_header
from control_sim.qpu.circuits import DEFAULT_MAX_CIRCUITS as MAX_CIRCUITS
from control_sim.qpu.client import QpuClient
from control_sim.qpu.errors import QpuError, TooManyCircuits
from control_sim.qpu.evaluator import QpuEvaluator
from control_sim.qpu.schema import BIT_ORDER, Estimate, Sample
from control_sim.qpu.service import QpuService
from control_sim.stack.local_stack import LocalStack, StackSpec
from control_sim.vqe import h2
from control_sim.vqe.driver import h2_registration
from tests.conftest import ROOT, START_TIMEOUT_S, Stack, spawn, stop_process, wait_for_line

SERVICE = "qpu"
P = h2.NUM_PARAMETERS
RY = 'OPENQASM 3.0; include "stdgates.inc"; input float[64] a; qubit q; ry(a) q;'

# Ten qubits (two bytes per shot) and one parameter: x on qubits 0, 8 and 9, ry(a) on 1.
BITS_QASM = """OPENQASM 3.0;
include "stdgates.inc";
input float[64] a;
qubit[10] q;
x q[0];
ry(a) q[1];
x q[8];
x q[9];
"""


def request(body: Any, *arrays: npt.NDArray[Any], header: dict[str, Any] | None = None) -> Message:
    """The Message a Worker would hand the handler: encoded and parsed as on the wire.

    ``header`` adds raw header keys (a ``session``, say) that the encoder does not write.
    """
    specs, inline, frames = arrays_to_frames(arrays)
    raw = encode_header(id=1, kind="request", arrays=specs, body=body, inline=inline)
    if header:
        raw = msgpack.packb({**msgpack.unpackb(raw), **header})
    parsed = parse_header(raw)
    return Message(
        parsed, frames_to_arrays(parsed.arrays, [bytes(f) for f in frames], parsed.inline)
    )


def h2_register_body() -> dict[str, Any]:
    source, observables = h2_registration()
    return {"op": "register", "qasm3": source, "observables": observables}


def seeded_point(seed: int, batch: int | None = None) -> npt.NDArray[np.float64]:
    shape = (P,) if batch is None else (batch, P)
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, shape)


def in_process_exact(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The H2 energies a fresh in-process evaluator gives: the reference of every check."""
    ev = QpuEvaluator(seed=0)
    source, observables = h2_registration()
    cid = ev.registry.register_qasm3(source, observables)
    return ev.estimate(cid, x).values


def unpack(bits: npt.NDArray[np.uint8], num_bits: int) -> npt.NDArray[np.uint8]:
    """Sample reply bits to one uint8 per classical bit, bit ``i`` at index ``i``."""
    assert BIT_ORDER == "big"
    unpacked: npt.NDArray[np.uint8] = np.unpackbits(bits, axis=-1, bitorder="big")[..., ::-1]
    return unpacked[..., :num_bits]


def qpy_bytes(source: str) -> npt.NDArray[np.uint8]:
    buf = io.BytesIO()
    qpy.dump(qasm3.loads(source), buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


# --- the bad requests, shared by both paths ----------------------------------------------


@dataclass(frozen=True)
class Ids:
    """Circuits registered before the bad requests run."""

    h2: str
    bare: str  # BITS_QASM without observables: sample only


@dataclass(frozen=True)
class Bad:
    """One bad request: how to build it, the error type it must get, and words its
    message must contain (what was expected and what was got)."""

    name: str
    build: Callable[[Ids], tuple[Any, tuple[npt.NDArray[Any], ...]]]
    type: str
    needles: tuple[str, ...]


def _est(ids: Ids, *arrays: npt.NDArray[Any], **body: Any) -> tuple[Any, tuple[Any, ...]]:
    return {"op": "estimate", "circuit": ids.h2, "shots": None, **body}, arrays


def _reg(observables: Any) -> Callable[[Ids], tuple[Any, tuple[Any, ...]]]:
    source = h2.ANSATZ_QASM3
    return lambda ids: ({"op": "register", "qasm3": source, "observables": observables}, ())


ZEROS = np.zeros(P)
BAD: list[Bad] = [
    Bad("body not a map", lambda ids: ([1, 2], ()), "bad_request", ("map", "list")),
    Bad("no body", lambda ids: (None, ()), "bad_request", ("'op'", "nothing")),
    Bad("no op", lambda ids: ({"circuit": ids.h2}, ()), "bad_request", ("no 'op' key",)),
    Bad("unknown op", lambda ids: ({"op": "frobnicate"}, ()), "bad_request", ("frobnicate",)),
    Bad("op not a str", lambda ids: ({"op": 7}, ()), "bad_request", ("int 7", "'estimate'")),
    Bad(
        "register without source",
        lambda ids: ({"op": "register", "observables": []}, ()),
        "bad_request",
        ("'qasm3'", "neither"),
    ),
    Bad(
        "register qpy without frame",
        lambda ids: ({"op": "register", "qpy": True}, ()),
        "bad_request",
        ("1 array frames", "got 0"),
    ),
    Bad(
        "register qpy float frame",
        lambda ids: ({"op": "register", "qpy": True}, (np.zeros(3),)),
        "bad_request",
        ("uint8", "float64"),
    ),
    Bad(
        "unknown circuit (estimate)",
        lambda ids: _est(Ids("feedc0de", ids.bare), ZEROS),
        "unknown_circuit",
        ("registered circuit", "feedc0de"),
    ),
    Bad(
        "unknown circuit (describe)",
        lambda ids: ({"op": "describe", "circuit": "feedc0de"}, ()),
        "unknown_circuit",
        ("feedc0de",),
    ),
    Bad(
        "unknown circuit (sample)",
        lambda ids: ({"op": "sample", "circuit": 12, "shots": 4}, (ZEROS,)),
        "unknown_circuit",
        ("a str", "int 12"),
    ),
    Bad(
        "parameters too long",
        lambda ids: _est(ids, np.zeros(P + 1)),
        "bad_parameters",
        (f"({P},)", f"got shape ({P + 1},)"),
    ),
    Bad(
        "parameters too short in a batch",
        lambda ids: _est(ids, np.zeros((3, P - 1))),
        "bad_parameters",
        (f"(batch, {P})", f"got shape (3, {P - 1})"),
    ),
    Bad(
        "parameters float32",
        lambda ids: _est(ids, np.zeros(P, dtype=np.float32)),
        "bad_parameters",
        ("float64", "dtype float32"),
    ),
    Bad(
        "parameters int64",
        lambda ids: _est(ids, np.zeros(P, dtype=np.int64)),
        "bad_parameters",
        ("float64", "dtype int64"),
    ),
    Bad(
        "parameters 3-d",
        lambda ids: _est(ids, np.zeros((1, 1, P))),
        "bad_parameters",
        (f"(batch, {P})", f"got shape (1, 1, {P})"),
    ),
    Bad(
        "parameters 0-d",
        lambda ids: _est(ids, np.array(0.5)),
        "bad_parameters",
        (f"({P},)", "got shape ()"),
    ),
    Bad(
        "no parameter frame",
        lambda ids: _est(ids),
        "bad_parameters",
        ("exactly one float64 array frame", "got 0 array frames"),
    ),
    Bad(
        "two parameter frames",
        lambda ids: _est(ids, ZEROS, ZEROS),
        "bad_parameters",
        ("exactly one float64 array frame", "got 2 array frames"),
    ),
    Bad(
        "parameters not finite",
        lambda ids: _est(ids, np.array([0.0, np.nan, 0.0, 0.0])),
        "bad_parameters",
        ("finite", "nan"),
    ),
    Bad(
        "sample with wrong parameters",
        lambda ids: ({"op": "sample", "circuit": ids.bare, "shots": 4}, (ZEROS,)),
        "bad_parameters",
        ("(1,)", f"got shape ({P},)"),
    ),
    Bad(
        "observable too wide",
        _reg([[["ZZZ", 1.0]]]),
        "bad_observable",
        ("length 2", "'ZZZ' of length 3"),
    ),
    Bad("observable bad label", _reg([[["ZQ", 1.0]]]), "bad_observable", ("I, X, Y, Z", "'ZQ'")),
    Bad(
        "observable bad coefficient",
        _reg([[["ZZ", "one"]]]),
        "bad_observable",
        ("real finite", "'one'"),
    ),
    Bad("observable not a list", _reg("ZZ"), "bad_observable", ("list", "str")),
    Bad(
        "estimate without observables",
        lambda ids: ({"op": "estimate", "circuit": ids.bare}, (np.zeros(1),)),
        "bad_observable",
        ("at least one observable", "none"),
    ),
    Bad(
        "register a circuit too wide",
        lambda ids: ({"op": "register", "qasm3": "OPENQASM 3.0; qubit[25] q;"}, ()),
        "unsupported_circuit",
        ("at most 24 qubits", "got 25"),
    ),
    Bad(
        "invalid qasm",
        lambda ids: ({"op": "register", "qasm3": "OPENQASM 3.0; qubit q; frob q;"}, ()),
        "invalid_qasm",
        ("OpenQASM 3", "frob"),
    ),
    Bad(
        "qasm not a str",
        lambda ids: ({"op": "register", "qasm3": 42}, ()),
        "invalid_qasm",
        ("OpenQASM 3", "int"),
    ),
    Bad(
        "invalid qpy",
        lambda ids: (
            {"op": "register", "qpy": True},
            (np.frombuffer(b"not a qpy file", np.uint8),),
        ),
        "invalid_qpy",
        ("qpy", "qpy.load said"),
    ),
    Bad(
        "estimate shots 1",
        lambda ids: _est(ids, ZEROS, shots=1),
        "bad_shots",
        ("[2, 1000000]", "got 1"),
    ),
    Bad(
        "estimate shots too many",
        lambda ids: _est(ids, ZEROS, shots=10**7),
        "bad_shots",
        ("1000000]", "got 10000000"),
    ),
    Bad(
        "estimate shots a str",
        lambda ids: _est(ids, ZEROS, shots="100"),
        "bad_shots",
        ("an int", "'100'"),
    ),
    Bad(
        "sample shots 0",
        lambda ids: ({"op": "sample", "circuit": ids.h2, "shots": 0}, (ZEROS,)),
        "bad_shots",
        ("[1, 1000000]", "got 0"),
    ),
    Bad(
        "sample shots missing",
        lambda ids: ({"op": "sample", "circuit": ids.h2}, (ZEROS,)),
        "bad_shots",
        ("[1, 1000000]", "got None"),
    ),
    Bad(
        "seed not an int",
        lambda ids: _est(ids, ZEROS, shots=100, seed="x"),
        "bad_request",
        ("seed", "an int or None", "'x'"),
    ),
]


# --- in-process -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def service() -> QpuService:
    return QpuService(seed=0)


@pytest.fixture(scope="module")
def ids(service: QpuService) -> Ids:
    h2_id = service.handle(request(h2_register_body())).body["circuit"]
    bare = service.handle(request({"op": "register", "qasm3": BITS_QASM})).body["circuit"]
    return Ids(h2_id, bare)


def test_register_reply_describes_the_circuit(service: QpuService, ids: Ids) -> None:
    reply = service.handle(request(h2_register_body()))
    assert reply.arrays == ()
    assert reply.body == {
        "circuit": ids.h2,
        "num_qubits": 2,
        "num_parameters": P,
        "parameters": ["t0", "t1", "t2", "t3"],
        "num_observables": 1,
        "estimable": True,
    }
    assert service.handle(request({"op": "describe", "circuit": ids.h2})).body == reply.body
    bare = service.handle(request({"op": "describe", "circuit": ids.bare})).body
    assert bare["num_qubits"] == 10 and bare["parameters"] == ["a"]
    assert bare["num_observables"] == 0 and bare["estimable"] is True


def test_registering_again_returns_the_same_id_and_compiles_nothing(
    service: QpuService, ids: Ids
) -> None:
    before = len(service.evaluator.registry)
    again = service.handle(request({**h2_register_body(), "observables": h2_registration()[1]}))
    assert again.body["circuit"] == ids.h2 and len(service.evaluator.registry) == before
    other = service.handle(request({**h2_register_body(), "observables": []}))
    assert other.body["circuit"] != ids.h2 and other.body["num_observables"] == 0


def test_exact_estimate_matches_the_in_process_evaluator(service: QpuService, ids: Ids) -> None:
    x = seeded_point(101)
    reply = service.handle(request({"op": "estimate", "circuit": ids.h2, "shots": None}, x))
    values, stds = reply.arrays
    assert reply.body == {"circuit": ids.h2, "shots": None}
    assert values.dtype == stds.dtype == np.float64 and values.shape == stds.shape == (1, 1)
    np.testing.assert_allclose(values, in_process_exact(x), rtol=0, atol=1e-9)
    assert not stds.any()
    batch = seeded_point(102, batch=5)
    values, _ = service.handle(request({"op": "estimate", "circuit": ids.h2}, batch)).arrays
    assert values.shape == (5, 1)
    np.testing.assert_allclose(values, in_process_exact(batch), rtol=0, atol=1e-9)


def test_shot_estimates_are_seeded_and_near_the_exact_value(service: QpuService, ids: Ids) -> None:
    x = seeded_point(103, batch=2)
    body = {"op": "estimate", "circuit": ids.h2, "shots": 4000, "seed": 9}
    a = service.handle(request(body, x))
    b = service.handle(request(body, x))
    assert a.body == {"circuit": ids.h2, "shots": 4000}
    np.testing.assert_array_equal(a.arrays[0], b.arrays[0])
    values, stds = a.arrays
    assert (stds > 0).all() and (stds < 0.05).all()
    assert (np.abs(values - in_process_exact(x)) < 6 * stds).all()


def test_sample_bits_follow_the_documented_order(service: QpuService, ids: Ids) -> None:
    x = np.array([[0.0], [np.pi]])
    reply = service.handle(request({"op": "sample", "circuit": ids.bare, "shots": 3}, x))
    assert reply.body == {"circuit": ids.bare, "shots": 3, "num_bits": 10, "bit_order": "big"}
    (bits,) = reply.arrays
    assert bits.dtype == np.uint8 and bits.shape == (2, 3, 2)
    got = unpack(bits, 10)
    want = np.zeros((2, 3, 10), dtype=np.uint8)
    want[:, :, [0, 8, 9]] = 1
    want[1, :, 1] = 1
    np.testing.assert_array_equal(got, want)


def test_qpy_registration_runs_the_same_circuit(service: QpuService, ids: Ids) -> None:
    source, observables = h2_registration()
    body = {"op": "register", "qpy": True, "observables": observables}
    reply = service.handle(request(body, qpy_bytes(source)))
    assert reply.body["circuit"] != ids.h2 and reply.body["parameters"] == ["t0", "t1", "t2", "t3"]
    x = seeded_point(104)
    values, _ = service.handle(
        request({"op": "estimate", "circuit": reply.body["circuit"]}, x)
    ).arrays
    np.testing.assert_allclose(values, in_process_exact(x), rtol=0, atol=1e-9)


def test_unknown_keys_and_a_session_header_are_ignored(service: QpuService, ids: Ids) -> None:
    x = seeded_point(105)
    body = {"op": "estimate", "circuit": ids.h2, "shots": None, "future": {"k": [1, 2]}}
    reply = service.handle(request(body, x, header={"session": 77, "later": "x"}))
    np.testing.assert_allclose(reply.arrays[0], in_process_exact(x), rtol=0, atol=1e-9)


def test_big_endian_parameters_are_float64_too(service: QpuService, ids: Ids) -> None:
    x = seeded_point(107, batch=2)
    reply = service.handle(request({"op": "estimate", "circuit": ids.h2}, x.astype(">f8")))
    np.testing.assert_allclose(reply.arrays[0], in_process_exact(x), rtol=0, atol=1e-9)


def test_evaluate_takes_a_request_read_already(service: QpuService, ids: Ids) -> None:
    x = seeded_point(106, batch=3)
    estimate = service.evaluate(Estimate(ids.h2), x)
    np.testing.assert_allclose(estimate.values, in_process_exact(x), rtol=0, atol=1e-9)
    sample = service.evaluate(Sample(ids.h2, shots=8, seed=1), x)
    assert sample.bits.shape == (3, 8, 1) and sample.num_bits == 2


def test_a_registration_that_fails_is_not_kept(service: QpuService) -> None:
    before = len(service.evaluator.registry)
    with pytest.raises(QpuError):
        service.handle(request({"op": "register", "qasm3": BITS_QASM, "observables": [[["Z", 1]]]}))
    assert len(service.evaluator.registry) == before


def test_service_takes_an_evaluator_or_a_seed() -> None:
    ev = QpuEvaluator(seed=1)
    assert QpuService(ev).evaluator is ev
    with pytest.raises(ValueError, match="not both"):
        QpuService(ev, seed=1)


@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_request_in_process(service: QpuService, ids: Ids, bad: Bad) -> None:
    body, arrays = bad.build(ids)
    with pytest.raises(QpuError) as info:
        service.handle(request(body, *arrays))
    assert info.value.type == bad.type, str(info.value)
    for needle in bad.needles:
        assert needle in str(info.value), (needle, str(info.value))


# --- through a real broker and a real worker process ----------------------------------


@pytest.fixture(scope="module")
def remote() -> Iterator[tuple[Client, Ids]]:
    """A broker, one ``python -m control_sim qpu`` worker, a client, and the two circuits."""
    with (
        LocalStack(StackSpec(qpu_workers=1)) as stack,
        Client(stack.endpoint, timeout=30) as client,
    ):
        h2_id = client.request(SERVICE, h2_register_body()).body["circuit"]
        bare = client.request(SERVICE, {"op": "register", "qasm3": BITS_QASM}).body["circuit"]
        yield client, Ids(h2_id, bare)


@pytest.mark.timeout(120)
def test_remote_register_estimate_and_sample(remote: tuple[Client, Ids]) -> None:
    client, ids = remote
    source, observables = h2_registration()
    reg = client.request(SERVICE, h2_register_body())
    assert reg.body["circuit"] == ids.h2 and reg.body["parameters"] == ["t0", "t1", "t2", "t3"]
    assert client.request(SERVICE, {"op": "describe", "circuit": ids.h2}).body == reg.body

    x = seeded_point(201)
    reply = client.request(SERVICE, {"op": "estimate", "circuit": ids.h2, "shots": None}, x)
    values, stds = reply.arrays
    assert values.dtype == np.float64 and values.shape == stds.shape == (1, 1)
    np.testing.assert_allclose(values, in_process_exact(x), rtol=0, atol=1e-9)

    batch = seeded_point(202, batch=6)
    values, _ = client.request(SERVICE, {"op": "estimate", "circuit": ids.h2}, batch).arrays
    assert values.shape == (6, 1)
    np.testing.assert_allclose(values, in_process_exact(batch), rtol=0, atol=1e-9)

    qpy_reg = client.request(
        SERVICE, {"op": "register", "qpy": True, "observables": observables}, qpy_bytes(source)
    )
    values, _ = client.request(
        SERVICE, {"op": "estimate", "circuit": qpy_reg.body["circuit"]}, x
    ).arrays
    np.testing.assert_allclose(values, in_process_exact(x), rtol=0, atol=1e-9)

    body = {"op": "sample", "circuit": ids.bare, "shots": 5, "seed": 3}
    sample = client.request(SERVICE, body, np.array([[np.pi], [0.0]]))
    assert sample.body == {"circuit": ids.bare, "shots": 5, "num_bits": 10, "bit_order": "big"}
    got = unpack(sample.arrays[0], sample.body["num_bits"])
    assert got.shape == (2, 5, 10)
    assert got[..., [0, 8, 9]].all() and got[0, :, 1].all() and not got[1, :, 1].any()
    assert not got[..., 2:8].any()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bad", BAD, ids=[b.name for b in BAD])
def test_bad_request_through_the_broker(remote: tuple[Client, Ids], bad: Bad) -> None:
    client, ids = remote
    body, arrays = bad.build(ids)
    with pytest.raises(RemoteError) as info:
        client.request(SERVICE, body, *arrays)
    err = info.value
    assert err.type == bad.type, err.message
    # typed: the class of control_sim.qpu.errors for its type, which this process imported
    assert isinstance(err, QpuError) and type(err).type == bad.type, type(err)
    assert err.service == SERVICE
    assert err.traceback is None, "an expected refusal carries no traceback"
    assert err.message.startswith(f"{SERVICE}: ")
    for needle in bad.needles:
        assert needle in err.message, (needle, err.message)


@pytest.mark.timeout(120)
def test_the_worker_still_serves_after_every_bad_request(remote: tuple[Client, Ids]) -> None:
    client, ids = remote
    for bad in BAD:
        body, arrays = bad.build(ids)
        with pytest.raises(RemoteError):
            client.request(SERVICE, body, *arrays)
    x = seeded_point(203, batch=2)
    values, _ = client.request(SERVICE, {"op": "estimate", "circuit": ids.h2}, x).arrays
    np.testing.assert_allclose(values, in_process_exact(x), rtol=0, atol=1e-9)


@pytest.mark.timeout(120)
def test_a_full_worker_refuses_one_more_circuit_typed() -> None:
    with (
        LocalStack(StackSpec(qpu_workers=1)) as stack,
        Client(stack.endpoint, timeout=30) as client,
    ):
        qpu = QpuClient(client, timeout=30)
        for k in range(MAX_CIRCUITS):
            qpu.register_qasm3(f"{RY} rz({k}) q;")
        with pytest.raises(TooManyCircuits) as info:
            qpu.register_qasm3(f"{RY} rz({MAX_CIRCUITS}) q;")
        assert info.value.type == "too_many_circuits" and info.value.service == SERVICE
        assert f"at most {MAX_CIRCUITS}" in info.value.message
        assert qpu.register_qasm3(f"{RY} rz(0) q;").num_parameters == 1  # known: still answers


def test_the_cli_module_imports_no_qiskit() -> None:
    code = (
        "import sys, control_sim.qpu.cli; print(sorted({'qiskit', 'qiskit_aer'} & {*sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_exits_0_on_a_signal(stack: Stack, sig: int) -> None:
    broker = stack.broker()
    proc = spawn(["-m", "control_sim", "qpu", "--connect", broker.endpoint, "--credit", "2"])
    stack.procs.append(proc)
    wait_for_line(proc, "READY", START_TIMEOUT_S)
    with Client(broker.endpoint, timeout=30) as client:
        reply = client.request(SERVICE, h2_register_body())
        assert reply.body["num_parameters"] == P
    assert stop_process(proc, sig) == 0
