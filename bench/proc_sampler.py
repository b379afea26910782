"""Resident memory and open file descriptors of processes over time, read from ``/proc``.

A long run watches every process it drives: its own, the broker's, the workers'. Each
process *incarnation* is a :class:`ProcSeries` of its own: a worker started to replace
a killed one, or a broker restarted on the same endpoint, is a new series under a new
name, so that one process's growth is never read across a restart. A
:class:`ProcSampler` thread reads them all every ``period_s`` seconds.

- RSS is ``VmRSS`` of ``/proc/PID/status``, in KiB.
- Open file descriptors are the entries of ``/proc/PID/fd``. For this process the
  listing's own directory descriptor is among them, one more at every sample alike.

Elsewhere than Linux, or for a process that has exited, a read returns None and no
sample is recorded.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB; None if it cannot be read (gone, or not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie has no VmRSS line


def open_fds(pid: int) -> int | None:
    """How many file descriptors ``pid`` has open; None if they cannot be listed."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass(slots=True)
class ProcSeries:
    """One process incarnation's samples: ``t_s`` (seconds since the run's start),
    ``rss_kib`` and ``fds``, in step; ``ended_s`` is set when it was killed or stopped."""

    name: str
    role: str
    pid: int
    started_s: float
    ended_s: float | None = None
    t_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def sample(self, t_s: float) -> bool:
        """Read the process now and record it at ``t_s``; False if it could not be read."""
        rss, fds = rss_kib(self.pid), open_fds(self.pid)
        if rss is None or fds is None:
            return False
        self.t_s.append(t_s)
        self.rss_kib.append(rss)
        self.fds.append(fds)
        return True

    def to_dict(self) -> dict[str, Any]:
        """The series as JSON-ready data."""
        return {
            "name": self.name,
            "role": self.role,
            "pid": self.pid,
            "started_s": self.started_s,
            "ended_s": self.ended_s,
            "t_s": self.t_s,
            "rss_kib": self.rss_kib,
            "fds": self.fds,
        }


class ProcSampler:
    """A daemon thread that samples every watched process every ``period_s`` seconds.

    Times are seconds since ``t0_ns`` (a ``time.perf_counter_ns()`` value). :meth:`watch`
    adds a process (a new series), :meth:`ended` closes one with a last sample taken
    just before; both may be called from any thread.
    """

    def __init__(self, period_s: float, t0_ns: int) -> None:
        if period_s <= 0:
            raise ValueError(f"the sampling period must be > 0 s, got {period_s}")
        self.period_s = period_s
        self.t0_ns = t0_ns
        self._series: list[ProcSeries] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proc-sampler", daemon=True)

    def now_s(self) -> float:
        """Seconds since the run's start."""
        return (time.perf_counter_ns() - self.t0_ns) / 1e9

    def watch(self, name: str, role: str, pid: int) -> ProcSeries:
        """Start a series for process ``pid`` (sampled at once)."""
        series = ProcSeries(name, role, pid, started_s=self.now_s())
        with self._lock:
            series.sample(series.started_s)
            self._series.append(series)
        return series

    def ended(self, series: ProcSeries) -> None:
        """Take a last sample of ``series`` (if it still runs) and stop sampling it."""
        with self._lock:
            now = self.now_s()
            series.sample(now)
            series.ended_s = now

    def sample_all(self) -> None:
        """Sample every series that has not ended."""
        with self._lock:
            now = self.now_s()
            for s in self._series:
                if s.ended_s is None:
                    s.sample(now)

    @property
    def series(self) -> list[ProcSeries]:
        """Every series, in the order watched."""
        with self._lock:
            return list(self._series)

    def start(self) -> None:
        """Start the sampling thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (bounded wait) after one last sample of every live series."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(5.0, 2 * self.period_s))
        self.sample_all()

    def _run(self) -> None:
        next_s = self.now_s() + self.period_s
        while not self._stop.wait(max(next_s - self.now_s(), 0.0)):
            self.sample_all()
            next_s += self.period_s
