"""Errors of the simulated QPU service: one base, :class:`QpuError`, one subclass per type.

Every error has a ``type`` (a short machine-readable string, stable on the wire) and a
message that says what was expected and what was got; ``str(error)`` is
``"[type] message"``. Each is a :class:`client.errors.RemoteError`: a worker's handler
that raises one answers with an error reply of that type, without a traceback, and a
client that has imported this module (:mod:`control_sim.qpu.client` does) raises the same
class when such a reply arrives. On the client, only ``type``, ``message``, ``service``
and ``traceback`` are set.

>>> e = BadShots(expected="an int in [1, 1000000] or None", got="0")
>>> e.type, str(e)
('bad_shots', '[bad_shots] shots: expected an int in [1, 1000000] or None, got 0')
"""

from __future__ import annotations

from typing import Final

from client.errors import RemoteError
from control_sim.errors import ControlSimError


def describe_value(value: object) -> str:
    """A bounded description of a wire value for an error message: its type and repr.

    >>> describe_value(None), describe_value([1, 2])
    ('nothing (nil)', 'list [1, 2]')
    """
    if value is None:
        return "nothing (nil)"
    return f"{type(value).__name__} {value!r:.60}"


class QpuError(ControlSimError, RemoteError):
    """Base of every error the QPU core raises; ``type`` says which, ``message`` says why."""

    type = "qpu_error"


class _ExpectedGot(QpuError):
    """A value was not what was expected: the message names it, the expectation and the value."""

    def __init__(self, what: str, *, expected: str, got: str) -> None:
        super().__init__(f"{what}: expected {expected}, got {got}")
        self.what = what
        self.expected = expected
        self.got = got


class UnknownCircuit(QpuError):
    """No circuit is registered under this id (never registered, or unregistered), or
    the id is not a str. ``registered`` is how many are, where the registry said."""

    type = "unknown_circuit"

    def __init__(self, circuit_id: object, *, registered: int | None = None) -> None:
        count = "" if registered is None else f" ({registered} registered)"
        if isinstance(circuit_id, str):
            got = f"{circuit_id!r:.80}"
        else:
            count += ", a str"
            got = describe_value(circuit_id)
        super().__init__(f"expected the id of a registered circuit{count}, got {got}")
        self.circuit_id = circuit_id
        self.registered = registered


class BadParameters(_ExpectedGot):
    """Parameter values of the wrong dtype, ndim, length or batch size, or not finite."""

    type = "bad_parameters"

    def __init__(self, *, expected: str, got: str) -> None:
        super().__init__("parameters", expected=expected, got=got)


class BadObservable(_ExpectedGot):
    """An observable whose labels, width or coefficients do not fit the circuit."""

    type = "bad_observable"

    def __init__(self, *, expected: str, got: str, index: int | None = None) -> None:
        what = "observables" if index is None else f"observable {index}"
        super().__init__(what, expected=expected, got=got)
        self.index = index


class InvalidQasm(QpuError):
    """The OpenQASM 3 text is not a program qiskit can load; ``detail`` carries the
    parser's own text when it is a parse error."""

    type = "invalid_qasm"

    def __init__(self, detail: str) -> None:
        super().__init__(f"expected an OpenQASM 3 program: {detail}")
        self.detail = detail

    @classmethod
    def not_text(cls, source: object) -> InvalidQasm:
        """For a ``qasm3`` that is not a str."""
        return cls(f"got {type(source).__name__}, not str")


class InvalidQpy(QpuError):
    """The bytes are not a qpy file holding exactly one circuit; ``detail`` says why."""

    type = "invalid_qpy"

    def __init__(self, detail: str) -> None:
        super().__init__(f"expected qpy bytes holding one QuantumCircuit: {detail}")
        self.detail = detail


class TooManyCircuits(QpuError):
    """The registry is full; unregister a circuit first."""

    type = "too_many_circuits"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"expected at most {limit} registered circuits, a new one would be number "
            f"{limit + 1}; unregister one first"
        )
        self.limit = limit


class BadShots(_ExpectedGot):
    """A shot count that is not a positive int within the limit (or None where allowed)."""

    type = "bad_shots"

    def __init__(self, *, expected: str, got: str) -> None:
        super().__init__("shots", expected=expected, got=got)


class UnsupportedCircuit(_ExpectedGot):
    """A circuit the service cannot run as asked: too wide, or measured mid-circuit."""

    type = "unsupported_circuit"

    def __init__(self, *, expected: str, got: str) -> None:
        super().__init__("circuit", expected=expected, got=got)


class BadRequest(_ExpectedGot):
    """Another request field (``mode``, ``seed``) is not what the evaluator accepts."""

    type = "bad_request"


class SimulationFailed(QpuError):
    """qiskit-aer ran but reported failure; ``status`` is its own text."""

    type = "simulation_failed"

    def __init__(self, status: str) -> None:
        super().__init__(f"expected a successful simulation, aer said: {status}")
        self.status = status


ERROR_TYPES: Final[tuple[str, ...]] = tuple(
    cls.type
    for cls in (
        UnknownCircuit,
        BadParameters,
        BadObservable,
        InvalidQasm,
        InvalidQpy,
        TooManyCircuits,
        BadShots,
        UnsupportedCircuit,
        BadRequest,
        SimulationFailed,
    )
)
"""Every ``type`` a :class:`QpuError` can have."""
