"""The ``demo`` subcommand's options and entry point (imports the loops only when it runs)."""

from __future__ import annotations

import argparse

from client.arguments import (
    CommandParser,
    add_connect,
    add_curve_option,
    add_json,
    add_maxiter,
    add_metrics_options,
    add_seed,
    curve_of,
    fail,
    int_at_least,
    write_json,
)
from control_sim.qpu.names import DEFAULT_SERVICE as DEFAULT_QPU_SERVICE
from control_sim.vqe.cli import add_lane
from decoders.names import DEFAULT_DECODER_SERVICE

_positive = int_at_least(1)


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's options; every one has a default."""
    services = f"{DEFAULT_DECODER_SERVICE!r} and {DEFAULT_QPU_SERVICE!r}"
    add_connect(p, help=f"use the broker at EP, which must have {services} workers "
                "(default: start a local stack)")  # fmt: skip
    p.add_argument(
        "--optimizer", choices=("spsa", "cobyla"), default="spsa", help="the VQE's optimizer"
    )
    add_maxiter(p, help="SPSA iterations or COBYLA evaluations (default: 300 SPSA, 150 COBYLA)")
    p.add_argument(
        "--qec-shots", type=_positive, default=100_000,
        help="surface-code shots streamed to the decoders",
    )  # fmt: skip
    add_seed(p, help="seeds the VQE and the syndrome samples")
    add_lane(p)
    add_json(p)
    add_curve_option(p)
    add_metrics_options(p, what="the QEC stream (reaction time, backlog)")
    p.add_argument(
        "--chaos", action="store_true",
        help="run both loops at once, SIGKILL and restart the broker once mid-run, and "
        "show that nothing was lost (local stack only)",
    )  # fmt: skip


def run_demo_command(parser: CommandParser, args: argparse.Namespace) -> int:
    """Run the demo; 0 if both loops did what they should (see ``demo_ok``), else 1;
    2 if ``--metrics-port`` cannot be bound."""
    from dataclasses import replace

    from control_sim.stack.demo import DemoConfig, demo_ok, format_demo, run_demo

    base = DemoConfig()
    try:
        config = replace(
            base,
            vqe=replace(
                base.vqe,
                optimizer=args.optimizer,
                maxiter=args.maxiter,
                seed=args.seed,
                lane=args.lane,
            ),
            qec=replace(base.qec, shots=args.qec_shots, seed=args.seed),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if args.chaos and args.connect is not None:
        parser.error("--chaos kills the demo's own broker: it cannot be used with --connect")
    curve = curve_of(parser, args)
    from client.metrics_export import MetricsUnavailable, new_registry, start_metrics

    registry = new_registry()
    try:
        server = start_metrics(registry, args)
    except MetricsUnavailable as exc:
        return fail(exc)
    try:
        summary = run_demo(config, args.connect, curve=curve, metrics=registry, chaos=args.chaos)
    finally:
        if server is not None:
            server.close()
    if args.json:
        write_json(args.json, summary)
    print(format_demo(summary))
    return 0 if demo_ok(summary) else 1
