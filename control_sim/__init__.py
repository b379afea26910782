"""The simulated classical control runtime, one subpackage per role.

- :mod:`control_sim.qpu`: the simulated QPU, the ``qpu`` service on qiskit-aer (its
  schema, evaluator, worker side, client side and continuous mode).
- :mod:`control_sim.vqe`: the VQE driver of the parameter loop (H2, SPSA/COBYLA), and the
  comparison of the loop through the service with the same loop in-process.
- :mod:`control_sim.qec`: the syndrome loop's producer (codes, syndrome sources, pacing,
  the Pauli frame, a measured stream).
- :mod:`control_sim.stack`: processes, the local stack of a broker and its workers, and
  the demo.

``python -m control_sim demo|qpu|vqe|qec`` (:mod:`control_sim.cli`) runs them.
"""
