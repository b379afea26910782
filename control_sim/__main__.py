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
from pathlib import Path

from client.arguments import int_at_least
from control_sim.demo_cli import add_demo_arguments, run_demo_command
from control_sim.qpu_cli import add_qpu_arguments, run_qpu
from control_sim.vqe_cli import add_vqe_arguments, run_vqe_command

DECODERS = ("pymatching", "bposd", "bp-gpu")


_positive = int_at_least(1)


def add_qec_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qec`` subcommand's options."""
    p.add_argument("--connect", metavar="EP", help="use this broker (default: a local stack)")
    p.add_argument("--decoder-service", default="decode", help="default %(default)s")
    p.add_argument("--decoder", choices=DECODERS, default="pymatching")
    p.add_argument("--code", choices=("surface", "repetition"), default="surface")
    p.add_argument("--distance", type=_positive, default=5)
    p.add_argument("--rounds", type=_positive, default=5)
    p.add_argument("--p", type=float, default=0.001, help="circuit-level noise strength")
    p.add_argument("--shots", type=_positive, default=100_000)
    p.add_argument("--block-shots", type=_positive, default=1000)
    p.add_argument(
        "--period-us", type=_positive, default=None,
        help="emit one block every T us (default: as fast as the window allows)",
    )  # fmt: skip
    p.add_argument(
        "--deadline-us", type=_positive, default=None,
        help="mark a block late past this reaction time (default: the period)",
    )  # fmt: skip
    p.add_argument("--window", type=_positive, default=64, help="blocks in flight at most")
    p.add_argument(
        "--workers", type=_positive, default=2,
        help="decoder workers of the local stack (ignored with --connect)",
    )  # fmt: skip
    p.add_argument(
        "--worker-arg", action="append", default=[], metavar="ARG",
        help="pass ARG to each local decoder worker, e.g. --worker-arg=--max-wait-us=100",
    )  # fmt: skip
    p.add_argument("--backend", choices=("stim", "aer"), default="stim", help="the sampler")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--json", type=Path, metavar="OUT", help="write the summary here")


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


def _qec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from control_sim.local_stack import LocalStack, StackSpec
    from control_sim.qec_codes import CodeSpec
    from control_sim.qec_run import QecConfig, format_summary, run_qec, write_json

    try:
        config = QecConfig(
            spec=CodeSpec(args.code, args.distance, args.rounds, args.p),
            decoder_service=args.decoder_service,
            shots=args.shots,
            block_shots=args.block_shots,
            seed=args.seed,
            period_us=args.period_us,
            deadline_us=args.deadline_us,
            window=args.window,
            backend=args.backend,
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.connect:
        summary = run_qec(config, args.connect)
    else:
        spec = StackSpec(
            decoder_workers=args.workers,
            decoder=args.decoder,
            decoder_service=args.decoder_service,
            decoder_args=tuple(args.worker_arg),
        )
        with LocalStack(spec) as stack:
            summary = run_qec(config, stack.endpoint)
    summary["decoder"] = args.decoder
    summary["workers"] = None if args.connect else args.workers
    if args.json:
        write_json(summary, args.json)
    else:
        print(format_summary(summary, decoder=args.decoder, workers=summary["workers"]))
    return 1 if summary["lost"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from control_sim.errors import ControlSimError
    from control_sim.processes import interrupts_raise

    try:
        with interrupts_raise():
            if args.command == "qec":
                return _qec(parser, args)
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


if __name__ == "__main__":
    sys.exit(main())
