"""``python -m control_sim qec``: its options, and the command that runs them.

Only the standard library and :mod:`client.arguments` are imported here; stim, the
stream and the local stack are imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from client.arguments import int_at_least
from control_sim.qec.samplers import SAMPLER_NAMES
from decoders.names import DECODER_NAMES

_positive = int_at_least(1)


def add_qec_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qec`` subcommand's options."""
    p.add_argument("--connect", metavar="EP", help="use this broker (default: a local stack)")
    p.add_argument("--decoder-service", default="decode", help="default %(default)s")
    p.add_argument("--decoder", choices=DECODER_NAMES, default="pymatching")
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
    p.add_argument("--backend", choices=SAMPLER_NAMES, default="stim", help="the syndrome sampler")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--json", type=Path, metavar="OUT", help="write the summary here")


def run_qec_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``control_sim qec`` with parsed ``args``; returns the exit status."""
    from control_sim.qec.codes import CodeSpec
    from control_sim.qec.run import QecConfig, format_summary, run_qec, write_json
    from control_sim.stack.local_stack import LocalStack, StackSpec

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
