"""What every command line shares: one parser class, one vocabulary of flags, one JSON writer.

Each part's command line (``python -m broker|client|decoders|control_sim|bench``, and the
``nearloop`` command that runs them all) builds its parser as a :class:`CommandParser`
and its common options with the ``add_*`` helpers here, so that a flag means the same
thing, and is spelled the same way, wherever it appears:

- ``--connect EP``: the broker's endpoint, checked for a transport (:func:`endpoint`);
- ``--timeout-s S``: a bound, in seconds, on each call to the broker;
- ``--seed N``: always with a default, :data:`DEFAULT_SEED`;
- ``--maxiter N``: optimizer iterations;
- ``--p P``: circuit-level noise strength;
- ``--distance D``: a code distance, odd and at least :data:`MIN_DISTANCE`;
- ``--json OUT``: write the summary there; :func:`write_json` creates its folder.

Every option has help text, and the help shows its default. A user error prints one
line, ``error: ...``, on stderr and exits :data:`USAGE_ERROR` (2), through
:meth:`CommandParser.error` at parse time and :func:`fail` after it. A run that went
ahead and failed exits :data:`RUN_FAILED` (1). A traceback means a bug.

Only the standard library is imported here, so building a parser (``--help``) is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

USAGE_ERROR: Final = 2
"""Exit status of a command given something it cannot do (argparse's own, too)."""
RUN_FAILED: Final = 1
"""Exit status of a command that ran and failed (a block failed, a server did not start)."""

DEFAULT_SEED: Final = 2026
"""The seed a command uses when given none: runs are reproducible unless asked otherwise."""
DEFAULT_P: Final = 0.001
"""The circuit-level noise strength the QEC commands use when given none."""
MIN_DISTANCE: Final = 3
"""The smallest code distance the commands take: the smallest that corrects an error."""

LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TRANSPORTS: Final = ("tcp", "ipc", "inproc")
"""The ZeroMQ transports a nearloop endpoint may name."""
MAX_PORT: Final = 65_535


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, unless the help already says it
    (``default: a local stack``) or there is nothing to show (``None``, a flag's off)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        nothing = action.default is None or action.default is False
        if "default" in text or nothing or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help shows defaults, and whose errors are one line.

    A usage error prints ``error: MESSAGE (see PROG --help)`` on stderr, not argparse's
    usage block, and exits :data:`USAGE_ERROR`. Subcommand parsers are of this class too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the one-line error and exit with :data:`USAGE_ERROR`."""
        self.exit(USAGE_ERROR, f"error: {message} (see {self.prog} --help)\n")


def add_command(
    commands: argparse._SubParsersAction[Any], name: str, *, help: str, description: str
) -> CommandParser:
    """Add subcommand ``name``; parsing it sets ``command_parser`` to its own parser, so
    that a check after parsing reports its error against the subcommand."""
    parser: CommandParser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(command_parser=parser)
    return parser


def fail(message: object, status: int = USAGE_ERROR) -> int:
    """Print ``error: MESSAGE`` as one line on stderr; returns ``status`` to exit with.

    >>> fail("no broker", status=RUN_FAILED)
    1
    """
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"error: {text}", file=sys.stderr)
    return status


# --- argument types ------------------------------------------------------------------------


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` that takes an integer >= ``minimum`` (and <= ``maximum``).

    >>> int_at_least(1)("3")
    3
    """
    bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"

    def parse(text: str) -> int:
        value = _int(text)
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = f"int {bounds}"
    return parse


def check_distance(value: int) -> int:
    """``value`` if it is an odd code distance >= :data:`MIN_DISTANCE`, else ``ValueError``.

    The one rule for every command's ``--distance``.

    >>> check_distance(5)
    5
    """
    if value < MIN_DISTANCE or value % 2 == 0:
        raise ValueError(f"the distance must be odd and >= {MIN_DISTANCE}, got {value}")
    return value


def distance(text: str) -> int:
    """An argparse ``type=`` for a code distance (:func:`check_distance`)."""
    try:
        return check_distance(_int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    """An argparse ``type=`` that takes a finite float > 0.

    >>> positive_float("0.5")
    0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def endpoint(text: str) -> str:
    """An argparse ``type=`` for a ZeroMQ endpoint: ``tcp://HOST:PORT``, ``ipc:///PATH``
    or ``inproc://NAME``. An endpoint without its transport is refused here, with the
    spelling it needs, rather than by ZeroMQ with ``Invalid argument``.

    >>> endpoint("tcp://127.0.0.1:5555")
    'tcp://127.0.0.1:5555'
    >>> endpoint("localhost:5555")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'localhost:5555' names no transport: write tcp://localhost:5555, ...
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        tcp = f"tcp://{text}" if ":" in text else f"tcp://{text}:PORT"
        raise argparse.ArgumentTypeError(
            f"{text!r} names no transport: write {tcp}, ipc:///PATH or inproc://NAME"
        )
    if scheme not in TRANSPORTS or not rest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an endpoint: write tcp://HOST:PORT, ipc:///PATH or inproc://NAME"
        )
    host, _, port = rest.rpartition(":")
    if scheme == "tcp" and not (
        host and (port == "*" or (port.isdigit() and int(port) <= MAX_PORT))
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r} needs a host and a port: tcp://HOST:PORT, PORT up to {MAX_PORT} or *"
        )
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"need an integer, got {text!r}") from None


