"""``python -m decoders``: one decoder worker process.

    python -m decoders --connect EP --service NAME --decoder pymatching|bposd|bp-gpu
        [--device auto|cpu|cuda] [--max-batch-shots N] [--max-wait-us N] [--credit N]

It registers with the broker, granting ``--credit`` blocks in flight, prints ``READY``,
and batches dynamically: it gathers blocks until ``--max-batch-shots`` shots, ``--credit``
blocks, or ``--max-wait-us`` after the first, decodes them in one call, and replies per
block. SIGINT/SIGTERM make it say DISCONNECT and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from client.arguments import int_at_least
from client.wire import DEFAULT_HEARTBEAT_MS, MAX_CREDIT
from decoders.names import DECODER_NAMES

DEFAULT_MAX_BATCH_SHOTS = 10_000
DEFAULT_MAX_WAIT_US = 50
DEFAULT_CREDIT = 16


_positive = int_at_least(1)
_non_negative = int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m decoders",
        description="A decoder worker: decodes syndrome-stream blocks, batched dynamically.",
    )
    p.add_argument("--connect", required=True, metavar="EP", help="the broker's endpoint")
    p.add_argument("--service", required=True, help="the decoder service to serve")
    p.add_argument("--decoder", required=True, choices=DECODER_NAMES)
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where bp-gpu runs: CuPy on a CUDA GPU, or numpy (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-batch-shots", type=_positive, default=DEFAULT_MAX_BATCH_SHOTS,
        help="decode once this many shots are gathered (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-wait-us", type=_non_negative, default=DEFAULT_MAX_WAIT_US,
        help="or once this long has passed since the batch's first block (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--credit", type=_positive, default=DEFAULT_CREDIT,
        help=f"blocks the broker may have in flight here, at most {MAX_CREDIT} "
        "(default %(default)s)",
    )  # fmt: skip
    p.add_argument("--heartbeat-ms", type=_positive, default=DEFAULT_HEARTBEAT_MS)
    p.add_argument("--log-level", default="WARNING")
    return p


def cli_options(name: str, device: str) -> dict[str, Any]:
    """The options the named decoder takes from the command line."""
    return {"device": device} if name == "bp-gpu" else {}


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.credit > MAX_CREDIT:
        parser.error(f"--credit is at most {MAX_CREDIT}")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from client.sync_client import Client
    from client.worker import run_worker
    from decoders.registry import make_decoder
    from decoders.service import DecoderService, block_shots

    decoder = make_decoder(args.decoder, **cli_options(args.decoder, args.device))
    with Client(args.connect, timeout=10.0) as models:
        service = DecoderService(decoder, models.fetch_model)
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
        )
    return 0
