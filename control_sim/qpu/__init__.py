"""The simulated QPU: the ``qpu`` service on qiskit-aer, its client, and continuous mode.

- :mod:`~control_sim.qpu.schema`: the service's ops, their requests and replies, and the
  bit layout of samples (one home; docs/QPU_SERVICE.md is checked against it).
- :mod:`~control_sim.qpu.errors`: the error types a refusal carries.
- :mod:`~control_sim.qpu.circuits`: registered circuits, transpiled once.
- :mod:`~control_sim.qpu.evaluator`: estimate and sample on qiskit-aer.
- :mod:`~control_sim.qpu.aer_direct`: the fast path through aer's private internals
  (the only module that touches them), checked against the public one.
- :mod:`~control_sim.qpu.service` and :mod:`~control_sim.qpu.continuous`: the worker side.
- :mod:`~control_sim.qpu.client` and :mod:`~control_sim.qpu.session`: the optimizer's side,
  which needs neither qiskit nor aer.
- :mod:`~control_sim.qpu.cli`: ``python -m control_sim qpu``, one worker process.
"""
