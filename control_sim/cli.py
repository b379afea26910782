"""``python -m control_sim``: the simulated classical control runtime.

- ``qec``: stream syndrome blocks to a decoder service and measure reaction time, backlog
  and logical error rate. Without ``--connect`` it starts its own local stack.
- ``demo``: both loops end to end on a local stack (or ``--connect``), with a summary.
- ``qpu``: serve the ``qpu`` service (docs/QPU_SERVICE.md) as one worker of a broker.
- ``vqe``: H2 VQE through the ``qpu`` service, beside the same loop in-process: energy,
  error vs exact, loop latency. Without ``--connect`` it starts its own local stack.

``nearloop demo|qpu|vqe|qec`` are the same commands. Subcommands import what they need
only when they run, so ``--help`` is fast. Exit status: 0 done, 1 the run failed (a
block failed, a server did not start), 2 a user error (bad options, nothing at
``--connect``, a noise model too large to send, ``--lane require`` with no lane to be
had), 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from client.arguments import RUN_FAILED, USAGE_ERROR, CommandParser, add_command, fail
from control_sim.qec.cli import add_qec_arguments, run_qec_command
from control_sim.qpu.cli import add_qpu_arguments, run_qpu
from control_sim.stack.cli import add_demo_arguments, run_demo_command
from control_sim.vqe.cli import add_vqe_arguments, run_vqe_command

PROG = "python -m control_sim"


def build_parser(prog: str = PROG) -> CommandParser:
    """The ``python -m control_sim`` parser."""
    parser = CommandParser(prog=prog, description="nearloop's simulated control runtime.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_qec_arguments(
        add_command(
            commands, "qec",
            help="stream syndrome blocks to decoder workers; reaction time, backlog, LER",
            description="A QEC memory experiment streamed through nearloop's decoders.",
        )
    )  # fmt: skip
    add_demo_arguments(
        add_command(
            commands, "demo",
            help="both loops end to end: VQE through the qpu service and a QEC stream",
            description="Start a local stack (broker, 2 decoder workers, 1 QPU worker) and "
            "run H2 VQE and a surface-code syndrome stream through it.",
        )
    )  # fmt: skip
    add_qpu_arguments(
        add_command(
            commands, "qpu",
            help="serve the qpu service: registered circuits evaluated on qiskit-aer",
            description="A QPU worker: estimates and samples registered circuits on "
            "qiskit-aer. It prints one line starting with READY once registered.",
        )
    )  # fmt: skip
    add_vqe_arguments(
        add_command(
            commands, "vqe",
            help="H2 VQE through the qpu service, beside the same loop in-process",
            description="VQE on H2 through nearloop's qpu service: energy, error vs exact "
            "diagonalization, and loop latency through the broker against in-process.",
        )
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from client.errors import (
        BadModel,
        LaneUnavailable,
        NearloopError,
        PayloadTooLarge,
        RemotePayloadTooLarge,
    )
    from control_sim.errors import ControlSimError, StackUnavailable
    from control_sim.stack.processes import interrupts_raise

    command = args.command_parser
    try:
        with interrupts_raise():
            if args.command == "qec":
                return run_qec_command(command, args)
            if args.command == "qpu":
                return run_qpu(args)
            if args.command == "demo":
                return run_demo_command(command, args)
            if args.command == "vqe":
                return run_vqe_command(command, args)
    except (
        StackUnavailable,
        PayloadTooLarge,
        RemotePayloadTooLarge,
        BadModel,
        LaneUnavailable,
    ) as exc:
        # the user's to fix: the endpoint, a worker, the size, a lane that cannot be had
        return fail(exc, USAGE_ERROR)
    except (ControlSimError, NearloopError) as exc:
        return fail(exc, RUN_FAILED)
    except KeyboardInterrupt:
        print("interrupted; local stack stopped", file=sys.stderr)
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")
