"""``python -m control_sim``: the simulated classical control runtime.

- ``qec``: stream syndrome blocks to a decoder service and measure reaction time, backlog
  and logical error rate. Without ``--connect`` it starts its own local stack.
- ``demo``: both loops end to end on a local stack (or ``--connect``), with a summary.
- ``qpu``: serve the ``qpu`` service (docs/QPU_SERVICE.md) as one worker of a broker.
- ``vqe``: H2 VQE through the ``qpu`` service, beside the same loop in-process: energy,
  error vs exact, loop latency. Without ``--connect`` it starts its own local stack.

Subcommands import what they need only when they run, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from control_sim.qec.cli import add_qec_arguments, run_qec_command
from control_sim.qpu.cli import add_qpu_arguments, run_qpu
from control_sim.stack.cli import add_demo_arguments, run_demo_command
from control_sim.vqe.cli import add_vqe_arguments, run_vqe_command


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m control_sim`` parser."""
    parser = argparse.ArgumentParser(
        prog="python -m control_sim", description="nearloop's simulated control runtime."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_qec_arguments(
        commands.add_parser(
            "qec",
            help="stream syndrome blocks to decoder workers; reaction time, backlog, LER",
            description="A QEC memory experiment streamed through nearloop's decoders.",
        )
    )
    add_demo_arguments(
        commands.add_parser(
            "demo",
            help="both loops end to end: VQE through the qpu service and a QEC stream",
            description="Start a local stack (broker, 2 decoder workers, 1 QPU worker) and "
            "run H2 VQE and a surface-code syndrome stream through it.",
        )
    )
    add_qpu_arguments(
        commands.add_parser(
            "qpu",
            help="serve the qpu service: registered circuits evaluated on qiskit-aer",
            description="A QPU worker: estimates and samples registered circuits on qiskit-aer.",
        )
    )
    add_vqe_arguments(
        commands.add_parser(
            "vqe",
            help="H2 VQE through the qpu service, beside the same loop in-process",
            description="VQE on H2 through nearloop's qpu service: energy, error vs exact "
            "diagonalization, and loop latency through the broker against in-process.",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from control_sim.errors import ControlSimError
    from control_sim.stack.processes import interrupts_raise

    try:
        with interrupts_raise():
            if args.command == "qec":
                return run_qec_command(parser, args)
            if args.command == "qpu":
                return run_qpu(args)
            if args.command == "demo":
                return run_demo_command(parser, args)
            if args.command == "vqe":
                return run_vqe_command(parser, args)
    except ControlSimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; local stack stopped", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")
