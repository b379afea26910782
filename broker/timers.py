"""The broker's timers: one heap of (due time, kind, object), the earliest first.

Heartbeats to workers, worker expiry, request expiry and idle-session expiry are all
entries here. The broker's poll sleeps until the head falls due, and runs the due
entries between messages, never once per message (Majordomo's ``mediate`` shape).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Any, Final

HEARTBEAT: Final = 0
"""Send a worker its HEARTBEAT (and schedule the next)."""
EXPIRE_WORKER: Final = 1
"""Check whether a worker has been silent for its liveness window."""
EXPIRE_REQUEST: Final = 2
"""Fail a request still queued at its deadline with ``no_worker``."""
EXPIRE_SESSION: Final = 3
"""Forget a session idle for ``session_idle_ms`` with nothing in flight."""

_MS: Final = 1_000_000


class Timers:
    """Entries ``(due_ns, tiebreak, kind, obj)`` on a heap; times are ``monotonic_ns``.

    >>> t = Timers()
    >>> t.push(2_000_000, HEARTBEAT, "w1")
    >>> t.push(1_000_000, EXPIRE_REQUEST, "r1")
    >>> t.timeout_ms(0, cap_ms=250), list(t.pop_due(1_500_000))
    (1, [(2, 'r1')])
    """

    __slots__ = ("_tiebreak", "heap")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int, Any]] = []
        """The heap itself; ``heap[0][0]`` is the earliest due time (the loop's fast check)."""
        self._tiebreak = itertools.count()

    def push(self, due_ns: int, kind: int, obj: Any) -> None:
        """Schedule ``kind`` for ``obj`` at ``due_ns``."""
        heapq.heappush(self.heap, (due_ns, next(self._tiebreak), kind, obj))

    def pop_due(self, now_ns: int) -> Iterator[tuple[int, Any]]:
        """Pop, earliest first, every entry due by ``now_ns``: ``(kind, obj)``. Entries
        pushed while iterating are seen too, if they are due."""
        heap, pop = self.heap, heapq.heappop
        while heap and heap[0][0] <= now_ns:
            _, _, kind, obj = pop(heap)
            yield kind, obj

    def timeout_ms(self, now_ns: int, cap_ms: int) -> int:
        """How long a poll may sleep: until the head falls due (rounded up), at most
        ``cap_ms``."""
        if not self.heap:
            return cap_ms
        return min(cap_ms, max(0, -(-(self.heap[0][0] - now_ns) // _MS)))

    def __len__(self) -> int:
        return len(self.heap)

    def __repr__(self) -> str:
        head = self.heap[0][0] if self.heap else None
        return f"Timers({len(self.heap)} entries, next due {head})"
