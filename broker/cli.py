"""The broker's command line: ``python -m broker`` and ``nearloop broker``.

Only the standard library, :mod:`client.arguments` and the limits are imported until the
broker runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from types import FrameType

from broker.config import DEFAULT_BROKER_SPIN_US, BrokerConfig
from client.arguments import CommandParser, add_log_level, endpoint, fail
from client.wire import DEFAULT_HEARTBEAT_MS, DEFAULT_LIVENESS, MAX_SESSIONS

PROG = "python -m broker"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The broker's command line."""
    p = CommandParser(
        prog=prog,
        description="nearloop Majordomo broker (MDP/0.1 and MDP/0.2 on the same endpoints). "
        "It prints one line starting with READY once it accepts connections.",
    )
    p.add_argument(
        "--bind", action="append", required=True, type=endpoint, metavar="EP",
        help="endpoint to bind: tcp://127.0.0.1:5555, ipc:///tmp/nl.sock; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--heartbeat-ms", type=int, default=DEFAULT_HEARTBEAT_MS,
        help="broker heartbeat interval",
    )  # fmt: skip
    p.add_argument(
        "--liveness", type=int, default=DEFAULT_LIVENESS,
        help="missed heartbeats before a worker is dead",
    )  # fmt: skip
    p.add_argument(
        "--request-ttl-ms", type=int, default=10_000,
        help="how long a request without its own ttl_ms may wait for a worker",
    )  # fmt: skip
    p.add_argument("--max-queue", type=int, default=10_000, help="bound on each service's queue")
    p.add_argument(
        "--max-services", type=int, default=1024,
        help="bound on distinct service names the broker tracks",
    )  # fmt: skip
    p.add_argument(
        "--max-redispatch", type=int, default=2,
        help="times a request is re-sent after its worker dies",
    )  # fmt: skip
    p.add_argument(
        "--max-sessions", type=int, default=MAX_SESSIONS,
        help="bound on open sessions, lost ones included",
    )  # fmt: skip
    p.add_argument(
        "--session-idle-ms", type=int, default=600_000,
        help="forget a session idle this long with nothing in flight",
    )  # fmt: skip
    p.add_argument(
        "--spin-us", type=int, default=DEFAULT_BROKER_SPIN_US,
        help="after each message, poll this long for the next before sleeping; 0: never",
    )  # fmt: skip
    add_log_level(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        config = BrokerConfig(
            endpoints=tuple(args.bind),
            heartbeat_ms=args.heartbeat_ms,
            liveness=args.liveness,
            request_ttl_ms=args.request_ttl_ms,
            max_queue=args.max_queue,
            max_services=args.max_services,
            max_redispatch=args.max_redispatch,
            max_sessions=args.max_sessions,
            session_idle_ms=args.session_idle_ms,
            spin_us=args.spin_us,
        )
    except ValueError as exc:
        return fail(exc)
    from zmq import ZMQError

    from broker.broker import Broker

    broker = Broker(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        broker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        endpoints = broker.bind()
    except ZMQError as exc:
        broker.close()
        return fail(f"cannot bind {' '.join(args.bind)}: {exc}")
    print("READY " + " ".join(endpoints), flush=True)
    try:
        broker.run()
    finally:
        broker.close()
    return 0
