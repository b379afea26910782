"""H2 in STO-3G at 0.735 Å on two qubits: the VQE benchmark problem of the parameter loop.

The Hamiltonian is the standard two-qubit one: the electronic structure problem from
PySCF in the STO-3G basis at a bond length of 0.735 Å, mapped to qubits with the parity
mapping and reduced from four qubits to two by the two-qubit (Z2-symmetry) reduction.
These are the coefficients of the Qiskit documentation and tutorials ("Simulating
molecules using VQE" in the Qiskit textbook, the qiskit-algorithms VQE tutorial) and of
the qiskit-algorithms test suite, whose reference ground-state energy is -1.85727503 Ha.
They are the **electronic** energy: the total energy of the molecule adds the constant
repulsion of the two nuclei, :data:`NUCLEAR_REPULSION_HA`.

Labels follow qiskit: the rightmost character acts on qubit 0.

>>> round(exact_ground_energy(), 6), round(exact_ground_energy(total=True), 6)
(-1.857275, -1.137306)
"""

from __future__ import annotations

from typing import Final

import numpy as np
from qiskit.quantum_info import SparsePauliOp  # type: ignore[import-untyped, unused-ignore]

BOND_LENGTH_ANGSTROM: Final = 0.735
BOHR_ANGSTROM: Final = 0.529177210903
"""The Bohr radius in Å (CODATA 2018)."""
NUCLEAR_REPULSION_HA: Final = 1.0 / (BOND_LENGTH_ANGSTROM / BOHR_ANGSTROM)
"""Coulomb repulsion of two protons 0.735 Å apart, in hartree (1/R with R in bohr): 0.71997."""

PAULI_TERMS: Final[tuple[tuple[str, float], ...]] = (
    ("II", -1.052373245772859),
    ("IZ", 0.39793742484318045),
    ("ZI", -0.39793742484318045),
    ("ZZ", -0.01128010425623538),
    ("XX", 0.18093119978423156),
)
"""The electronic Hamiltonian, in hartree, as (label, coefficient) pairs: the wire form."""

PUBLISHED_GROUND_ENERGY_HA: Final = -1.85727503
"""The electronic ground-state energy published with these coefficients (qiskit-algorithms)."""

CHEMICAL_ACCURACY_HA: Final = 1.6e-3
"""1 kcal/mol, the accuracy chemistry asks of an energy: 1.6 mHa."""

NUM_PARAMETERS: Final = 4
ANSATZ_QASM3: Final = """\
OPENQASM 3.0;
include "stdgates.inc";
// Hardware-efficient RY-CX-RY ansatz for the two-qubit H2 Hamiltonian. It prepares every
// real two-qubit state up to sign, and the ground state of a real Hamiltonian is real.
input float[64] t0;
input float[64] t1;
input float[64] t2;
input float[64] t3;
qubit[2] q;
ry(t0) q[0];
ry(t1) q[1];
cx q[0], q[1];
ry(t2) q[0];
ry(t3) q[1];
"""
"""The ansatz as OpenQASM 3; its parameters, in binding order, are t0, t1, t2, t3."""


def hamiltonian() -> SparsePauliOp:
    """The electronic Hamiltonian as a ``SparsePauliOp`` (hartree)."""
    return SparsePauliOp.from_list(list(PAULI_TERMS))


def exact_ground_energy(*, total: bool = False) -> float:
    """Lowest eigenvalue of :func:`hamiltonian` by dense diagonalisation, in hartree.

    ``total=True`` adds :data:`NUCLEAR_REPULSION_HA` (the molecule's total energy).
    """
    matrix = np.asarray(hamiltonian().to_matrix())
    electronic = float(np.linalg.eigvalsh(matrix)[0])
    return electronic + NUCLEAR_REPULSION_HA if total else electronic
