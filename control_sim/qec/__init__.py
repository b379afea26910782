"""The syndrome loop's producer side: codes, syndrome sources, pacing, the Pauli frame.

- :mod:`~control_sim.qec.codes`: memory-experiment circuits and detector error models.
- :mod:`~control_sim.qec.source`: seeded syndrome sources (stim, or
  :mod:`~control_sim.qec.aer_repetition` on qiskit-aer).
- :mod:`~control_sim.qec.pacing`: the clock that emits a block every period.
- :mod:`~control_sim.qec.pauli_frame`: the logical frame that counts logical errors.
- :mod:`~control_sim.qec.run`: a stream to a decoder service, end to end, measured.
- :mod:`~control_sim.qec.cli`: ``python -m control_sim qec``.

A block's wire format is :mod:`client.syndrome_block`, shared with the decoders.
"""
