"""The ``qpu`` service's wire schema: every op, its request and reply, and the sample bits.

One home for what docs/QPU_SERVICE.md describes; a test checks the doc's tables against
:data:`OPS`. The service (:mod:`~control_sim.qpu.service`), continuous mode
(:mod:`~control_sim.qpu.continuous`), the client (:mod:`~control_sim.qpu.client`) and
sessions (:mod:`~control_sim.qpu.session`) build and read bodies through the types here,
and nowhere else spell a body's keys.

- A **request** type holds a request's body fields (a frozen dataclass); ``to_body()``
  builds the msgpack map, with its ``"op"``, and ``from_body()`` reads one, raising the
  service's typed errors (:mod:`~control_sim.qpu.errors`) for a bad field. Its array
  frames are named in ``FRAMES`` and read by :func:`read_params` and :func:`read_qpy`.
- A **reply** type holds a reply's body fields and its array frames; ``to_payload()``
  builds what the worker sends, and ``from_message()`` (or ``from_body()``, for a reply
  without frames) reads what a client received, raising :class:`client.ProtocolError`
  for a malformed reply.

Readers check a field's kind; what a value means (is the circuit registered, does the
parameter array fit it) is checked where it is used, by the registry and the evaluator.
This module imports neither qiskit nor aer.

>>> body = Estimate(circuit="3e2c", shots=None, seed=None).to_body()
>>> body
{'op': 'estimate', 'circuit': '3e2c', 'shots': None, 'seed': None}
>>> Estimate.from_body(body)
Estimate(circuit='3e2c', shots=None, seed=None)
>>> Estimate.from_body({**body, "shots": 1})
Traceback (most recent call last):
...
control_sim.qpu.errors.BadShots: [bad_shots] shots: expected an int in [2, 1000000], got 1
>>> OPS["sample"].reply_frames
('bits',)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Final, Literal, Self, TypeAlias

import numpy as np
from numpy.typing import NDArray

from client.errors import ProtocolError
from client.messages import Message, Payload
from control_sim.qpu.errors import (
    BadParameters,
    BadRequest,
    BadShots,
    InvalidQasm,
    UnknownCircuit,
    describe_value,
)

SEED_BOUND: Final = 2**31
"""Simulator seeds lie in ``[0, SEED_BOUND)``: aer's ``seed_simulator`` is a C++ int.
The evaluator, its clients and continuous runs all draw and wrap seeds in this range, so
one seed gives the same per-call seeds through the service as in-process."""

MAX_BATCH: Final = 4096
"""Most parameter vectors in one evaluation."""
MAX_SHOTS: Final = 1_000_000
"""Most shots per parameter vector (and per measurement basis in estimate mode)."""
MAX_SAMPLE_BYTES: Final = 32 * 1024 * 1024
"""Largest ``bits`` one sample reply may carry (batch x shots x bytes per shot)."""
MAX_WINDOW: Final = 1024
"""Most unacknowledged batches a continuous run may have."""
MAX_PERIOD_US: Final = 60_000_000
"""Longest pause between a continuous run's batches."""
DEFAULT_WINDOW: Final = 8

BIT_ORDER: Final = "big"
"""How a sample reply packs each shot: one big-endian integer of
:func:`bytes_per_shot` bytes, classical bit ``i`` being bit ``i % 8`` of byte
``n_bytes - 1 - i // 8`` (qiskit's ``BitArray`` layout, and its counts strings with bit 0
rightmost). ``np.unpackbits(bits, axis=-1, bitorder="big")[..., ::-1]`` puts bit ``i``
at index ``i``; :func:`to_ints` gives each shot as an integer."""

Mode: TypeAlias = Literal["estimate", "sample"]
RunEndReason: TypeAlias = Literal["stopped", "closed", "max_batches"]
MODES: Final[tuple[Mode, ...]] = ("estimate", "sample")
RUN_END_REASONS: Final[tuple[RunEndReason, ...]] = ("stopped", "closed", "max_batches")

PARAMS_FRAME: Final = "exactly one float64 array frame of shape (P,) or (B, P)"

