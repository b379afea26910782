"""The direct path into qiskit-aer: a compiled program run without ``AerSimulator.run``.

Everything in this module touches aer's **private** internals, and nothing else in
nearloop does. :class:`DirectRun` does, once per program, the part of
``AerBackend._execute_circuits_job`` that does not depend on the call, and per call only
fills aer's parameter table, sets shots and seed, and runs the C++ controller on the
calling thread, skipping ``AerSimulator.run``'s per-call assembly and job thread (about
0.1 ms instead of 0.35 ms for a 2-qubit exact estimate).

The internals it uses, as qiskit-aer 0.17 and 0.18 have them:

- ``AerSimulator._compile``, ``AerSimulator._target``, ``AerSimulator._execute_circuits``;
- ``qiskit_aer.backends.aer_compiler.assemble_circuits`` and ``generate_aer_config``;
- ``qiskit_aer.backends.controller_wrappers.AerConfig`` (``GLOBAL_PHASE_POS``,
  ``parameterizations``, ``shots``, ``seed_simulator``) and ``AerCircuit.circ_id``;
- the ``(op index, param index)`` slots of aer's parameter table, which ``_convert_binds``
  builds per call by walking every instruction and :func:`binding_plan` works out once.

:class:`~control_sim.qpu.evaluator.QpuEvaluator` (``engine="direct"``, its default)
builds a :class:`DirectRun` per program and compares its output with the public
``AerSimulator.run`` once (:func:`same_data`). If the internals are missing, raise, or
disagree, it logs a warning and uses the public path from then on, so a qiskit-aer
release that moves them costs speed, never correctness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from qiskit.circuit import Parameter, ParameterExpression, QuantumCircuit  # type: ignore[import-untyped, unused-ignore]
from qiskit_aer import AerSimulator

from control_sim.qpu.errors import SimulationFailed


class DirectRun:
    """Circuits compiled for aer's controller, run per call with a parameter batch.

    Raises whatever aer's internals raise when they are not as this module expects
    (``ImportError``, ``AttributeError``, ...): the caller falls back to the public path.
    """

    def __init__(
        self,
        sim: AerSimulator,
        circuits: list[QuantumCircuit],
        parameters: Sequence[Parameter],
        *,
        shots: int,
        memory: bool,
    ) -> None:
        from qiskit_aer.backends.aer_compiler import assemble_circuits, generate_aer_config
        from qiskit_aer.backends.controller_wrappers import AerConfig

        self._sim = sim
        compiled, self._noise = sim._compile(circuits)
        if sim._target is not None:
            native, idx_maps = assemble_circuits(compiled, sim.configuration().basis_gates)
        else:
            native, idx_maps = assemble_circuits(compiled)
        for i, circuit in enumerate(native):
            circuit.circ_id = i
        self._native = native
        self._config = generate_aer_config(compiled, sim.options, shots=shots, memory=memory)
        column = {p: j for j, p in enumerate(parameters)}
        self._plans = [
            binding_plan(c, idx_map, column, AerConfig.GLOBAL_PHASE_POS)
            for c, idx_map in zip(compiled, idx_maps, strict=True)
        ]
        self._has_parameters = any(plan.direct or plan.derived for plan in self._plans)

    def run(self, x: NDArray[np.float64], *, shots: int, seed: int) -> list[dict[str, Any]]:
        """Run every circuit at each row of ``x`` (float64 ``(batch, n_params)``): one data
        dict per experiment, circuit-major, as ``AerSimulator.run(...).result().data(i)``.

        Raises :class:`SimulationFailed` when aer reports a failure.
        """
        config = self._config
        if self._has_parameters:
            columns = x.T
            config.parameterizations = [plan.table(columns, x) for plan in self._plans]
        config.shots = shots
        config.seed_simulator = seed
        output = self._sim._execute_circuits(self._native, self._noise, config)
        if not isinstance(output, dict) or not output.get("success", False):
            status = output.get("status", output) if isinstance(output, dict) else output
            raise SimulationFailed(str(status)[:1000])
        return [r["data"] for r in output["results"]]


@dataclass(frozen=True)
class BindingPlan:
    """Where each parameter value goes in one aer circuit: ``(op index, param index)`` slots.

    ``direct`` slots take a column of ``x`` as is; ``derived`` slots hold an expression of
    parameters (``2*a + b``, a global phase), evaluated per row.
    """

    direct: list[tuple[tuple[int, int], int]]
    derived: list[tuple[tuple[int, int], Any, dict[Parameter, int]]]

    def table(self, columns: NDArray[np.float64], x: NDArray[np.float64]) -> list[list[Any]]:
        """aer's parameter table for the batch ``x`` (``columns`` is ``x.T``)."""
        table: list[list[Any]] = [[slot, columns[j]] for slot, j in self.direct]
        for slot, expr, used in self.derived:
            values = [float(expr.bind({p: row[j] for p, j in used.items()})) for row in x]
            table.append([slot, values])
        return table


def binding_plan(
    circuit: QuantumCircuit,
    idx_map: list[int] | None,
    column: dict[Parameter, int],
    global_phase_pos: int,
) -> BindingPlan:
    """aer's ``_convert_circuit_binds`` walk, done once and remembered."""
    plan = BindingPlan([], [])

    def add(slot: tuple[int, int], param: Any) -> None:
        if param in column:
            plan.direct.append((slot, column[param]))
        elif isinstance(param, ParameterExpression) and param.parameters:
            plan.derived.append((slot, param, {p: column[p] for p in param.parameters}))

    add((global_phase_pos, -1), circuit.global_phase)
    for index, instruction in enumerate(circuit.data):
        if instruction.operation.is_parameterized():
            for position, param in enumerate(instruction.operation.params):
                add((idx_map[index] if idx_map else index, position), param)
    return plan


def same_data(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Whether two runs' data dicts agree: the same keys, floats within 1e-9, the rest equal."""
    if len(a) != len(b):
        return False
    for da, db in zip(a, b, strict=True):
        if da.keys() != db.keys():
            return False
        for key, va in da.items():
            vb = db[key]
            if isinstance(va, float | complex | np.floating):
                if not np.isclose(va, vb, rtol=1e-9, atol=1e-12):
                    return False
            elif va != vb:
                return False
    return True
