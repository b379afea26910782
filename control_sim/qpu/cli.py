"""``python -m control_sim qpu``: one QPU worker process serving :class:`QpuService`.

    python -m control_sim qpu --connect EP [--service qpu] [--credit 4]
        [--heartbeat-ms 250] [--seed 0] [--log-level WARNING]

It registers with the broker, granting ``--credit`` requests in flight, prints ``READY``
once its READY is sent, and answers the ops of docs/QPU_SERVICE.md on qiskit-aer,
continuous runs in sessions included (:mod:`control_sim.qpu.continuous`; at most
``credit - 1`` at once, so that a slot always stays free for their updates).
SIGINT/SIGTERM make it say DISCONNECT and exit 0.

Only the standard library and :mod:`client.arguments` are imported here; qiskit and the
worker are imported when the command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Final

from client.arguments import int_at_least

DEFAULT_SERVICE: Final = "qpu"
DEFAULT_CREDIT: Final = 4
DEFAULT_HEARTBEAT_MS: Final = 250
DEFAULT_SEED: Final = 0

_positive = int_at_least(1)


def add_qpu_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qpu`` subcommand's options."""
    p.add_argument("--connect", required=True, metavar="EP", help="the broker's endpoint")
    p.add_argument("--service", default=DEFAULT_SERVICE, help="default %(default)s")
    p.add_argument(
        "--credit", type=_positive, default=DEFAULT_CREDIT,
        help="requests the broker may have in flight here (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--heartbeat-ms", type=_positive, default=DEFAULT_HEARTBEAT_MS,
        help="heartbeat interval (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--seed", type=int, default=DEFAULT_SEED,
        help="seeds the simulator seed of shot-based requests that carry none "
        "(default %(default)s)",
    )  # fmt: skip
    p.add_argument("--log-level", default="WARNING", help="default %(default)s")


def run_qpu(args: argparse.Namespace) -> int:
    """Serve the ``qpu`` service until SIGINT/SIGTERM; returns the exit status.

    0 when stopped by a signal (before or after READY), 2 for options the protocol
    refuses (``--credit`` over its limit, ``--heartbeat-ms`` out of range).
    """
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from client.errors import ProtocolError
    from client.wire import WorkerOptions
    from control_sim.stack.processes import interrupts_raise

    try:
        WorkerOptions(credit=args.credit, heartbeat_ms=args.heartbeat_ms, declared=True)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        # Until run_worker installs its own handlers, a signal unwinds the slow start.
        with interrupts_raise():
            from client.worker import Worker, serve
            from control_sim.qpu.continuous import ContinuousRuns
            from control_sim.qpu.service import QpuService

            service = QpuService(seed=args.seed)
            holder: list[Worker] = []
            # A continuous run holds a credit slot until it stops: keep one for updates.
            runs = ContinuousRuns(service, lambda: holder[0].defer(), max_runs=args.credit - 1)
            worker = Worker(
                args.connect,
                args.service,
                runs.handle,
                idle=runs.idle,
                credit=args.credit,
                heartbeat_ms=args.heartbeat_ms,
            )
            holder.append(worker)
            serve(worker)
    except KeyboardInterrupt:
        pass  # stopped while starting: nothing was served
    return 0
