"""The broker's command line: ``python -m broker`` and ``nearloop broker``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from broker.broker import Broker
from broker.config import DEFAULT_BROKER_SPIN_US, BrokerConfig
from client.wire import DEFAULT_HEARTBEAT_MS, DEFAULT_LIVENESS, MAX_SESSIONS


def build_parser() -> argparse.ArgumentParser:
    """The broker's command line."""
    p = argparse.ArgumentParser(
        prog="python -m broker",
        description="nearloop Majordomo broker (MDP/0.1 and MDP/0.2 on the same endpoints).",
    )
    p.add_argument(
        "--bind", action="append", required=True, metavar="ENDPOINT",
        help="endpoint to bind: tcp://127.0.0.1:5555, ipc:///tmp/nl.sock; repeatable",
    )  # fmt: skip
    p.add_argument(
        "--heartbeat-ms", type=int, default=DEFAULT_HEARTBEAT_MS,
        help="broker heartbeat interval (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--liveness", type=int, default=DEFAULT_LIVENESS,
        help="missed heartbeats before a worker is dead (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--request-ttl-ms", type=int, default=10_000,
        help="how long a request without its own ttl_ms may wait for a worker",
    )  # fmt: skip
    p.add_argument(
        "--max-queue", type=int, default=10_000,
        help="bound on each service's queue (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-services", type=int, default=1024,
        help="bound on distinct service names the broker tracks (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-redispatch", type=int, default=2,
        help="times a request is re-sent after its worker dies (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--max-sessions", type=int, default=MAX_SESSIONS,
        help="bound on open sessions, lost ones included (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--session-idle-ms", type=int, default=600_000,
        help="forget a session idle this long with nothing in flight (default %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--spin-us", type=int, default=DEFAULT_BROKER_SPIN_US,
        help="after each message, poll this long for the next before sleeping; 0: never "
        "(default %(default)s)",
    )  # fmt: skip
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    broker = Broker(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        broker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        endpoints = broker.bind()
    except Exception as exc:
        print(f"error: cannot bind: {exc}", file=sys.stderr)
        broker.close()
        return 1
    print("READY " + " ".join(endpoints), flush=True)
    try:
        broker.run()
    finally:
        broker.close()
    return 0
