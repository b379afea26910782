"""CPU time spent by server processes, to report beside latency.

Polling trades CPU for latency, and on two cores that CPU is what the decoders need, so
every benchmark that polls says what it spent. A benchmark's own process reads its time
from :func:`time.process_time_ns`; a server's comes from Linux's per-thread scheduler
statistics (``/proc/PID/task/TID/schedstat``, nanoseconds on the CPU), summed over its
threads. Elsewhere a server's time is None.

The kernel brings a thread's figure up to date when the thread sleeps or is switched
out, and otherwise only at a timer tick (every 1-10 ms). A thread that polls without
sleeping is therefore read right only while it sleeps: read the servers after
:func:`wait_asleep`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

SETTLE_TIMEOUT_S = 0.5
"""How long :func:`wait_asleep` waits for a server to stop running."""


def process_cpu_ns(pid: int) -> int | None:
    """CPU time so far of every live thread of process ``pid``, in ns; None if it cannot
    be read (no ``/proc`` schedstat, or the process is gone)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, read = 0, False
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that exited while we looked, or no schedstat here
        read = True
    return total if read else None


def processes_cpu_ns(pids: Iterable[int]) -> int | None:
    """The summed CPU time of ``pids`` (see :func:`process_cpu_ns`); None if any is
    unreadable."""
    total = 0
    for pid in pids:
        ns = process_cpu_ns(pid)
        if ns is None:
            return None
        total += ns
    return total


def _running(pid: int) -> bool:
    """True if a thread of ``pid`` is on a CPU or ready for one (state R)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "R":
            return True
    return False


def wait_asleep(pids: Iterable[int], timeout_s: float = SETTLE_TIMEOUT_S) -> bool:
    """Wait, up to ``timeout_s``, until no thread of ``pids`` is running; True if none is.

    Servers that poll for a while after their last message (the broker's spin) or until
    told to stop (the shared-memory floor's) go to sleep within microseconds to
    milliseconds, so this returns at once or soon.
    """
    pids = tuple(pids)
    deadline = time.monotonic_ns() + int(timeout_s * 1e9)
    while any(_running(pid) for pid in pids):
        if time.monotonic_ns() >= deadline:
            return False
        time.sleep(0.0002)  # off the timed path: a check per 200 µs is plenty
    return True
