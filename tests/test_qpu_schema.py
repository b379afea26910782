"""The ``qpu`` service's schema: docs/QPU_SERVICE.md against it, its requests and replies,
the sample bit layout, and QPU errors arriving typed at a client.

The broker tests run a real ``python -m broker`` and a real :class:`client.Worker` (in a
thread of this process) that answers as a broken or refusing ``qpu`` service would.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from client import Client, Message, Payload, ProtocolError, RemoteError, Worker
from client.errors import remote_error
from client.wire import Header
from control_sim.qpu import errors as qpu_errors
from control_sim.qpu import schema
from control_sim.qpu.client import QpuClient
from control_sim.qpu.errors import ERROR_TYPES, QpuError
from control_sim.qpu.names import DEFAULT_SERVICE
from control_sim.qpu.schema import (
    OPS,
    CircuitInfo,
    EstimateReply,
    Register,
    RunEnd,
    RunResult,
    SampleReply,
    Updated,
)
from control_sim.qpu.session import QpuSession
from tests.conftest import ROOT, Stack, wait_for_workers

pytestmark = pytest.mark.timeout(60)

DOC = ROOT / "docs" / "QPU_SERVICE.md"
FIELD = re.compile(r"`([A-Za-z_]\w*)`:")
"""How the doc's tables write a body field or an array frame: `name`: type."""


# --- the doc against the schema ---------------------------------------------------------


@dataclass(frozen=True)
class DocOp:
    body: frozenset[str]
    frames: frozenset[str]
    reply: frozenset[str]
    reply_frames: frozenset[str]


def _cells(row: str) -> list[str]:
    """A markdown table row's cells; ``\\|`` inside a cell is not a separator."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def _tables(text: str, first_header: str) -> list[list[list[str]]]:
    """Every table whose header row starts with ``first_header``, as rows of cells."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and _cells(line)[0].startswith(first_header):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(_cells(row))
            tables.append(rows)
    return tables


def doc_ops(text: str) -> dict[str, DocOp]:
    """The op tables of docs/QPU_SERVICE.md: per op, the fields each column names."""
    ops: dict[str, DocOp] = {}
    for table in _tables(text, "op"):
        for cells in table:
            assert len(cells) == 5, cells
            name = re.fullmatch(r"`(\w+)`", cells[0])
            assert name, cells[0]
            assert name[1] not in ops, f"op {name[1]} documented twice"
            body, frames, reply, reply_frames = (frozenset(FIELD.findall(c)) for c in cells[1:])
            ops[name[1]] = DocOp(body, frames, reply, reply_frames)
    return ops


def test_the_doc_names_every_op_and_field_the_schema_has() -> None:
    documented = doc_ops(DOC.read_text())
    assert set(documented) == set(OPS)
    assert sum(len(d.body) + len(d.reply) for d in documented.values()) > 30  # parsed
    for name, op in OPS.items():
        doc = documented[name]
        assert doc.body == set(op.body), (name, "body")
        assert doc.frames == set(op.frames), (name, "array frames")
        assert doc.reply == set(op.reply), (name, "reply body")
        assert doc.reply_frames == set(op.reply_frames), (name, "reply array frames")


def test_the_doc_parser_sees_a_drift() -> None:
    text = DOC.read_text()
    drifted = text.replace("`seed`: nil or int | `params`", "`rng_seed`: nil or int | `params`")
    assert drifted != text
    assert doc_ops(drifted)["estimate"].body != set(OPS["estimate"].body)


def test_the_doc_lists_every_error_type_with_its_class() -> None:
    (table,) = _tables(DOC.read_text(), "`error.type`")
    classes = {re.sub(r"\W", "", c[0]): c[1].strip("`") for c in table}
    for wire_type in ERROR_TYPES:
        cls = type(remote_error("qpu", wire_type, "m"))
        assert issubclass(cls, QpuError) and classes[wire_type] == cls.__name__, wire_type


def test_session_and_service_ops_are_told_apart() -> None:
    assert schema.SERVICE_OPS == ("register", "describe", "estimate", "sample")
    assert schema.SESSION_OPS == ("run", "update", "ack", "stop", "close")
    assert OPS["estimate"].frames == ("params",) and OPS["sample"].reply_frames == ("bits",)


# --- requests -----------------------------------------------------------------------------

