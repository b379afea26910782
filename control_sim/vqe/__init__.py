"""The VQE driver of the parameter loop.

- :mod:`~control_sim.vqe.h2`: the H2 problem (Hamiltonian, ansatz, exact energy).
- :mod:`~control_sim.vqe.optimizers`: SPSA and COBYLA.
- :mod:`~control_sim.vqe.driver`: the loop, whatever answers the energy calls.
- :mod:`~control_sim.vqe.comparison`: the same VQE through the ``qpu`` service and
  in-process, side by side.
- :mod:`~control_sim.vqe.cli`: ``python -m control_sim vqe``.
"""
