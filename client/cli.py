"""``python -m client``: talk to a broker from the shell.

python -m client stats ENDPOINT                 # the broker's counters (mmi.stats)
python -m client ping ENDPOINT SERVICE          # does SERVICE have workers? (mmi.service)
python -m client call ENDPOINT SERVICE [JSON]   # one request; the body is JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m client", description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=2.0, help="seconds (default %(default)s)")
    sub = p.add_subparsers(dest="command", required=True)
    stats = sub.add_parser("stats", help="print the broker's counters as JSON")
    stats.add_argument("endpoint")
    ping = sub.add_parser("ping", help="exit 0 if SERVICE has workers, 1 if not")
    ping.add_argument("endpoint")
    ping.add_argument("service")
    call = sub.add_parser("call", help="send one request and print the reply body as JSON")
    call.add_argument("endpoint")
    call.add_argument("service")
    call.add_argument("body", nargs="?", default="null", help="JSON (default null)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    from client.errors import NearloopError
    from client.sync_client import Client

    try:
        with Client(args.endpoint, timeout=args.timeout) as c:
            if args.command == "stats":
                print(json.dumps(c.broker_stats(), indent=2, sort_keys=True))
                return 0
            if args.command == "ping":
                ok = c.service_available(args.service)
                print(f"{args.service}: {'available' if ok else 'no workers'}")
                return 0 if ok else 1
            reply = c.request(args.service, json.loads(args.body))
            print(json.dumps(reply.body, default=repr))
            for a in reply.arrays:
                print(f"array {a.dtype}{list(a.shape)}", file=sys.stderr)
            return 0
    except (NearloopError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
