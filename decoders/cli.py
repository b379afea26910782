"""``python -m decoders`` (and ``nearloop decoders``): one decoder worker process.

    python -m decoders --connect EP --decoder pymatching|bposd|bp-gpu [--service decode]
        [--device auto|cpu|cuda] [--max-batch-shots N] [--max-wait-us N] [--credit N]
        [--metrics-port PORT [--metrics-host HOST]]

It registers with the broker, granting ``--credit`` blocks in flight, prints ``READY``,
and batches dynamically: it gathers blocks until ``--max-batch-shots`` shots, ``--credit``
blocks, or ``--max-wait-us`` after the first, decodes them in one call, and replies per
block. SIGINT/SIGTERM make it say DISCONNECT and exit 0. A decoder that cannot be built
here (``bp-gpu --device cuda`` without CuPy or a GPU) is a one-line error, exit 2.
``--metrics-port`` serves ``nearloop_decode_seconds`` and ``nearloop_decode_batch_size``
(:mod:`decoders.metrics`) with the process metrics, announced on a ``METRICS URL`` line
before ``READY``; a port that cannot be bound is a one-line error, exit 2.

Only the standard library, :mod:`client.arguments`, the limits and the decoder names are
imported until the worker starts, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from client.arguments import (
    CommandParser,
    add_connect,
    add_curve_option,
    add_metrics_options,
    add_worker_options,
    configure_logging,
    curve_of,
    fail,
    int_at_least,
)
from decoders.names import DECODER_NAMES, DEFAULT_DECODER_SERVICE

PROG = "python -m decoders"
DEFAULT_MAX_BATCH_SHOTS = 10_000
DEFAULT_MAX_WAIT_US = 50
DEFAULT_CREDIT = 16
MODEL_FETCH_TIMEOUT_S = 10.0
"""Bound on fetching a noise model from the broker's store."""

_positive = int_at_least(1)
_non_negative = int_at_least(0)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line."""
    p = CommandParser(
        prog=prog,
        description="A decoder worker: decodes syndrome-stream blocks, batched dynamically. "
        "It prints one line starting with READY once registered.",
    )
    add_connect(p, required=True, help="the broker's endpoint")
    p.add_argument(
        "--service", default=DEFAULT_DECODER_SERVICE, help="the decoder service to serve"
    )
    p.add_argument("--decoder", required=True, choices=DECODER_NAMES, help="the decoder")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="bp-gpu only: CuPy on a CUDA GPU (cuda), numpy (cpu), or CuPy if usable (auto)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch-shots", type=_positive, default=DEFAULT_MAX_BATCH_SHOTS,
        help="decode once this many shots are gathered",
    )  # fmt: skip
    p.add_argument(
        "--max-wait-us", type=_non_negative, default=DEFAULT_MAX_WAIT_US,
        help="or once this long has passed since the batch's first block",
    )  # fmt: skip
    add_worker_options(p, credit=DEFAULT_CREDIT, what="blocks")
    add_curve_option(p)
    add_metrics_options(p, what="the decoder (decode time, batch size)")
    return p


def cli_options(name: str, device: str) -> dict[str, Any]:
    """The options the named decoder takes from the command line."""
    return {"device": device} if name == "bp-gpu" else {}


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.device != "auto" and args.decoder != "bp-gpu":
        parser.error(f"--device is an option of bp-gpu, not of {args.decoder}")
    curve = curve_of(parser, args)
    configure_logging(args.log_level)
    from client.metrics_export import MetricsUnavailable, new_registry, start_metrics
    from client.sync_client import Client
    from client.worker import run_worker
    from decoders.errors import DecoderError
    from decoders.registry import make_decoder
    from decoders.service import DecoderService, block_shots

    try:
        decoder = make_decoder(args.decoder, **cli_options(args.decoder, args.device))
    except DecoderError as exc:
        return fail(exc)
    # The worker's key fetches the models too: a worker key may act as a client.
    with Client(args.connect, timeout=MODEL_FETCH_TIMEOUT_S, curve=curve) as models:
        service = DecoderService(decoder, models.fetch_model)
        registry = new_registry()
        registry.register(service.metrics)
        try:
            server = start_metrics(registry, args)
        except MetricsUnavailable as exc:
            return fail(exc)
        run_worker(
            args.connect,
            args.service,
            None,
            batch_handler=service.handle_batch,
            batch_weight=block_shots,
            max_batch_weight=args.max_batch_shots,
            max_wait_us=args.max_wait_us,
            credit=args.credit,
            heartbeat_ms=args.heartbeat_ms,
            curve=curve,
        )
        if server is not None:
            server.close()
    return 0
