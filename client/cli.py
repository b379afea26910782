"""``python -m client``: talk to a broker from the shell.

python -m client stats --connect EP                  # the broker's counters (mmi.stats)
python -m client ping --connect EP SERVICE           # does SERVICE have workers? (mmi.service)
python -m client call --connect EP SERVICE [JSON]    # one request; the body is JSON
python -m client keygen DIR NAME                     # a CURVE key pair: DIR/NAME.key(_secret)
python -m client call --trace ...                    # and where its round trip went

``nearloop stats|ping|call|keygen`` are the same commands. Each that talks to a broker
takes ``--timeout-s``, and ``--curve CLIENT_CERT BROKER_CERT`` for a CURVE broker.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from client.arguments import (
    RUN_FAILED,
    CommandParser,
    add_command,
    add_connect,
    add_curve_option,
    add_timeout_s,
    curve_of,
    fail,
)

PROG = "python -m client"
DEFAULT_TIMEOUT_S = 2.0


def _common(p: argparse.ArgumentParser) -> None:
    add_connect(p, required=True, help="the broker's endpoint")
    add_timeout_s(p, default=DEFAULT_TIMEOUT_S, help="how long to wait for the reply")
    add_curve_option(p)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line."""
    p = CommandParser(prog=prog, description="Talk to a nearloop broker from the shell.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stats = add_command(
        sub, "stats", help="print the broker's counters as JSON",
        description="Print the broker's counters (mmi.stats) as JSON.",
    )  # fmt: skip
    _common(stats)
    ping = add_command(
        sub, "ping", help="exit 0 if SERVICE has workers, 1 if not",
        description="Ask the broker whether SERVICE has workers (mmi.service): exit 0 if "
        "it has, 1 if not.",
    )  # fmt: skip
    _common(ping)
    ping.add_argument("service", metavar="SERVICE", help="the service to ask about")
    call = add_command(
        sub, "call", help="send one request and print the reply body as JSON",
        description="Send one request with a JSON body; print the reply body as JSON, and "
        "each reply array's dtype and shape on stderr.",
    )  # fmt: skip
    _common(call)
    call.add_argument("service", metavar="SERVICE", help="the service to call")
    call.add_argument(
        "body", nargs="?", default="null", metavar="JSON", help="the request body as JSON"
    )
    keygen = add_command(
        sub, "keygen", help="write a CURVE key pair, DIR/NAME.key and DIR/NAME.key_secret",
        description="Write a CURVE key pair as ZeroMQ certificates: DIR/NAME.key (public: "
        "give it to the other side) and DIR/NAME.key_secret (mode 0600: keep it). DIR is "
        "created with mode 0700 if missing; an existing pair is never overwritten. Prints "
        "the two paths.",
    )  # fmt: skip
    keygen.add_argument("dir", metavar="DIR", help="the folder to write the pair in")
    keygen.add_argument("name", metavar="NAME", help="the pair's name")
    call.add_argument(
        "--trace", action="store_true",
        help="ask the broker for its timestamps and print, after the reply, the round trip "
        "hop by hop in µs (hops between hosts, which no one clock measures, as one "
        "network line)",
    )  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        from client.keygen import keygen

        try:
            public, secret = keygen(args.dir, args.name)
        except ValueError as exc:
            return fail(exc)
        print(public)
        print(secret)
        return 0
    curve = curve_of(parser, args)
    try:
        body = json.loads(args.body) if args.command == "call" else None
    except json.JSONDecodeError as exc:
        args.command_parser.error(f"the request body is not JSON: {exc}")
    from client.errors import NearloopError
    from client.sync_client import Client

    try:
        with Client(args.connect, timeout=args.timeout_s, curve=curve) as c:
            if args.command == "stats":
                print(json.dumps(c.broker_stats(), indent=2, sort_keys=True))
                return 0
            if args.command == "ping":
                ok = c.service_available(args.service)
                print(f"{args.service}: {'available' if ok else 'no workers'}")
                return 0 if ok else 1
            c.trace = args.trace
            reply = c.request(args.service, body)
            print(json.dumps(reply.body, default=repr))
            for a in reply.arrays:
                print(f"array {a.dtype}{list(a.shape)}", file=sys.stderr)
            if args.trace:
                try:
                    print("\n".join(reply.trace().lines()))
                except ValueError as exc:  # a worker that does not copy the stamps back
                    return fail(f"no trace: {exc}", RUN_FAILED)
            return 0
    except NearloopError as exc:
        return fail(exc)