Observable: TypeAlias = Sequence[tuple[str, float]] | Mapping[str, float]
"""One observable as a client gives it: ``[("XX", 0.18), ("ZI", -0.39), ...]`` or
``{"XX": 0.18, ...}``; qiskit Pauli labels (rightmost character on qubit 0), real
coefficients."""


# --- the sample layout ---------------------------------------------------------------


def bytes_per_shot(num_bits: int) -> int:
    """Bytes that hold one shot of ``num_bits`` classical bits (at least 1)."""
    return max(1, math.ceil(num_bits / 8))


def to_ints(bits: NDArray[np.uint8], num_bits: int) -> NDArray[np.uint64]:
    """Each shot of sample ``bits`` (uint8 ``(..., n_bytes)``, :data:`BIT_ORDER`) as an
    integer whose bit ``i`` is classical bit ``i``: uint64 ``(...)``, for at most 64 bits.

    >>> to_ints(np.array([[[0x02, 0x01]]], dtype=np.uint8), 10)
    array([[513]], dtype=uint64)
    """
    if num_bits > 64:
        raise ValueError(f"{num_bits} bits do not fit in uint64")
    n_bytes = bits.shape[-1]
    if n_bytes > 8:
        raise ValueError(f"{n_bytes} bytes per shot do not fit in uint64")
    padded = np.zeros((*bits.shape[:-1], 8), dtype=np.uint8)
    padded[..., 8 - n_bytes :] = bits
    return padded.view(">u8")[..., 0].astype(np.uint64)


# --- checks of one field, shared with the in-process evaluator -----------------------


def check_shots(shots: object, *, minimum: int) -> int:
    """``shots`` as an int in ``[minimum, MAX_SHOTS]``; raises :class:`BadShots`."""
    if isinstance(shots, bool) or not isinstance(shots, int | np.integer):
        got = "None" if shots is None else f"{shots!r:.40} ({type(shots).__name__})"
        raise BadShots(expected=f"an int in [{minimum}, {MAX_SHOTS}]", got=got)
    if not minimum <= shots <= MAX_SHOTS:
        raise BadShots(expected=f"an int in [{minimum}, {MAX_SHOTS}]", got=str(int(shots)))
    return int(shots)


def check_seed(seed: object) -> int | None:
    """``seed`` as an int, or None; raises :class:`BadRequest` for anything else."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise BadRequest("seed", expected="an int or None", got=f"{seed!r:.40}")
    return int(seed)


def check_circuit_id(circuit: object) -> str:
    """A request's ``circuit``: a str; anything else names no circuit."""
    if not isinstance(circuit, str):
        raise UnknownCircuit(circuit)
    return circuit


