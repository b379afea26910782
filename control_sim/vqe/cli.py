"""``python -m control_sim vqe``: its options, and the command that runs them.

Only the standard library, :mod:`client.arguments` and the service's schema are imported
here; the VQE, qiskit and the local stack are imported when the command runs, so
``--help`` stays fast.
"""

from __future__ import annotations

import argparse

from client.arguments import (
    CommandParser,
    add_connect,
    add_curve_option,
    add_json,
    add_maxiter,
    add_seed,
    add_timeout_s,
    curve_of,
    int_at_least,
    write_json,
)
from client.wire.lanes import LANE_MODES
from control_sim.qpu.names import DEFAULT_SERVICE

DEFAULT_TIMEOUT_S = 5.0


def add_lane(p: argparse.ArgumentParser) -> None:
    """``--lane auto|off|require``: the QPU session's transport (``vqe`` and ``demo``)."""
    p.add_argument(
        "--lane", choices=LANE_MODES, default="auto",
        help="the qpu session's transport: a shared-memory lane when the worker shares this "
        "host, else the broker (auto); always the broker (off); a lane or an error (require)",
    )  # fmt: skip


def add_vqe_arguments(p: argparse.ArgumentParser) -> None:
    """The ``vqe`` subcommand's options."""
    add_connect(p, help="use the broker at EP, which must have a qpu worker "
                "(default: start a local stack)")  # fmt: skip
    p.add_argument("--service", default=DEFAULT_SERVICE, help="the QPU service")
    p.add_argument("--molecule", choices=("h2",), default="h2", help="the molecule")
    p.add_argument("--optimizer", choices=("spsa", "cobyla"), default="spsa", help="optimizer")
    p.add_argument(
        "--shots", type=int_at_least(2), default=None,
        help="shots per measurement basis per energy (default: the exact estimator)",
    )  # fmt: skip
    add_seed(p, help="seeds the start point, SPSA's perturbations and the shot seeds")
    add_maxiter(p, help="SPSA iterations or COBYLA evaluations (default: 300 SPSA, 150 COBYLA)")
    add_timeout_s(p, default=DEFAULT_TIMEOUT_S, help="bound on each call to the service")
    add_lane(p)
    add_json(p)
    add_curve_option(p)


def run_vqe_command(parser: CommandParser, args: argparse.Namespace) -> int:
    """Run ``control_sim vqe`` with parsed ``args``; returns the exit status.

    Without ``--connect`` it starts a local stack (a broker and one ``qpu`` worker); with
    it, the broker must answer and serve ``--service`` (else a one-line error, exit 2).
    ``--lane require`` with no lane to be had is the same kind of error (``LaneUnavailable``).
    Errors of the service or the transport during the run reach :func:`control_sim.cli.main`,
    which prints them as one line and exits 1.
    """
    from control_sim.stack.local_stack import LocalStack, StackSpec, require_services
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
            lane=args.lane,
        )
    except ValueError as exc:
        parser.error(str(exc))
    curve = curve_of(parser, args)
    if args.connect:
        hint = {args.service: qpu_hint(args.connect, args.service)}
        require_services(args.connect, hint, curve=curve)
        summary = run_vqe_session(args.connect, config, curve=curve)
    else:
        with LocalStack(StackSpec(qpu_workers=1, qpu_service=args.service)) as stack:
            summary = run_vqe_session(stack.endpoint, config)
    summary["local_stack"] = not args.connect
    if args.json:
        write_json(args.json, summary)
    else:
        print(format_summary(summary))
    return 0


def qpu_hint(endpoint: str, service: str) -> str:
    """How to start a worker of the QPU ``service`` at ``endpoint``."""
    return f"nearloop qpu --connect {endpoint} --service {service}"
