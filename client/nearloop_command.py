"""The ``nearloop`` command: every part's command line under one name.

    nearloop broker ...        = python -m broker ...
    nearloop demo|qpu|vqe|qec  = python -m control_sim demo|qpu|vqe|qec ...
    nearloop decoders ...      = python -m decoders ...
    nearloop bench X ...       = python -m bench X ...
    nearloop stats|ping|call   = python -m client stats|ping|call ...
    nearloop keygen DIR NAME   = python -m client keygen DIR NAME

Each subcommand hands the rest of the line to that part's own ``main``, so it is the same
parser, the same options and the same exit status as its ``python -m`` twin; only the
program name in its help and errors reads ``nearloop ...``.

Why it lives in :mod:`client`: it is the one package that every part depends on (the
broker on :mod:`client.wire`, the workers and the control runtime on the client
library), so it is there whatever is installed. It names the parts' command-line modules
as strings and imports one only when its subcommand runs, so it adds no import from
:mod:`client` to the parts above it, and ``nearloop --help`` loads this module alone.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from client.arguments import fail

PROG: Final = "nearloop"


@dataclass(frozen=True, slots=True)
class Subcommand:
    """Where ``nearloop NAME`` goes: ``module.main([*prefix, *rest], prog=...)``."""

    module: str
    """The part's command-line module, which has ``main(argv, *, prog)``."""
    prefix: tuple[str, ...]
    """Arguments put before the rest of the line: the part's own subcommand, if any."""
    twin: str
    """The ``python -m`` command it is the same as."""
    help: str

    def prog(self, name: str) -> str:
        """The program name the part's parser gets: it appends its own subcommand."""
        return PROG if self.prefix else f"{PROG} {name}"


SUBCOMMANDS: Final[dict[str, Subcommand]] = {
    "broker": Subcommand("broker.cli", (), "python -m broker", "the broker"),
    "demo": Subcommand(
        "control_sim.cli", ("demo",), "python -m control_sim demo", "both loops, end to end"
    ),
    "qpu": Subcommand(
        "control_sim.cli", ("qpu",), "python -m control_sim qpu", "a QPU worker (qiskit-aer)"
    ),
    "vqe": Subcommand(
        "control_sim.cli", ("vqe",), "python -m control_sim vqe", "H2 VQE through the broker"
    ),
    "qec": Subcommand(
        "control_sim.cli", ("qec",), "python -m control_sim qec", "a syndrome stream, measured"
    ),
    "decoders": Subcommand("decoders.cli", (), "python -m decoders", "a decoder worker"),
    "bench": Subcommand("bench.cli", (), "python -m bench", "rtt|stream|vqe|decoders|flood|soak"),
    "stats": Subcommand("client.cli", ("stats",), "python -m client stats", "broker counters"),
    "ping": Subcommand(
        "client.cli", ("ping",), "python -m client ping", "does a service have workers?"
    ),
    "call": Subcommand("client.cli", ("call",), "python -m client call", "one request"),
    "keygen": Subcommand(
        "client.cli", ("keygen",), "python -m client keygen", "a CURVE key pair"
    ),
}  # fmt: skip
"""Every subcommand, in the order ``nearloop --help`` lists them."""


def usage() -> str:
    """What ``nearloop --help`` prints."""
    width = max(map(len, SUBCOMMANDS))
    twin_width = max(len(c.twin) for c in SUBCOMMANDS.values())
    lines = [
        f"usage: {PROG} COMMAND [ARGS ...]",
        "",
        "nearloop: low-latency near-time coupling for hybrid quantum-classical computing.",
        "Each command is the same as its python -m twin; see nearloop COMMAND --help.",
        "",
        "commands:",
    ]
    lines += [
        f"  {name:<{width}}  = {c.twin:<{twin_width}}  {c.help}" for name, c in SUBCOMMANDS.items()
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nearloop COMMAND ARGS...``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = (args[0], args[1:]) if args else ("", [])
    command = SUBCOMMANDS.get(name)
    if command is None:
        what = f"unknown command {name!r}" if name else "a command is needed"
        return fail(f"{what}; choose from {', '.join(SUBCOMMANDS)} (see {PROG} --help)")
    part_main = importlib.import_module(command.module).main
    status: int = part_main([*command.prefix, *rest], prog=command.prog(name))
    return status