def _int_in(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if type(value) is not int or not low <= value <= high:
        raise BadRequest(key, expected=f"an int in [{low}, {high}]", got=f"{value!r:.64}")
    return value


# --- array frames of a request ---------------------------------------------------------


def read_params(arrays: Sequence[NDArray[Any]]) -> NDArray[np.float64]:
    """A request's parameter frame: exactly one float64 array, ``(P,)`` or ``(B, P)``.

    Raises :class:`BadParameters` otherwise; the evaluator checks the shape against the
    circuit. Big-endian float64 is accepted; a frame whose memory is not 8-byte aligned
    is copied.
    """
    if len(arrays) != 1:
        raise BadParameters(expected=PARAMS_FRAME, got=f"{len(arrays)} array frames")
    params = arrays[0]
    if params.dtype.kind != "f" or params.dtype.itemsize != 8:
        raise BadParameters(expected=PARAMS_FRAME, got=f"dtype {params.dtype} shape {params.shape}")
    if not params.flags.aligned:
        params = params.copy()
    return params


def params_frame(params: Any) -> NDArray[np.float64]:
    """The parameter frame a client sends: C-contiguous float64 (no copy if it is one)."""
    return np.ascontiguousarray(params, dtype=np.float64)


def read_qpy(arrays: Sequence[NDArray[Any]]) -> bytes:
    """The qpy bytes of a ``register`` with ``qpy: true``: its one uint8 ``(n,)`` frame."""
    _expect_frames(arrays, 1, "register with 'qpy'")
    data = arrays[0]
    if data.dtype != np.uint8 or data.ndim != 1:
        raise BadRequest(
            "register with 'qpy'",
            expected="one uint8 array frame of shape (n,) holding the qpy bytes",
            got=f"dtype {data.dtype} shape {data.shape}",
        )
    return data.tobytes()


def qpy_frame(data: bytes) -> NDArray[np.uint8]:
    """The frame a client sends the qpy bytes in."""
    return np.frombuffer(bytes(data), dtype=np.uint8)


def wire_observables(observables: Sequence[Observable]) -> list[list[list[Any]]]:
    """Observables in their wire form, ``[[[label, coeff], ...], ...]``, with plain str
    and float as msgpack carries them.

    >>> wire_observables([{"ZZ": 1}, [("XI", 0.5)]])
    [[['ZZ', 1.0]], [['XI', 0.5]]]
    """
    out = []
    for obs in observables:
        terms = obs.items() if isinstance(obs, Mapping) else obs
        out.append([[str(label), float(coeff)] for label, coeff in terms])
    return out


def _expect_frames(arrays: Sequence[NDArray[Any]], n: int, what: str) -> None:
    if len(arrays) != n:
        raise BadRequest(what, expected=f"{n} array frames", got=f"{len(arrays)}")


# --- requests ----------------------------------------------------------------------------


class _Fields:
    """What every request and reply type declares: its array frames, by name."""

    __slots__ = ()

    FRAMES: ClassVar[tuple[str, ...]] = ()
    """The array frames, in order. A request's are not fields (they are read with
    :func:`read_params` or :func:`read_qpy`); a reply's are."""

    @classmethod
    def body_fields(cls) -> tuple[str, ...]:
        """The keys of the body (besides a request's ``"op"``)."""
        return tuple(f.name for f in fields(cls) if f.name not in cls.FRAMES)  # type: ignore[arg-type]


class _Request(_Fields):
    """A request: its ``OP``, and its body built from its fields."""

    __slots__ = ()

    OP: ClassVar[str]

    def to_body(self) -> dict[str, Any]:
        """The request body: ``op`` and the fields."""
        return {"op": self.OP, **{name: getattr(self, name) for name in self.body_fields()}}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a request body: a request without fields reads none."""
        return cls()


@dataclass(frozen=True, slots=True)
class Register(_Request):
    """``register``: an OpenQASM 3 program (``qasm3``) or qpy bytes (``qpy: true`` and
    one uint8 frame), and its observables, ``[[[label, coeff], ...], ...]``."""

    OP: ClassVar = "register"
    FRAMES: ClassVar = ("qpy_bytes",)
    qasm3: str | None = None
    qpy: bool = False
    observables: Any = ()
    """``[[[label, coeff], ...], ...]``; read as sent, for the registry checks it
    (``bad_observable``)."""

    def __post_init__(self) -> None:
        if (self.qasm3 is None) == (not self.qpy):
            raise ValueError("a registration needs one of qasm3 and qpy")

    def to_body(self) -> dict[str, Any]:
        """The request body."""
        body: dict[str, Any] = {"op": self.OP}
        if self.qasm3 is not None:
            body["qasm3"] = self.qasm3
        if self.qpy:
            body["qpy"] = True
        body["observables"] = self.observables
        return body

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a register body; raises :class:`BadRequest` unless exactly one of
        ``qasm3`` and ``qpy`` is given, :class:`InvalidQasm` if ``qasm3`` is not text."""
        qasm3 = body.get("qasm3")
        qpy = bool(body.get("qpy"))
        if (qasm3 is None) == (not qpy):
            raise BadRequest(
                "register",
                expected="one of 'qasm3' (OpenQASM 3 text) and 'qpy': true (with one uint8 "
                "array frame holding the qpy bytes)",
                got="both" if qasm3 is not None else "neither",
            )
        if qasm3 is not None and not isinstance(qasm3, str):
            raise InvalidQasm.not_text(qasm3)
        observables = body.get("observables")
        return cls(qasm3=qasm3, qpy=qpy, observables=() if observables is None else observables)

    def source(self, arrays: Sequence[NDArray[Any]]) -> str | bytes:
        """The program: the ``qasm3`` text, or with ``qpy`` the bytes of its one frame.

        Raises :class:`BadRequest` for frames that do not fit: any with ``qasm3``, other
        than one uint8 ``(n,)`` frame with ``qpy``.
        """
        if self.qasm3 is None:
            return read_qpy(arrays)
        _expect_frames(arrays, 0, "register with 'qasm3'")
        return self.qasm3


@dataclass(frozen=True, slots=True)
class Describe(_Request):
    """``describe``: the summary of a registered circuit."""

    OP: ClassVar = "describe"
    circuit: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a describe body; raises :class:`UnknownCircuit` if ``circuit`` is no id."""
        return cls(circuit=check_circuit_id(body.get("circuit")))


@dataclass(frozen=True, slots=True)
class Estimate(_Request):
    """``estimate``: expectation values at the parameter frame, exact when ``shots`` is
    None, else ``shots`` (2 to :data:`MAX_SHOTS`) per measurement basis."""

    OP: ClassVar[Mode] = "estimate"
    FRAMES: ClassVar = ("params",)
    circuit: str
    shots: int | None = None
    seed: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read an estimate body; raises :class:`UnknownCircuit`, :class:`BadShots` or
        :class:`BadRequest` (``seed``)."""
        shots = body.get("shots")
        return cls(
            circuit=check_circuit_id(body.get("circuit")),
            shots=None if shots is None else check_shots(shots, minimum=2),
            seed=check_seed(body.get("seed")),
        )


@dataclass(frozen=True, slots=True)
class Sample(_Request):
    """``sample``: ``shots`` (1 to :data:`MAX_SHOTS`) outcomes per parameter vector."""

    OP: ClassVar[Mode] = "sample"
    FRAMES: ClassVar = ("params",)
    circuit: str
    shots: int
    seed: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a sample body; raises :class:`UnknownCircuit`, :class:`BadShots` or
        :class:`BadRequest` (``seed``)."""
        return cls(
            circuit=check_circuit_id(body.get("circuit")),
            shots=check_shots(body.get("shots"), minimum=1),
            seed=check_seed(body.get("seed")),
        )


Evaluation: TypeAlias = Estimate | Sample
"""A request that evaluates the circuit at a parameter frame."""


@dataclass(frozen=True, slots=True)
class Run(_Request):
    """``run`` (in a session): evaluate ``mode`` at the parameter frame batch after batch,
    at most ``window`` batches ahead of the last acknowledged one, ``period_us`` apart,
    until ``stop`` (or ``max_batches``)."""

    OP: ClassVar = "run"
    FRAMES: ClassVar = ("params",)
    circuit: str
    mode: Mode = "estimate"
    shots: int | None = None
    seed: int | None = None
    window: int = DEFAULT_WINDOW
    period_us: int = 0
    max_batches: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a run body; raises :class:`BadRequest` (``mode``, ``window``,
        ``period_us``, ``max_batches``, ``seed``), :class:`UnknownCircuit`,
        :class:`BadShots`."""
        mode = body.get("mode")
        if mode is None:
            mode = "estimate"
        if mode not in MODES:
            raise BadRequest("mode", expected="'estimate' or 'sample'", got=f"{mode!r:.64}")
        window = _int_in(body, "window", DEFAULT_WINDOW, 1, MAX_WINDOW)
        period_us = _int_in(body, "period_us", 0, 0, MAX_PERIOD_US)
        max_batches = body.get("max_batches")
        if max_batches is not None:
            max_batches = _int_in(body, "max_batches", 1, 1, 2**62)
        evaluation = (Estimate if mode == "estimate" else Sample).from_body(body)
        return cls(
            circuit=evaluation.circuit,
            mode=evaluation.OP,
            shots=evaluation.shots,
            seed=evaluation.seed,
            window=window,
            period_us=period_us,
            max_batches=max_batches,
        )

    def evaluation(self, seed: int | None) -> Evaluation:
        """The ``estimate`` or ``sample`` request one batch runs, with ``seed``."""
        if self.mode == "sample":
            if self.shots is None:  # not from from_body, which requires them
                raise BadShots(expected=f"an int in [1, {MAX_SHOTS}]", got="None")
            return Sample(self.circuit, self.shots, seed)
        return Estimate(self.circuit, self.shots, seed)


_BATCH: Final = "the highest batch consumed (int)"


def _batch_field(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and type(value) is not int:
        raise BadRequest(key, expected=_BATCH, got=f"{value!r:.64}")
    return value


@dataclass(frozen=True, slots=True)
class Update(_Request):
    """``update`` (in a session): new parameters for the run, of the run's shape; ``ack``
    (optional) acknowledges as :class:`Ack` does."""

    OP: ClassVar = "update"
    FRAMES: ClassVar = ("params",)
    ack: int | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read an update body; raises :class:`BadRequest` if ``ack`` is not an int."""
        return cls(ack=_batch_field(body, "ack"))


@dataclass(frozen=True, slots=True)
class Ack(_Request):
    """``ack`` (in a session): ``batch`` is the highest batch the client has consumed."""

    OP: ClassVar = "ack"
    batch: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read an ack body; raises :class:`BadRequest` if ``batch`` is missing or not an int."""
        batch = _batch_field(body, "batch")
        if batch is None:
            raise BadRequest("batch", expected=_BATCH, got="none")
        return cls(batch=batch)


@dataclass(frozen=True, slots=True)
class Stop(_Request):
    """``stop`` (in a session): end the run; its FINAL comes just before this reply."""

    OP: ClassVar = "stop"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a stop body (it has no fields)."""
        return cls()


@dataclass(frozen=True, slots=True)
class Close(_Request):
    """``close`` (in a session): end any run and forget the session's state."""

    OP: ClassVar = "close"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Read a close body (it has no fields)."""
        return cls()


# --- replies -----------------------------------------------------------------------------


def _reply_map(body: object, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ProtocolError(f"malformed qpu {what} reply: body {describe_value(body)}")
    return body


def _typed(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    """``body[key]`` if it is of ``kind`` (an int is never a bool); else ProtocolError."""
    value = body.get(key)
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _kinds(kind))
    if not ok:
        names = "/".join(k.__name__ for k in _kinds(kind))
        raise ProtocolError(
            f"malformed qpu {what} reply: {key}: expected {names}, got {describe_value(value)}"
        )
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _frames(message: Message, n: int, what: str) -> tuple[NDArray[Any], ...]:
    if len(message.arrays) != n:
        raise ProtocolError(f"qpu {what} replied with {len(message.arrays)} arrays, not {n}")
    return message.arrays


@dataclass(frozen=True, slots=True)
class CircuitInfo(_Fields):
    """The ``register`` and ``describe`` reply: the id to call, and the shapes.

    ``parameters[i]`` is the name bound to ``x[i]`` of every parameter vector.
    """

    circuit: str
    num_qubits: int
    num_parameters: int
    parameters: tuple[str, ...]
    num_observables: int
    estimable: bool
    """False for a circuit measured mid-circuit: it can be sampled, not estimated."""

    def __post_init__(self) -> None:
        if not self.circuit:
            raise ValueError("circuit id is empty")
        if min(self.num_qubits, self.num_parameters, self.num_observables) < 0:
            raise ValueError(f"negative count in {self!r}")
        if len(self.parameters) != self.num_parameters:
            raise ValueError(
                f"{len(self.parameters)} parameter names for {self.num_parameters} parameters"
            )

    def to_body(self) -> dict[str, Any]:
        """The reply body."""
        return {
            "circuit": self.circuit,
            "num_qubits": self.num_qubits,
            "num_parameters": self.num_parameters,
            "parameters": list(self.parameters),
            "num_observables": self.num_observables,
            "estimable": self.estimable,
        }

    @classmethod
    def from_body(cls, body: Any) -> Self:
        """Read a register or describe reply's body; raises ProtocolError if malformed."""
        b = _reply_map(body, "register")
        params = b.get("parameters")
        if not isinstance(params, list | tuple) or not all(isinstance(p, str) for p in params):
            raise ProtocolError(
                f"malformed qpu register reply: parameters: expected a list of names, "
                f"got {describe_value(params)}"
            )
        try:
            return cls(
                circuit=_typed(b, "circuit", str, "register"),
                num_qubits=_typed(b, "num_qubits", int, "register"),
                num_parameters=_typed(b, "num_parameters", int, "register"),
                parameters=tuple(params),
                num_observables=_typed(b, "num_observables", int, "register"),
                estimable=_typed(b, "estimable", bool, "register"),
            )
        except ValueError as exc:
            raise ProtocolError(f"malformed qpu register reply: {exc}") from None


@dataclass(frozen=True, eq=False, slots=True)
class EstimateReply(_Fields):
    """The ``estimate`` reply: ``values[b, k]`` is observable ``k`` at parameter row ``b``;
    ``stds`` its standard error (0 when exact). float64 ``(B, K)`` each."""

    FRAMES: ClassVar = ("values", "stds")
    circuit: str
    shots: int | None
    values: NDArray[np.float64]
    stds: NDArray[np.float64]

    def to_payload(self) -> Payload:
        """What the worker sends."""
        return Payload(
            body={"circuit": self.circuit, "shots": self.shots}, arrays=(self.values, self.stds)
        )

    @classmethod
    def from_message(cls, message: Message) -> Self:
        """Read an estimate reply; raises ProtocolError if malformed."""
        values, stds = cls.frames_of(message)
        body = _reply_map(message.body, "estimate")
        return cls(
            circuit=_typed(body, "circuit", str, "estimate"),
            shots=_typed(body, "shots", (int, type(None)), "estimate"),
            values=values,
            stds=stds,
        )

    @staticmethod
    def frames_of(message: Message) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Only the frames of an estimate reply, ``(values, stds)``, checked: what a hot
        loop that needs nothing else reads (:meth:`QpuClient.energy_fn`)."""
        arrays = message.arrays
        if len(arrays) != 2:
            raise ProtocolError(f"qpu estimate replied with {len(arrays)} arrays, not 2")
        values, stds = arrays
        if values.ndim != 2 or values.shape != stds.shape:
            raise ProtocolError(
                f"qpu estimate replied with shapes {values.shape} and {stds.shape}, "
                "expected two equal (B, K)"
            )
        if values.dtype != np.float64 or stds.dtype != np.float64:
            if values.dtype.kind != "f" or stds.dtype.kind != "f":
                raise ProtocolError(
                    f"qpu estimate replied with dtypes {values.dtype} and {stds.dtype}, not float64"
                )
            values, stds = values.astype(np.float64), stds.astype(np.float64)
        return values, stds

    def __repr__(self) -> str:
        how = "exact" if self.shots is None else f"{self.shots} shots per basis"
        b, k = self.values.shape
        return f"EstimateReply({self.circuit!r}, {b}x{k}, {how})"


@dataclass(frozen=True, eq=False, slots=True)
class SampleReply(_Fields):
    """The ``sample`` reply: uint8 ``bits`` of shape ``(B, shots, n_bytes)``, each shot
    ``n_bytes = bytes_per_shot(num_bits)`` bytes in :data:`BIT_ORDER`."""

    FRAMES: ClassVar = ("bits",)
    circuit: str
    shots: int
    num_bits: int
    bits: NDArray[np.uint8]
    bit_order: str = BIT_ORDER

    def __post_init__(self) -> None:
        want = (self.shots, bytes_per_shot(self.num_bits))
        if self.bits.dtype != np.uint8 or self.bits.ndim != 3 or self.bits.shape[1:] != want:
            raise ValueError(
                f"bits {self.bits.dtype}{list(self.bits.shape)} do not hold {self.shots} shots "
                f"of {self.num_bits} bits as uint8 (B, {want[0]}, {want[1]})"
            )
        if self.bit_order != BIT_ORDER:
            raise ValueError(f"bit_order {self.bit_order!r}, expected {BIT_ORDER!r}")

    def to_ints(self) -> NDArray[np.uint64]:
        """Each outcome as an integer (classical bit ``i`` is bit ``i``), ``(B, shots)``;
        for at most 64 bits (:func:`to_ints`)."""
        return to_ints(self.bits, self.num_bits)

    def to_payload(self) -> Payload:
        """What the worker sends."""
        body = {
            "circuit": self.circuit,
            "shots": self.shots,
            "num_bits": self.num_bits,
            "bit_order": self.bit_order,
        }
        return Payload(body=body, arrays=(self.bits,))

    @classmethod
    def from_message(cls, message: Message) -> Self:
        """Read a sample reply; raises ProtocolError if malformed."""
        (bits,) = _frames(message, 1, "sample")
        body = _reply_map(message.body, "sample")
        try:
            return cls(
                circuit=_typed(body, "circuit", str, "sample"),
                shots=_typed(body, "shots", int, "sample"),
                num_bits=_typed(body, "num_bits", int, "sample"),
                bits=bits,
                bit_order=_typed(body, "bit_order", str, "sample"),
            )
        except ValueError as exc:
            raise ProtocolError(f"malformed qpu sample reply: {exc}") from None

    def __repr__(self) -> str:
        b, shots, _ = self.bits.shape
        return f"SampleReply({self.circuit!r}, {b}x{shots} shots of {self.num_bits} bits)"


EvaluationReply: TypeAlias = EstimateReply | SampleReply


@dataclass(frozen=True, eq=False, slots=True)
class RunResult(_Fields):
    """One PARTIAL of a ``run``: the ``estimate`` or ``sample`` reply of one batch, and
    the ``version`` of the parameters that produced it and its ``batch`` index (from 0).
    Its body is the evaluation reply's plus ``version`` and ``batch``."""

    version: int
    batch: int
    reply: EvaluationReply

    @classmethod
    def body_fields(cls) -> tuple[str, ...]:
        """The keys a PARTIAL adds to the evaluation reply's body."""
        return ("version", "batch")

    @property
    def values(self) -> NDArray[np.float64]:
        """Estimate mode: expectation values, float64 (B, K)."""
        if not isinstance(self.reply, EstimateReply):
            raise TypeError("a sample run's results carry bits (.reply.bits), not values")
        return self.reply.values

    def to_payload(self) -> Payload:
        """What the worker streams."""
        inner = self.reply.to_payload()
        return Payload(
            body={**inner.body, "version": self.version, "batch": self.batch},
            arrays=inner.arrays,
        )

    @classmethod
    def from_message(cls, message: Message, mode: Mode) -> Self:
        """Read a PARTIAL of a run in ``mode``; raises ProtocolError if malformed."""
        body = _reply_map(message.body, "run")
        reply: EvaluationReply = (
            EstimateReply.from_message(message)
            if mode == "estimate"
            else SampleReply.from_message(message)
        )
        return cls(
            version=_typed(body, "version", int, "run"),
            batch=_typed(body, "batch", int, "run"),
            reply=reply,
        )


_SCALARS: Final[dict[str, type]] = {"int": int, "str": str, "bool": bool}


class _BodyReply(_Fields):
    """A reply with a body of scalar fields and no frames: ``to_body`` and ``from_body``
    from its fields and their annotations (``int``, ``str`` or ``bool``)."""

    __slots__ = ()

    def to_body(self) -> dict[str, Any]:
        """The reply body."""
        return {name: getattr(self, name) for name in self.body_fields()}

    @classmethod
    def from_body(cls, body: Any) -> Self:
        """Read the reply body; raises ProtocolError if malformed."""
        what = cls.__name__
        b = _reply_map(body, what)
        kinds = {f.name: _SCALARS[str(f.type)] for f in fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{name: _typed(b, name, kind, what) for name, kind in kinds.items()})
        except ValueError as exc:
            raise ProtocolError(f"malformed qpu {what} reply: {exc}") from None


@dataclass(frozen=True, slots=True)
class RunEnd(_BodyReply):
    """The FINAL of a ``run``: how many batches it sent, its last version, and why it
    ended (one of :data:`RUN_END_REASONS`)."""

    batches: int
    version: int
    reason: str

    def __post_init__(self) -> None:
        if self.reason not in RUN_END_REASONS:
            raise ValueError(f"reason {self.reason!r}, expected one of {RUN_END_REASONS}")


@dataclass(frozen=True, slots=True)
class Updated(_BodyReply):
    """The ``update`` reply: version ``version`` is used from batch ``batch`` on."""

    version: int
    batch: int


@dataclass(frozen=True, slots=True)
class Acked(_BodyReply):
    """The ``ack`` reply: the highest batch acknowledged so far."""

    batch: int


@dataclass(frozen=True, slots=True)
class Stopped(_BodyReply):
    """The ``stop`` reply: the run's batches and last version."""

    batches: int
    version: int


@dataclass(frozen=True, slots=True)
class Closed(_BodyReply):
    """The ``close`` reply."""

    closed: bool = True


# --- the ops -------------------------------------------------------------------------------


Request: TypeAlias = Register | Describe | Estimate | Sample | Run | Update | Ack | Stop | Close


@dataclass(frozen=True, slots=True)
class Op:
    """One op: its request type, its reply types, and whether it runs in a session."""

    name: str
    request: type[Request]
    replies: tuple[type[_Fields], ...]
    session: bool = False

    @property
    def body(self) -> tuple[str, ...]:
        """The request body's fields, besides ``op``."""
        return self.request.body_fields()

    @property
    def frames(self) -> tuple[str, ...]:
        """The request's array frames."""
        return self.request.FRAMES

    @property
    def reply(self) -> tuple[str, ...]:
        """The reply body's fields (of every reply, for ``run``: PARTIALs and FINAL)."""
        return tuple(dict.fromkeys(f for r in self.replies for f in r.body_fields()))

    @property
    def reply_frames(self) -> tuple[str, ...]:
        """The reply's array frames (a ``run``'s PARTIALs carry the evaluation's)."""
        return tuple(dict.fromkeys(f for r in self.replies for f in r.FRAMES))


OPS: Final[Mapping[str, Op]] = {
    op.name: op
    for op in (
        Op("register", Register, (CircuitInfo,)),
        Op("describe", Describe, (CircuitInfo,)),
        Op("estimate", Estimate, (EstimateReply,)),
        Op("sample", Sample, (SampleReply,)),
        Op("run", Run, (RunResult, RunEnd), session=True),
        Op("update", Update, (Updated,), session=True),
        Op("ack", Ack, (Acked,), session=True),
        Op("stop", Stop, (Stopped,), session=True),
        Op("close", Close, (Closed,), session=True),
    )
}
"""Every op, by name."""
SERVICE_OPS: Final[tuple[str, ...]] = tuple(n for n, op in OPS.items() if not op.session)
"""The ops outside sessions (:class:`~control_sim.qpu.service.QpuService`)."""
SESSION_OPS: Final[tuple[str, ...]] = tuple(n for n, op in OPS.items() if op.session)
"""The ops of continuous mode, in a session (:mod:`~control_sim.qpu.continuous`)."""

_SERVICE_OPS_TEXT: Final = ", ".join(repr(op) for op in SERVICE_OPS)


def request_op(body: object) -> tuple[str, Mapping[str, Any]]:
    """A service request's op and body; raises :class:`BadRequest` if the body is not a
    map or its ``op`` is missing or not one of :data:`SERVICE_OPS`."""
    if not isinstance(body, Mapping):
        raise BadRequest(
            "body",
            expected=f"a map with an 'op' key (one of {_SERVICE_OPS_TEXT})",
            got=describe_value(body),
        )
    op = body.get("op")
    if not isinstance(op, str) or op not in SERVICE_OPS:
        got = "no 'op' key" if op is None else describe_value(op)
        raise BadRequest("op", expected=f"one of {_SERVICE_OPS_TEXT}", got=got)
    return op, body


def session_op(body: object) -> str | None:
    """The session op (:data:`SESSION_OPS`) a request body names, or None for any other
    body, which is the service's to read (:func:`request_op`)."""
    op = body.get("op") if isinstance(body, Mapping) else None
    return op if isinstance(op, str) and op in SESSION_OPS else None
