"""Fixtures that own real processes and sockets: a broker, worker processes, clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import zmq

from client import Client
from client.lane.support import lane_support_missing
from control_sim.stack.processes import START_TIMEOUT_S, wait_for_line

LANES_MISSING = lane_support_missing()
"""Why this process cannot use shared-memory lanes (the extra missing, or
``NEARLOOP_NO_LANE`` set), or None."""
needs_lanes = pytest.mark.skipif(
    LANES_MISSING is not None, reason=f"no lanes here: {LANES_MISSING}"
)
"""For a test that needs a lane; everything else passes without the lane extra."""

ROOT = Path(__file__).resolve().parent.parent


def wait_until(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def stop_process(
    proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 10
) -> int:
    """Signal, wait with a bound, then kill. Returns the exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(sig)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout)
    return proc.returncode


def spawn(
    args: list[str], runner: Sequence[str] = (), stderr: IO[str] | None = None
) -> subprocess.Popen[str]:
    """Start ``python -m ...`` from the repo root with line-buffered text stdout, under
    ``runner`` if given (``ip netns exec NS``: :mod:`tests.netns`), its stderr to
    ``stderr`` if given."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*runner, sys.executable, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip


def run_module(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ARGS`` from the repo root to its end; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def one_line_error(done: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """Check that a command failed as a user error should: exit ``status`` (2 unless
    told), and exactly one line on stderr, ``error: ...``, with no traceback. Returns it."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@dataclass
class BrokerProc:
    """A running ``python -m broker`` and the endpoints it reported."""

    proc: subprocess.Popen[str]
    endpoints: list[str]

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.proc, sig)


@dataclass
class Stack:
    """Factory for brokers and workers in one temp dir; tears everything down."""

    tmp: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def endpoint(self, transport: str, name: str = "broker") -> str:
        if transport == "ipc":
            return f"ipc://{self.tmp / name}.sock"
        return "tcp://127.0.0.1:*"

    def broker(
        self,
        transport: str = "ipc",
        *extra: str,
        binds: list[str] | None = None,
        runner: Sequence[str] = (),
    ) -> BrokerProc:
        """Start a broker on one endpoint of ``transport``, or on every one of ``binds``
        (under ``runner``, as :func:`spawn`)."""
        args = [a for ep in binds or [self.endpoint(transport)] for a in ("--bind", ep)]
        proc = spawn(["-m", "broker", *args, *extra], runner)
        self.procs.append(proc)
        line = wait_for_line(proc, "READY", START_TIMEOUT_S)
        return BrokerProc(proc, line.split()[1:])

    def worker(self, endpoint: str, service: str = "echo", *extra: str) -> subprocess.Popen[str]:
        return self.server("-m", "tests.peers.nl_worker", endpoint, service, *extra)

    def server(self, *args: str, runner: Sequence[str] = ()) -> subprocess.Popen[str]:
        """Start ``python ARGS`` (a worker, say; under ``runner``, as :func:`spawn`) and
        wait for its READY line."""
        proc = spawn(list(args), runner)
        self.procs.append(proc)
        wait_for_line(proc, "READY", START_TIMEOUT_S, name=" ".join(args[:2]))
        return proc

    def close(self) -> None:
        for p in reversed(self.procs):
            stop_process(p, signal.SIGKILL if p.poll() is None else signal.SIGTERM)


@pytest.fixture
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="nl-") as tmp:
        s = Stack(Path(tmp))
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def wait_for_workers(endpoint: str, service: str, n: int, timeout: float = 10) -> None:
    """Wait until the broker reports ``n`` workers for ``service``."""
    with Client(endpoint, timeout=2) as c:

        def count() -> bool:
            s = c.broker_stats()["services"].get(service, {})
            return bool(s.get("workers", 0) == n)

        wait_until(count, timeout, f"{n} workers of {service!r}", every=0.05)


def broker_stats(endpoint: str) -> dict[str, Any]:
    """One ``mmi.stats`` snapshot."""
    with Client(endpoint, timeout=5) as c:
        return c.broker_stats()


class LaneFiles:
    """What iceoryx2 keeps on this host (``/dev/shm/iox2_*`` and ``/tmp/iceoryx2``),
    snapshotted by :meth:`mark`, so that a test can fail on anything its lanes leave."""

    SHM = Path("/dev/shm")
    STATE = Path("/tmp/iceoryx2")

    def __init__(self) -> None:
        self.before: set[str] = set()

    @classmethod
    def now(cls) -> set[str]:
        files = {str(p) for p in cls.SHM.glob("iox2_*")}
        if cls.STATE.is_dir():
            files |= {str(p) for p in cls.STATE.rglob("*")}
        return files

    def mark(self) -> None:
        """Take the snapshot that :meth:`assert_none_left` compares with."""
        self.before = self.now()

    def left(self) -> set[str]:
        """What has appeared since :meth:`mark` (files other processes remove count
        not)."""
        return self.now() - self.before

    def assert_none_left(self, timeout: float = 15) -> None:
        """Wait (bounded) for the survivors' clean-up; fail naming what is left."""
        try:
            wait_until(lambda: not self.left(), timeout, "iceoryx2 files to go", every=0.05)
        except AssertionError:
            raise AssertionError(f"left behind: {sorted(self.left())}") from None


@pytest.fixture
def lane_files() -> LaneFiles:
    """A :class:`LaneFiles` whose snapshot is taken now, after this process's own
    iceoryx2 node exists (it lives as long as the process)."""
    from client.lane.iox import process_node

    process_node()
    files = LaneFiles()
    files.mark()
    return files
