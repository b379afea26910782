"""``python -m control_sim vqe``: its options, and the command that runs them.

Only the standard library and :mod:`client.arguments` are imported here; the VQE, qiskit
and the local stack are imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from client.arguments import int_at_least


def add_vqe_arguments(p: argparse.ArgumentParser) -> None:
    """The ``vqe`` subcommand's options."""
    p.add_argument("--connect", metavar="EP", help="use this broker (default: a local stack)")
    p.add_argument("--service", default="qpu", help="the QPU service (default %(default)s)")
    p.add_argument("--molecule", choices=("h2",), default="h2", help="default %(default)s")
    p.add_argument("--optimizer", choices=("spsa", "cobyla"), default="spsa")
    p.add_argument(
        "--shots", type=int_at_least(2), default=None,
        help="shots per measurement basis per energy (default: the exact estimator)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=0,
        help="start point, SPSA perturbations and shot seeds (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--maxiter", type=int_at_least(1), default=None,
        help="SPSA iterations or COBYLA evaluations (default: 300 SPSA, 150 COBYLA)",
    )  # fmt: skip
    p.add_argument(
        "--timeout-s", type=float, default=5.0,
        help="bound on each call to the service (default %(default)s)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, metavar="OUT", help="write the summary here")


def run_vqe_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``control_sim vqe`` with parsed ``args``; returns the exit status.

    Without ``--connect`` it starts a local stack (a broker and one ``qpu`` worker).
    Errors of the service or the transport print one line and return 1.
    """
    from client import NearloopError
    from control_sim.qec.run import write_json
    from control_sim.stack.local_stack import LocalStack, StackSpec
    from control_sim.vqe.comparison import VqeConfig, format_summary, run_vqe_session

    try:
        config = VqeConfig(
            molecule=args.molecule,
            optimizer=args.optimizer,
            shots=args.shots,
            seed=args.seed,
            maxiter=args.maxiter,
            service=args.service,
            timeout_s=args.timeout_s,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        if args.connect:
            summary = run_vqe_session(args.connect, config)
        else:
            with LocalStack(StackSpec(qpu_workers=1, qpu_service=args.service)) as stack:
                summary = run_vqe_session(stack.endpoint, config)
    except NearloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary["local_stack"] = not args.connect
    if args.json:
        write_json(summary, args.json)
    else:
        print(format_summary(summary))
    return 0
