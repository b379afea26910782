"""The broker's command line: ``python -m broker`` and ``nearloop broker``.

Only the standard library, :mod:`client.arguments` and the limits are imported until the
broker runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from dataclasses import fields
from types import FrameType
from typing import Final

from broker.config import BrokerConfig
from client.arguments import (
    CommandParser,
    add_log_level,
    add_metrics_options,
    configure_logging,
    endpoint,
    fail,
)

PROG = "python -m broker"

_SETTINGS: Final[dict[str, str]] = {
    "heartbeat_ms": "broker heartbeat interval",
    "liveness": "missed heartbeats before a worker is dead",
    "request_ttl_ms": "how long a request without its own ttl_ms may wait for a worker",
    "max_queue": "bound on each service's queue",
    "max_services": "bound on distinct service names the broker tracks",
    "max_redispatch": "times a request is re-sent after its worker dies",
    "max_sessions": "bound on open sessions, lost ones included",
    "session_idle_ms": "forget a session idle this long with nothing in flight",
    "spin_us": "upper bound on polling for the next message before sleeping (the window "
    "adapts below it to the gaps between messages); 0: never poll",
}
"""The :class:`BrokerConfig` fields the command line sets, each ``--name-with-dashes``;
their defaults are the config's own."""


def _default(name: str) -> object:
    return next(f.default for f in fields(BrokerConfig) if f.name == name)


def allow_workers(text: str) -> tuple[str | None, str]:
    """An argparse ``type=`` for ``--allow-workers [SERVICE=]DIR``: ``(service or None, dir)``.

    >>> allow_workers("qpu=/etc/nl/qpu")
    ('qpu', '/etc/nl/qpu')
    >>> allow_workers("/etc/nl/workers")
    (None, '/etc/nl/workers')
    """
    service, sep, directory = text.partition("=")
    if not sep or "/" in service:  # a directory whose name holds "=" has a "/" before it
        return None, text
    if not service or not directory:
        raise argparse.ArgumentTypeError(f"{text!r}: write SERVICE=DIR or DIR")
    return service, directory


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
        "--insecure", action="store_true",
        help="allow binding tcp endpoints other hosts can reach without CURVE: anyone who "
        "reaches them can send requests and register as a worker",
    )  # fmt: skip
    p.add_argument(
        "--ipc-group", metavar="GROUP",
        help="give ipc sockets to this group (name or gid), mode 0660; default: owner only, 0600",
    )  # fmt: skip
    for name, help_text in _SETTINGS.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=_default(name), help=help_text
        )
    p.add_argument(
        "--curve-secret", metavar="FILE",
        help="the broker's secret certificate (NAME.key_secret, from nearloop keygen): "
        "every tcp endpoint becomes a CURVE server, and peers need an allowed key; "
        "ipc endpoints stay open to the file system's owners (default: no CURVE)",
    )  # fmt: skip
    p.add_argument(
        "--allow-clients", metavar="DIR",
        help="public certificates (*.key) of the clients let in; reread on SIGHUP "
        "(default: none)",
    )  # fmt: skip
    p.add_argument(
        "--allow-workers", action="append", type=allow_workers, default=[],
        metavar="[SERVICE=]DIR",
        help="public certificates (*.key) of the workers let in, for SERVICE only or for "
        "every service; they may also act as clients; repeatable; reread on SIGHUP "
        "(default: none)",
    )  # fmt: skip
    add_metrics_options(p, what="the broker")
    add_log_level(p)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    """Entry point; returns the exit status."""
    args = build_parser(prog).parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = BrokerConfig(
            endpoints=tuple(args.bind),
            curve_secret=args.curve_secret,
            allow_clients=args.allow_clients,
            allow_workers=tuple(args.allow_workers),
            insecure=args.insecure,
            ipc_group=args.ipc_group,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
            **{name: getattr(args, name) for name in _SETTINGS},
        )
    except ValueError as exc:
        return fail(exc)
    from zmq import ZMQError

    from broker.broker import Broker
    from broker.errors import BrokerError
    from broker.metrics import broker_registry
    from client.metrics_export import MetricsUnavailable, start_metrics

    try:
        broker = Broker(config)
    except ValueError as exc:  # a key file or allow-list that cannot be read
        return fail(exc)
    try:  # before any bind: a port in use leaves no ipc socket behind
        metrics = start_metrics(broker_registry(broker), args)
    except MetricsUnavailable as exc:
        broker.close()
        return fail(exc)

    def stop(signum: int, frame: FrameType | None) -> None:
        broker.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    auth = broker.auth
    if auth is not None:

        def reload(signum: int, frame: FrameType | None) -> None:
            auth.reload_in_background()

        signal.signal(signal.SIGHUP, reload)
    try:
        endpoints = broker.bind()
    except BrokerError as exc:
        broker.close()
        if metrics is not None:
            metrics.close()
        return fail(exc)
    except ZMQError as exc:
        broker.close()
        if metrics is not None:
            metrics.close()
        return fail(f"cannot bind {' '.join(args.bind)}: {exc}")
    print("READY " + " ".join(endpoints), flush=True)
    try:
        broker.run()
    finally:
        broker.close()
        if metrics is not None:
            metrics.close()
    return 0
