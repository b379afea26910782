"""``python -m control_sim qec``: its options, and the command that runs them.

Only the standard library, :mod:`client.arguments` and the names of the samplers and
decoders are imported here; stim, the stream and the local stack are imported when the
command runs, so ``--help`` stays fast.

``--decoder``, ``--workers`` and ``--worker-arg`` configure the local stack's decoder
workers. With ``--connect`` the decoders are whatever workers serve
``--decoder-service`` at that broker, so those options are refused there; either way the
summary names the decoder that the workers' replies say decoded the blocks.

``--metrics-port`` serves the stream's ``nearloop_stream_reaction_seconds`` and
``nearloop_stream_backlog`` (:mod:`client.stream_metrics`) with the process metrics while
it runs, announced on a ``METRICS URL`` line first; a port that cannot be bound is a
one-line error, exit 2, before anything starts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from client.arguments import (
    RUN_FAILED,
    CommandParser,
    add_connect,
    add_curve_option,
    add_distance,
    add_json,
    add_metrics_options,
    add_p,
    add_seed,
    add_timeout_s,
    curve_of,
    fail,
    int_at_least,
    write_json,
)
from control_sim.qec.names import CODE_NAMES, SAMPLER_NAMES
from decoders.names import DECODER_NAMES, DEFAULT_DECODER_SERVICE

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from client.wire.curve import CurveSpec
    from control_sim.qec.run import QecConfig
    from control_sim.qec.source import SyndromeSource

DEFAULT_DECODER = "pymatching"
DEFAULT_WORKERS = 2
DEFAULT_BLOCK_TIMEOUT_S = 10.0
LOCAL_STACK_ONLY = ("decoder", "workers", "worker_arg")
"""The options that configure the local stack's workers, refused with ``--connect``."""

_positive = int_at_least(1)


def add_qec_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qec`` subcommand's options."""
    add_connect(p, help="use the broker at EP, which must have decoder workers of "
                "--decoder-service (default: start a local stack)")  # fmt: skip
    p.add_argument(
        "--decoder-service", default=DEFAULT_DECODER_SERVICE, metavar="NAME",
        help="the decoder service blocks are sent to",
    )  # fmt: skip
    p.add_argument(
        "--code", choices=CODE_NAMES, default="surface",
        help="the memory experiment's code",
    )  # fmt: skip
    add_distance(p, default=5)
    p.add_argument("--rounds", type=_positive, default=5, help="syndrome rounds per shot")
    add_p(p)
    p.add_argument("--shots", type=_positive, default=100_000, help="shots in all")
    p.add_argument("--block-shots", type=_positive, default=1000, help="shots per block")
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
        "--backend", choices=SAMPLER_NAMES, default="stim",
        help="the syndrome sampler (aer: the repetition code only)",
    )  # fmt: skip
    add_seed(p, help="seeds the syndrome samples")
    add_timeout_s(
        p, default=DEFAULT_BLOCK_TIMEOUT_S,
        help="how long a block may wait for its result, and a full window for room",
    )  # fmt: skip
    local = p.add_argument_group(
        "local stack", "the decoder workers started without --connect (refused with it)"
    )
    local.add_argument(
        "--decoder", choices=DECODER_NAMES, default=None,
        help=f"the workers' decoder (default: {DEFAULT_DECODER})",
    )  # fmt: skip
    local.add_argument(
        "--workers", type=_positive, default=None,
        help=f"how many decoder workers (default: {DEFAULT_WORKERS})",
    )  # fmt: skip
    local.add_argument(
        "--worker-arg", action="append", default=None, metavar="ARG",
        help="pass ARG to each decoder worker, e.g. --worker-arg=--max-wait-us=100; "
        "repeatable (default: none)",
    )  # fmt: skip
    add_json(p)
    add_curve_option(p)
    add_metrics_options(p, what="the stream (reaction time, backlog)")


def run_qec_command(parser: CommandParser, args: argparse.Namespace) -> int:
    """Run ``control_sim qec`` with parsed ``args``; returns the exit status.

    0 if every block was decoded, 1 if a block failed or was lost (the summary is printed
    or written either way), 2 for a user error: bad options, or no broker or decoder
    workers at ``--connect``. The sampler is built (and its options checked) before any
    process starts.
    """
    given = [f"--{name.replace('_', '-')}" for name in LOCAL_STACK_ONLY if getattr(args, name)]
    if args.connect and given:
        parser.error(
            f"{', '.join(given)}: only for a local stack's workers; with --connect the "
            f"decoders are those serving --decoder-service at {args.connect}"
        )
    curve = curve_of(parser, args)
    from control_sim.qec.codes import CodeSpec
    from control_sim.qec.run import QecConfig, format_summary, qec_ok
    from control_sim.qec.samplers import open_source

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
            block_timeout_s=args.timeout_s,
        )
        source = open_source(config.spec, backend=config.backend, seed=config.seed)
    except ValueError as exc:
        parser.error(str(exc))
    from client.metrics_export import MetricsUnavailable, new_registry, start_metrics

    registry = new_registry()
    try:
        server = start_metrics(registry, args)
    except MetricsUnavailable as exc:
        return fail(exc)
    try:
        summary, workers = _run_stream(args, config, source, registry, curve)
    finally:
        if server is not None:
            server.close()
    summary["workers"] = workers
    if args.json:
        write_json(args.json, summary)
    else:
        print(format_summary(summary, workers=workers))
    if not qec_ok(summary):
        return fail(
            f"{summary['blocks_failed']} blocks failed and {summary['lost']} were lost of "
            f"{summary['blocks_sent']} sent",
            RUN_FAILED,
        )
    return 0


def _run_stream(
    args: argparse.Namespace,
    config: QecConfig,
    source: SyndromeSource,
    registry: CollectorRegistry,
    curve: CurveSpec | None,
) -> tuple[dict[str, Any], int | None]:
    """The stream's summary, against ``--connect`` or a local stack, and how many
    workers the local stack had (None with ``--connect``)."""
    from control_sim.qec.run import run_qec
    from control_sim.stack.local_stack import LocalStack, StackSpec, require_services

    if args.connect:
        service = args.decoder_service
        hint = decoders_hint(args.connect, service)
        require_services(args.connect, {service: hint}, curve=curve)
        return run_qec(config, args.connect, source=source, metrics=registry, curve=curve), None
    workers = args.workers or DEFAULT_WORKERS
    spec = StackSpec(
        decoder_workers=workers,
        decoder=args.decoder or DEFAULT_DECODER,
        decoder_service=args.decoder_service,
        decoder_args=tuple(args.worker_arg or ()),
    )
    with LocalStack(spec) as stack:
        return run_qec(config, stack.endpoint, source=source, metrics=registry), workers


def decoders_hint(endpoint: str, service: str) -> str:
    """How to start a decoder worker of ``service`` at ``endpoint``."""
    return f"nearloop decoders --connect {endpoint} --service {service} --decoder {DEFAULT_DECODER}"
