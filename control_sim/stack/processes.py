"""Local server processes (broker, workers): start, wait for READY, and always tear down.

The embedded local stacks of ``python -m control_sim`` and the benchmarks use this.
Every server runs in its own session (``start_new_session``), so a Ctrl-C at the terminal
reaches only the program that started it, which then stops the servers itself: SIGTERM,
a bounded wait, then SIGKILL. Servers from :mod:`bench.rtt_servers` also exit when their
stdin closes, so they cannot outlive a benchmark that was killed outright.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from control_sim.errors import ServerStartError

START_TIMEOUT_S: Final = 30.0
"""How long a server may take to print READY (imports on a loaded 2-core box are slow)."""
STOP_TIMEOUT_S: Final = 5.0
"""How long a server may take to exit after SIGTERM, and again after SIGKILL."""

_ROOT: Final = Path(__file__).resolve().parent.parent


class ServerGroup:
    """A group of server processes; leaving the ``with`` block stops them all.

    >>> with ServerGroup() as servers:                                  # doctest: +SKIP
    ...     servers.start("broker", ["-m", "broker", "--bind", "ipc:///tmp/b.sock"])
    ...     servers.wait_ready()
    """

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen[str]]] = []
        self._unready: deque[tuple[str, subprocess.Popen[str]]] = deque()

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[str]:
        """Start ``python ARGS`` from the repository root; it must print a READY line."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._procs.append((name, proc))
        self._unready.append((name, proc))
        return proc

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> dict[str, str]:
        """Wait until every server started since the last call has printed a line that
        starts with READY; returns those lines by server name.

        Raises ServerStartError after ``timeout`` seconds, or as soon as one exits.
        """
        deadline = time.monotonic() + timeout
        lines = {}
        while self._unready:
            name, proc = self._unready[0]
            left = max(deadline - time.monotonic(), 0.0)
            lines[name] = wait_for_line(proc, "READY", left, name=name)
            self._unready.popleft()
        return lines

    @property
    def pids(self) -> tuple[int, ...]:
        """The process ids of the servers started, oldest first (to read their CPU time)."""
        return tuple(proc.pid for _, proc in self._procs)

    def process(self, name: str) -> subprocess.Popen[str]:
        """The process started last under ``name`` (a restarted broker, say)."""
        for n, proc in reversed(self._procs):
            if n == name:
                return proc
        raise KeyError(name)

    def stop(self) -> None:
        """Stop every server, newest first: SIGTERM, bounded wait, SIGKILL."""
        self._unready.clear()
        while self._procs:
            name, proc = self._procs.pop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    print(f"{name} ignored SIGTERM; killing it", file=sys.stderr)
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        running = [f"{n}:{p.pid}" for n, p in self._procs if p.poll() is None]
        return f"ServerGroup(running=[{', '.join(running)}])"


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise KeyboardInterrupt at once.

    So ``with`` blocks unwind and stop their servers on SIGTERM too. It also keeps Ctrl-C
    immediate inside ``asyncio.run``/``uvloop.run``, whose own SIGINT handler only cancels
    the main task at its next ``await``, which a blocking timed loop may not reach for
    seconds. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_line(
    proc: subprocess.Popen[str], prefix: str, timeout_s: float, *, name: str = "server"
) -> str:
    """Read ``proc``'s stdout (a text pipe) until a line starts with ``prefix``; returns
    that line, stripped. The one READY-line wait: the local stacks, the benchmarks and
    the tests all use it.

    Raises:
        ServerStartError: no such line within ``timeout_s`` seconds, or the process
            exited (or closed its stdout) first. ``name`` says which server it was.
    """
    if proc.stdout is None:
        raise ServerStartError(name, proc.pid, "has no stdout pipe")
    # Read the pipe's file descriptor a byte at a time, up to each newline: a buffered
    # readline would take the lines after this one into its buffer, where the next wait
    # (a select on the descriptor) would not see them, as when a METRICS line and the
    # READY line after it arrive together.
    fd = proc.stdout.fileno()
    line = bytearray()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"printed no {prefix!r} line within {timeout_s:g} s"
                raise ServerStartError(name, proc.pid, why)
            if not sel.select(left):
                continue
            byte = os.read(fd, 1)
            if not byte:
                status = proc.wait(STOP_TIMEOUT_S)
                why = f"exited with {status} before printing {prefix!r}; see its stderr above"
                raise ServerStartError(name, proc.pid, why)
            if byte != b"\n":
                line += byte
                continue
            text = line.decode(errors="replace")
            line.clear()
            if text.startswith(prefix):
                return text.strip()