REQUESTS: list[Any] = [
    schema.Register(qasm3="OPENQASM 3.0;", observables=[[["Z", 1.0]]]),
    schema.Register(qpy=True),
    schema.Describe("c1"),
    schema.Estimate("c1"),
    schema.Estimate("c1", shots=100, seed=7),
    schema.Sample("c1", shots=5),
    schema.Run("c1", mode="sample", shots=10, seed=3, window=4, period_us=50, max_batches=9),
    schema.Update(ack=3),
    schema.Ack(batch=2),
    schema.Stop(),
    schema.Close(),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_each_request_reads_back_what_it_builds(request_: Any) -> None:
    body = request_.to_body()
    op = OPS[body["op"]]
    assert op.request is type(request_)
    assert set(body) - {"op"} <= set(op.body)
    if not isinstance(request_, Register):  # a register leaves out the source it lacks
        assert set(body) - {"op"} == set(op.body)
    assert type(request_).from_body(body) == request_


@pytest.mark.parametrize(
    ("op", "body", "kind", "needle"),
    [
        ("estimate", {"circuit": 7}, "unknown_circuit", "int 7"),
        ("estimate", {"circuit": "c", "shots": True}, "bad_shots", "True"),
        ("sample", {"circuit": "c"}, "bad_shots", "got None"),
        ("estimate", {"circuit": "c", "seed": 1.5}, "bad_request", "seed"),
        ("register", {"qasm3": "x", "qpy": True}, "bad_request", "both"),
        ("register", {"qasm3": b"x"}, "invalid_qasm", "bytes, not str"),
        ("run", {"circuit": "c", "mode": "exact"}, "bad_request", "'exact'"),
        ("run", {"circuit": "c", "window": 0}, "bad_request", "window"),
        ("run", {"circuit": "c", "period_us": -1}, "bad_request", "period_us"),
        ("run", {"circuit": "c", "mode": "sample"}, "bad_shots", "got None"),
        ("update", {"ack": "3"}, "bad_request", "'3'"),
        ("ack", {}, "bad_request", "batch"),
        ("ack", {"batch": 1.0}, "bad_request", "1.0"),
    ],
)
def test_a_bad_field_is_refused_with_its_typed_error(
    op: str, body: dict[str, Any], kind: str, needle: str
) -> None:
    with pytest.raises(QpuError) as info:
        OPS[op].request.from_body(body)
    assert info.value.type == kind and needle in info.value.message, info.value


def test_params_and_qpy_frames_are_read_strictly() -> None:
    x = np.arange(8.0).reshape(2, 4)
    assert schema.read_params([x]) is x
    big = x.astype(">f8")
    assert schema.read_params([big]).dtype == ">f8"
    for arrays in ([], [x, x], [x.astype(np.float32)]):
        with pytest.raises(QpuError, match="exactly one float64"):
            schema.read_params(arrays)
    assert schema.read_qpy([schema.qpy_frame(b"QISKIT")]) == b"QISKIT"
    with pytest.raises(QpuError, match="uint8"):
        schema.read_qpy([np.zeros(3)])


# --- replies --------------------------------------------------------------------------------


def message(body: Any, *arrays: npt.NDArray[Any]) -> Message:
    return Message(Header(id=1, kind="reply", body=body), arrays)


SUMMARY = CircuitInfo("c1", 2, 1, ("a",), 1, True)


def test_replies_read_back_what_they_build() -> None:
    assert CircuitInfo.from_body(SUMMARY.to_body()) == SUMMARY
    values = np.array([[0.5, 1.0]])
    est = EstimateReply("c1", None, values, np.zeros((1, 2)))
    got = EstimateReply.from_message(_received(est.to_payload()))
    assert got.circuit == "c1" and got.shots is None
    np.testing.assert_array_equal(got.values, values)
    bits = np.zeros((2, 3, 2), dtype=np.uint8)
    sample = SampleReply("c1", 3, 10, bits)
    back = SampleReply.from_message(_received(sample.to_payload()))
    assert back.num_bits == 10 and back.shots == 3 and back.bits is bits
    partial = RunResult(4, 17, est).to_payload()
    run = RunResult.from_message(_received(partial), "estimate")
    assert (run.version, run.batch) == (4, 17) and run.values[0, 1] == 1.0
    assert RunEnd.from_body({"batches": 3, "version": 1, "reason": "stopped"}).batches == 3


def _received(p: Payload) -> Message:
    return message(p.body, *p.arrays)


F8 = np.zeros((1, 1))
U8 = np.zeros((1, 1, 1), np.uint8)
EST = {"circuit": "c", "shots": None}
SAMPLE = {"circuit": "c", "shots": 1, "num_bits": 2, "bit_order": "big"}


def _summary(**change: Any) -> Callable[[], object]:
    return lambda: CircuitInfo.from_body({**SUMMARY.to_body(), **change})


def _estimate(body: Any, *arrays: npt.NDArray[Any]) -> Callable[[], object]:
    return lambda: EstimateReply.from_message(message(body, *arrays))


def _sample(body: Any, *arrays: npt.NDArray[Any]) -> Callable[[], object]:
    return lambda: SampleReply.from_message(message(body, *arrays))


MALFORMED: list[tuple[str, Callable[[], object]]] = [
    ("summary not a map", lambda: CircuitInfo.from_body([1])),
    ("summary without id", _summary(circuit=None)),
    ("summary bool for int", _summary(num_qubits=True)),
    ("summary names vs count", _summary(parameters=[])),
    ("estimate one array", _estimate(EST, F8)),
    ("estimate shapes", _estimate(EST, F8, np.zeros(2))),
    ("estimate ints", _estimate(EST, F8.astype(int), F8.astype(int))),
    ("estimate shots a str", _estimate({**EST, "shots": "9"}, F8, F8)),
    ("estimate body a list", _estimate([], F8, F8)),
    ("sample wrong dtype", _sample(SAMPLE, U8.astype(np.int8))),
    ("sample wrong width", _sample({**SAMPLE, "num_bits": 9}, U8)),
    ("sample little-endian", _sample({**SAMPLE, "bit_order": "little"}, U8)),
    ("sample no bits", _sample(SAMPLE)),
    ("run without version", lambda: RunResult.from_message(message(EST, F8, F8), "estimate")),
    ("update reply", lambda: Updated.from_body({"version": "1", "batch": 0})),
    ("run end reason", lambda: RunEnd.from_body({"batches": 1, "version": 0, "reason": "x"})),
    ("close reply", lambda: schema.Closed.from_body({"closed": 1})),
]


@pytest.mark.parametrize("call", [c for _, c in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_a_malformed_reply_raises_protocol_error(call: Callable[[], object]) -> None:
    with pytest.raises(ProtocolError, match="qpu"):
        call()


# --- the sample bit layout ------------------------------------------------------------------


@pytest.mark.parametrize("num_bits", [1, 7, 8, 9, 16, 33, 63, 64])
def test_to_ints_puts_classical_bit_i_at_bit_i(num_bits: int) -> None:
    rng = np.random.default_rng(num_bits)
    n_bytes = schema.bytes_per_shot(num_bits)
    ints = [int(v) for v in rng.integers(0, 2**num_bits, 12, dtype=np.uint64)]
    bits = np.array([list(v.to_bytes(n_bytes, "big")) for v in ints], dtype=np.uint8).reshape(
        3, 4, n_bytes
    )
    got = schema.to_ints(bits, num_bits)
    assert got.dtype == np.uint64 and got.shape == (3, 4)
    assert [int(v) for v in got.ravel()] == ints
    # the same layout as the doc's unpackbits recipe: bit i at index i
    unpacked = np.unpackbits(bits, axis=-1, bitorder="big")[..., ::-1][..., :num_bits]
    for (b, s), v in np.ndenumerate(got):
        assert [(int(v) >> i) & 1 for i in range(num_bits)] == unpacked[b, s].tolist()
    sample = SampleReply("c", 4, num_bits, bits)
    np.testing.assert_array_equal(sample.to_ints(), got)


def test_to_ints_refuses_more_than_64_bits() -> None:
    with pytest.raises(ValueError, match="65 bits"):
        schema.to_ints(np.zeros((1, 1, 9), np.uint8), 65)


# --- errors arrive typed --------------------------------------------------------------------


@pytest.mark.parametrize("module", ["control_sim.qpu.client", "control_sim.qpu.session"])
def test_importing_the_client_side_alone_types_every_qpu_error(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "from client.errors import remote_error\n"
        "from control_sim.qpu.errors import ERROR_TYPES, QpuError\n"
        "bad = [t for t in ERROR_TYPES if not isinstance(remote_error('qpu', t, 'm'), QpuError)]\n"
        "print(bad, sorted({'qiskit', 'qiskit_aer'} & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0 and out.stdout.strip() == "[] []", out


def _instances() -> dict[str, QpuError]:
    e = qpu_errors
    made: list[QpuError] = [
        e.UnknownCircuit("c9", registered=2),
        e.BadParameters(expected="shape (4,)", got="shape (3,)"),
        e.BadObservable(expected="a label of length 2", got="'ZZZ'", index=0),
        e.InvalidQasm("line 1"),
        e.InvalidQpy("not qpy"),
        e.TooManyCircuits(64),
        e.BadShots(expected="an int", got="0"),
        e.UnsupportedCircuit(expected="at most 24 qubits", got="25"),
        e.BadRequest("op", expected="one of 'estimate'", got="'x'"),
        e.SimulationFailed("aer said no"),
    ]
    return {err.type: err for err in made}


Handler = Callable[[Worker, Message], Any]
"""A fake ``qpu`` handler: it gets its Worker too, to defer replies."""


@pytest.fixture
def fake_qpu(stack: Stack) -> Iterator[Callable[[Handler], str]]:
    """A broker and, per call, a real ``qpu`` Worker serving ``handler`` from a thread of
    this process; the call returns the broker's endpoint."""
    started: list[tuple[Worker, threading.Thread]] = []
    broker = stack.broker("ipc")

    def start(handler: Handler) -> str:
        worker = Worker(broker.endpoint, DEFAULT_SERVICE, lambda m: handler(worker, m))
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        started.append((worker, thread))
        wait_for_workers(broker.endpoint, DEFAULT_SERVICE, len(started))
        return broker.endpoint

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the worker thread did not stop"


def test_every_qpu_error_arrives_as_its_class_through_a_broker(
    fake_qpu: Callable[[Handler], str],
) -> None:
    errors = _instances()
    assert set(errors) == set(ERROR_TYPES)

    def refuse(worker: Worker, m: Message) -> Any:
        raise errors[m.body["raise"]]

    endpoint = fake_qpu(refuse)
    with Client(endpoint, timeout=10) as c:
        for wire_type, sent in errors.items():
            with pytest.raises(RemoteError) as info:
                c.request("qpu", {"raise": wire_type})
            got = info.value
            assert type(got) is type(sent) and isinstance(got, QpuError), wire_type
            assert got.type == wire_type and got.service == "qpu"
            assert got.message == f"qpu: {sent}" and got.traceback is None


def test_qpu_client_refuses_malformed_replies(fake_qpu: Callable[[Handler], str]) -> None:
    replies = {
        "register": Payload(body={"circuit": "c", "num_qubits": 1}),
        "describe": Payload(body="not a map"),
        "estimate": Payload(body={"circuit": "c", "shots": None}, arrays=(np.zeros(3),)),
        "sample": Payload(body={"circuit": "c", "shots": 2, "num_bits": 1, "bit_order": "big"}),
    }
    endpoint = fake_qpu(lambda worker, m: replies[m.body["op"]])
    with Client(endpoint, timeout=10) as c:
        qpu = QpuClient(c, timeout=10)
        calls: list[Callable[[], object]] = [
            lambda: qpu.register_qasm3("OPENQASM 3.0;"),
            lambda: qpu.register_qpy(b"x"),
            lambda: qpu.describe("c"),
            lambda: qpu.estimate("c", np.zeros(1)),
            lambda: qpu.energy_fn("c")(np.zeros((1, 1))),
            lambda: qpu.sample("c", np.zeros(1), shots=2),
        ]
        for call in calls:
            with pytest.raises(ProtocolError, match="qpu"):
                call()


def test_a_session_refuses_a_malformed_partial(fake_qpu: Callable[[Handler], str]) -> None:
    def handle(worker: Worker, m: Message) -> Any:
        if m.body["op"] != "run":
            return {"closed": True}
        reply = worker.defer()
        reply.partial(Payload(body={**EST, "batch": 0}, arrays=(F8, F8)))  # no version
        reply.finish({"batches": 1, "version": 0, "reason": "stopped"})
        return reply

    endpoint = fake_qpu(handle)
    with Client(endpoint, timeout=10) as c, QpuSession(c) as qs:
        run = qs.run("c", np.zeros(1))
        with pytest.raises(ProtocolError, match="qpu run reply: version"):
            run.next()