# --- the shared vocabulary -----------------------------------------------------------------


def add_connect(p: argparse.ArgumentParser, *, help: str, required: bool = False) -> None:
    """``--connect EP``: the broker's endpoint."""
    p.add_argument("--connect", type=endpoint, metavar="EP", required=required, help=help)


def add_timeout_s(p: argparse.ArgumentParser, *, default: float, help: str) -> None:
    """``--timeout-s S``: a bound in seconds; ``help`` says on what."""
    p.add_argument("--timeout-s", type=positive_float, default=default, metavar="S", help=help)


def add_seed(p: argparse.ArgumentParser, *, help: str, default: int = DEFAULT_SEED) -> None:
    """``--seed N``, with a default; ``help`` says what it seeds."""
    p.add_argument("--seed", type=_int, default=default, metavar="N", help=help)


def add_maxiter(p: argparse.ArgumentParser, *, help: str, default: int | None = None) -> None:
    """``--maxiter N``: optimizer iterations; a ``None`` default is explained in ``help``."""
    p.add_argument("--maxiter", type=int_at_least(1), default=default, metavar="N", help=help)


def add_p(p: argparse.ArgumentParser, *, default: float = DEFAULT_P) -> None:
    """``--p P``: circuit-level noise strength, checked by the code's own spec."""
    p.add_argument(
        "--p", type=float, default=default, metavar="P",
        help="circuit-level noise strength, 0 <= P < 0.5",
    )  # fmt: skip


def add_distance(p: argparse.ArgumentParser, *, default: int, help: str = "") -> None:
    """``--distance D``: a code distance, odd and >= :data:`MIN_DISTANCE`."""
    words = f"code distance, odd and >= {MIN_DISTANCE}"
    p.add_argument(
        "--distance", type=distance, default=default, metavar="D",
        help=f"{help}, {words}" if help else words,
    )  # fmt: skip


def add_json(p: argparse.ArgumentParser, *, what: str = "the summary") -> None:
    """``--json OUT``: write ``what`` there as JSON (with :func:`write_json`)."""
    p.add_argument(
        "--json", type=Path, metavar="OUT",
        help=f"write {what} as JSON to OUT, creating its folder (default: none written)",
    )  # fmt: skip


def add_worker_options(p: argparse.ArgumentParser, *, credit: int, what: str) -> None:
    """What a worker declares in its READY (PROTOCOL.md §3.4): ``--credit``, the ``what``
    the broker may have in flight at it, and ``--heartbeat-ms``, each within the
    protocol's limits; and ``--log-level``."""
    from client.wire.limits import (
        DEFAULT_HEARTBEAT_MS,
        MAX_CREDIT,
        MAX_HEARTBEAT_MS,
        MIN_HEARTBEAT_MS,
    )

    p.add_argument(
        "--credit", type=int_at_least(1, MAX_CREDIT), default=credit,
        help=f"{what} the broker may have in flight here",
    )  # fmt: skip
    p.add_argument(
        "--heartbeat-ms", type=int_at_least(MIN_HEARTBEAT_MS, MAX_HEARTBEAT_MS),
        default=DEFAULT_HEARTBEAT_MS, help="heartbeat interval",
    )  # fmt: skip
    add_log_level(p)


DEFAULT_METRICS_HOST: Final = "127.0.0.1"
"""Loopback: metrics carry service names and queue states, so exposing them is a choice."""


def add_metrics_options(p: argparse.ArgumentParser, *, what: str) -> None:
    """``--metrics-port`` and ``--metrics-host``, the same on every part that exports
    (:mod:`client.metrics_export`)."""
    p.add_argument(
        "--metrics-port", type=int_at_least(0, 65535), default=None, metavar="PORT",
        help=f"serve Prometheus metrics of {what} at http://HOST:PORT/metrics (0: any free "
        "port), announced on a line starting with METRICS (default: no metrics)",
    )  # fmt: skip
    p.add_argument(
        "--metrics-host", default=DEFAULT_METRICS_HOST, metavar="HOST",
        help=f"address the metrics endpoint binds (default {DEFAULT_METRICS_HOST})",
    )  # fmt: skip


def configure_logging(level: str) -> None:
    """Log at ``level`` on stderr, with times: what a server process does at its start."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )


def add_log_level(p: argparse.ArgumentParser) -> None:
    """``--log-level``: what a server process logs on stderr."""
    p.add_argument(
        "--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
        help="what to log on stderr",
    )  # fmt: skip


def write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` as indented JSON, creating the folder it goes in.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = Path(tmp) / "new" / "run.json"
    ...     write_json(out, {"ok": True})
    ...     out.read_text()
    '{\\n  "ok": true\\n}\\n'
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
