"""The README, followed top to bottom as a new user follows it: every fenced block, in order.

A block's info string says what the reader does with it, and what this test does:

- ``sh`` / ``python``: run it to the end, in a fresh shell or a fresh interpreter
  (``python -c``); it must exit 0. A ``print(...)  # prints TEXT`` line in a Python
  block says what it prints, and the output is checked line by line.
- ``sh server`` / ``python server``: a process that keeps running (a broker, a worker),
  started in the background and waited for through its ``READY`` line; it runs until
  the end, so that later blocks find it, as they would in the reader's other terminal.
- ``sh bench``: a long benchmark; each command is parsed by its real parser, and must
  write under ``bench-out/``, but is not run (tests/test_bench_rtt.py and test_vqe.py
  run small ones).
- ``sh setup``: the installs (Quick start, Development), which ``.ci/run`` runs.
- ``text``: not code.

Commands run in a temporary directory, with this interpreter's ``bin/`` first on PATH
(``nearloop``, ``python``). The endpoint ``ipc:///tmp/nearloop.sock`` becomes one in a
temporary directory, and ``tcp://127.0.0.1:5555`` an ephemeral port.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.nearloop_command import SUBCOMMANDS
from tests.conftest import ROOT, START_TIMEOUT_S, stop_process, wait_for_line

README_ENDPOINT = "ipc:///tmp/nearloop.sock"
README_TCP = "tcp://127.0.0.1:5555"
RUN_TIMEOUT_S = 240.0
KINDS = {"sh", "python", "sh server", "python server", "sh bench", "sh setup", "text"}


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    kind: str
    code: str
    line: int

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.kind})"


def readme_blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    blocks = []
    for m in re.finditer(r"^```([^\n]*)\n(.*?)^```$", text, flags=re.S | re.M):
        line = text.count("\n", 0, m.start()) + 1
        blocks.append(Block(" ".join(m.group(1).split()), m.group(2), line))
    return blocks


def commands(code: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = (line.split(" #")[0].strip() for line in joined.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def expected_prints(code: str) -> list[str]:
    """What a Python block says it prints: ``print(...)  # prints TEXT`` lines, in order."""
    return re.findall(r"print\(.*\)\s+# prints (.*)$", code, flags=re.M)


def test_every_block_says_what_it_is_and_quick_start_is_two_commands() -> None:
    blocks = readme_blocks()
    assert {b.kind for b in blocks} <= KINDS, {str(b) for b in blocks if b.kind not in KINDS}
    quick_start = blocks[0]
    assert quick_start.kind == "sh setup" and len(commands(quick_start.code)) == 2
    for command in commands(quick_start.code):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e")


def test_bench_commands_are_valid_and_write_under_bench_out() -> None:
    checked = 0
    for block in readme_blocks():
        if block.kind != "sh bench":
            continue
        for command in commands(block.code):
            argv = shlex.split(command)
            assert argv[0] == "nearloop", f"{block}: {command}"
            sub = SUBCOMMANDS[argv[1]]
            parser = importlib.import_module(sub.module).build_parser(sub.prog(argv[1]))
            args = parser.parse_args([*sub.prefix, *argv[2:]])  # exits 2 on a bad flag
            for out in (args.json, args.plot):
                assert out is not None and out.parts[0] == "bench-out", f"{block}: {out}"
            checked += 1
    assert checked >= 3  # rtt, stream, vqe


class Reader:
    """A new user at a shell: a temp dir, the README's endpoint there, servers kept."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: list[subprocess.Popen[str]] = []
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        if not (Path(bin_dir) / "nearloop").exists():
            pytest.fail(f"no nearloop script in {bin_dir}: reinstall nearloop (pip install -e .)")

    def localize(self, code: str) -> str:
        code = code.replace(README_ENDPOINT, f"ipc://{self.tmp}/nearloop.sock")
        return code.replace(README_TCP, "tcp://127.0.0.1:*")

    def run(self, block: Block) -> None:
        code = self.localize(block.code)
        if block.kind == "sh":
            argv = ["bash", "-euo", "pipefail", "-c", code]
        else:
            argv = [sys.executable, "-c", code]
        done = subprocess.run(
            argv, cwd=self.tmp, env=self.env, capture_output=True, text=True,
            timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        assert done.returncode == 0, f"{block} exited {done.returncode}:\n{done.stderr}"
        if block.kind == "python" and (want := expected_prints(block.code)):
            assert done.stdout.splitlines() == want, f"{block} printed {done.stdout!r}"

    def start(self, block: Block) -> None:
        code = self.localize(block.code)
        if block.kind == "python server":
            starts = [[sys.executable, "-c", code]]
        else:
            starts = [["bash", "-c", "exec " + command] for command in commands(code)]
        for argv in starts:
            proc = subprocess.Popen(
                argv, cwd=self.tmp, env=self.env, stdout=subprocess.PIPE, text=True,
                start_new_session=True,
            )  # fmt: skip
            self.servers.append(proc)
            wait_for_line(proc, "READY", START_TIMEOUT_S, name=str(block))

    def close(self) -> None:
        for proc in reversed(self.servers):
            stop_process(proc, signal.SIGTERM)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def reader() -> Iterator[Reader]:
    with tempfile.TemporaryDirectory(prefix="nl-readme-") as tmp:  # short: ipc paths
        r = Reader(Path(tmp))
        try:
            yield r
        finally:
            r.close()


@pytest.mark.timeout(900)
def test_the_readme_runs_top_to_bottom(reader: Reader) -> None:
    ran: list[str] = []
    for block in readme_blocks():
        if block.kind in ("sh", "python"):
            reader.run(block)
        elif block.kind in ("sh server", "python server"):
            reader.start(block)
        else:
            continue
        ran.append(block.kind)
    # The broker, the worker, the QPU worker and the decoders; the snippets and commands.
    assert ran.count("sh server") + ran.count("python server") >= 4
    assert ran.count("python") >= 3 and ran.count("sh") >= 3
    assert (reader.tmp / "bench-out" / "qec.json").is_file()  # --json made its folder
