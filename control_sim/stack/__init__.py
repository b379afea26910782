"""Processes: the local stack (a broker and its workers as subprocesses) and the demo.

- :mod:`~control_sim.stack.processes`: start servers, wait for READY, always tear down.
- :mod:`~control_sim.stack.local_stack`: a broker, decoder and QPU workers on ipc://.
- :mod:`~control_sim.stack.demo`: both loops end to end, with a summary.
- :mod:`~control_sim.stack.cli`: ``python -m control_sim demo``.
"""
