"""Every command line: the installed ``nearloop`` script, fast help, one vocabulary of
flags, and user errors answered in one line.

The per-part behaviour (a run's results) is tested beside each part; here are the
properties that all the command lines share.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.nearloop_command import SUBCOMMANDS
from client.wire.lanes import LANE_MODES
from tests.conftest import ROOT, one_line_error, run_module

pytestmark = pytest.mark.timeout(60)

NEARLOOP = Path(sys.executable).parent / "nearloop"
HEAVY = {"numpy", "zmq", "stim", "qiskit", "qiskit_aer", "scipy", "matplotlib", "pymatching"}
BENCHES = ("rtt", "stream", "vqe", "decoders")
EVERY_HELP = [[]] + [[name] for name in SUBCOMMANDS] + [["bench", b] for b in BENCHES]
ENV = {**os.environ, "COLUMNS": "100"}  # argparse wraps help to the terminal's width


def nearloop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed script, as a user does."""
    if not NEARLOOP.exists():
        pytest.fail(f"{NEARLOOP} is missing: reinstall nearloop (pip install -e .)")
    return subprocess.run(
        [str(NEARLOOP), *args], cwd=ROOT, env=env or ENV, capture_output=True, text=True,
        timeout=50,
    )  # fmt: skip


def twin(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m PART [SUBCOMMAND] ARGS``, the twin of ``nearloop NAME ARGS``."""
    command = SUBCOMMANDS[name]
    part = command.twin.split()[2]
    return subprocess.run(
        [sys.executable, "-m", part, *command.prefix, *args], cwd=ROOT, env=ENV,
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip


def test_the_script_is_installed_and_lists_every_part() -> None:
    done = nearloop("--help")
    assert done.returncode == 0, done.stderr
    for name, command in SUBCOMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape('= ' + command.twin)} ", done.stdout, re.M)
    for parts in ("broker", "demo", "qpu", "vqe", "qec", "decoders", "bench", "stats", "call"):
        assert parts in SUBCOMMANDS


@pytest.mark.parametrize("args", EVERY_HELP, ids=lambda a: " ".join(a) or "nearloop")
def test_help_is_fast_it_imports_no_heavy_library(args: list[str]) -> None:
    # Python lists every module it imports on stderr when asked to time them.
    done = nearloop(*args, "--help", env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})
    assert done.returncode == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "argparse" in imported or not args  # the timing did list the imports
    assert not imported & HEAVY, sorted(imported & HEAVY)


def _flat(text: str) -> str:
    """Help text without its line wrapping, which depends on the program name's length."""
    return " ".join(text.split())


@pytest.mark.parametrize("name", list(SUBCOMMANDS))
def test_each_subcommand_is_its_python_m_twins_parser(name: str) -> None:
    command = SUBCOMMANDS[name]
    ours, theirs = nearloop(name, "--help"), twin(name, "--help")
    assert ours.returncode == theirs.returncode == 0, ours.stderr + theirs.stderr
    prog_twin = " ".join(command.twin.split()[:3])  # python -m PART
    expected = _flat(theirs.stdout).replace(prog_twin, command.prog(name))
    assert _flat(ours.stdout) == expected
    # The same refusal, in the same words, with the same status.
    ours, theirs = nearloop(name, "--no-such-option"), twin(name, "--no-such-option")
    assert ours.returncode == theirs.returncode == 2
    assert ours.stderr == theirs.stderr.replace(prog_twin, command.prog(name))


def test_an_unknown_or_missing_command_is_one_line() -> None:
    assert "unknown command 'frobnicate'" in one_line_error(nearloop("frobnicate"))
    assert "a command is needed" in one_line_error(nearloop())


# --- one vocabulary -------------------------------------------------------------------------


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every parser of every part, subcommands included, as ``nearloop`` builds them."""
    seen: set[int] = set()
    todo: list[argparse.ArgumentParser] = []
    for name, command in SUBCOMMANDS.items():
        todo.append(importlib.import_module(command.module).build_parser(command.prog(name)))
    while todo:
        parser = todo.pop()
        if id(parser) in seen:
            continue
        seen.add(id(parser))
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += action.choices.values()


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            yield action


def test_every_option_has_help_and_shows_its_default() -> None:
    for prog, parser in _parsers():
        text = parser.format_help()
        assert "default: None" not in text, prog
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{prog} {action.dest}"
            assert action.help and action.help.strip(), f"{where} has no help"
            if not action.option_strings or action.required or action.nargs == 0:
                continue
            # Either the help says the default in words, or the formatter shows the value.
            assert "default" in action.help or action.default is not None, where
        assert "(default: " in text or not list(_options(parser)), prog


def test_the_shared_flags_are_spelled_one_way() -> None:
    retired = {"--timeout", "--iterations", "--vqe-maxiter", "--noise"}
    for prog, parser in _parsers():
        for action in _options(parser):
            assert not retired & set(action.option_strings), (prog, action.option_strings)
            if action.dest == "seed":
                assert isinstance(action.default, int), f"{prog} --seed has no default"
            if action.dest in ("connect", "bind"):
                assert getattr(action.type, "__name__", "") == "endpoint", prog
            if action.dest == "json":
                assert action.metavar == "OUT", prog
            if action.dest == "lane":
                assert tuple(action.choices or ()) == LANE_MODES, prog
                assert action.default == "auto", prog


@pytest.mark.parametrize("name", ["vqe", "demo"])
def test_both_parameter_loop_commands_take_lane(name: str) -> None:
    done = nearloop(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "--lane {auto,off,require}" in done.stdout
    done = nearloop(name, "--lane", "sometimes")
    assert done.returncode == 2 and "argument --lane: invalid choice" in done.stderr


# --- user errors through the real commands ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["broker", "--bind", "localhost:5555"], "names no transport"),
        (["decoders", "--connect", "localhost:5555", "--service", "decode", "--decoder",
          "pymatching"], "names no transport"),
        (["control_sim", "qpu", "--connect", "localhost:5555"], "names no transport"),
        (["decoders", "--connect", "tcp://127.0.0.1", "--service", "decode", "--decoder",
          "pymatching"], "needs a host and a port"),
        # ZeroMQ itself would bind port 99999 - 65536 = 34463 without a word.
        (["broker", "--bind", "tcp://127.0.0.1:99999"], "PORT up to 65535"),
        (["decoders", "--connect", "ipc:///tmp/nl-x.sock", "--service", "decode", "--decoder",
          "pymatching", "--device", "cuda"], "--device is an option of bp-gpu"),
        (["bench", "decoders", "--distance", "4"], "the distance must be odd and >= 3, got 4"),
        (["bench", "stream", "--distances", "5,8"], "the distance must be odd and >= 3, got 8"),
    ],
    ids=["broker", "decoders", "qpu", "tcp-port", "port-range", "device", "bench-decoders",
         "bench-stream"],
)  # fmt: skip
def test_a_bad_endpoint_or_option_is_one_line(args: list[str], says: str) -> None:
    assert says in one_line_error(run_module(*args, timeout=50))


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_bp_gpu_on_cuda_without_cupy_is_one_line() -> None:
    args = ["--connect", "ipc:///tmp/nl-x.sock", "--service", "decode"]
    done = run_module("decoders", *args, "--decoder", "bp-gpu", "--device", "cuda", timeout=50)
    assert "bp-gpu: device 'cuda' is unavailable" in one_line_error(done)
