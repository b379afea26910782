"""The ``demo`` subcommand's options and entry point (imports the loops only when it runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.arguments import int_at_least

_positive = int_at_least(1)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options; every one has a default."""
    p.add_argument(
        "--connect", metavar="EP",
        help="use this broker, which must have 'decode' and 'qpu' workers "
        "(default: start a local stack)",
    )  # fmt: skip
    p.add_argument("--optimizer", choices=("spsa", "cobyla"), default="spsa")
    p.add_argument(
        "--vqe-maxiter", type=_positive, default=None,
        help="SPSA iterations or COBYLA evaluations (default: 300 or 150)",
    )  # fmt: skip
    p.add_argument(
        "--qec-shots", type=_positive, default=100_000,
        help="surface-code shots streamed to the decoders (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=2026, help="default %(default)s")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the summary here")


def run_demo_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the demo; 0 if both loops did what they should (see ``demo_ok``)."""
    from dataclasses import replace

    from control_sim.qec.run import write_json
    from control_sim.stack.demo import DemoConfig, demo_ok, format_demo, run_demo

    base = DemoConfig()
    try:
        config = replace(
            base,
            vqe=replace(
                base.vqe, optimizer=args.optimizer, maxiter=args.vqe_maxiter, seed=args.seed
            ),
            qec=replace(base.qec, shots=args.qec_shots, seed=args.seed),
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = run_demo(config, args.connect)
    if args.json:
        write_json(summary, args.json)
    print(format_demo(summary))
    return 0 if demo_ok(summary) else 1
