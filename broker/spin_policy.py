"""When the broker polls for its next message instead of sleeping in the kernel.

Polling (spinning) after a message catches the next one without a kernel wake-up, which
on a VM costs tens of microseconds a hop. It pays when the next message comes soon, as in
a tight request loop, where the worker's reply and the client's next request each follow
within a hop or two. It wastes a CPU when the gaps are long, as in a stream paced at a
millisecond, and on a small node that CPU is one the decoders need. So the broker spins
only while most recent gaps between messages were shorter than the spin window.
"""

from __future__ import annotations

from typing import Final

_ONE: Final = 1 << 10
"""Fixed-point 1.0 of the running share."""
_SHIFT: Final = 3
"""Each gap moves the running share 1/8 of the way to 0 or 1."""
_ON: Final = _ONE * 3 // 4
"""Spin while at least this share (3/4) of recent gaps fit in the window."""


class SpinPolicy:
    """Learns from the gaps between messages whether polling for the next one pays.

    >>> p = SpinPolicy(window_us=100)
    >>> p.spinning
    False
    >>> for _ in range(20):
    ...     p.record(30_000)  # 30 µs gaps: a tight loop
    >>> p.spinning
    True
    >>> for _ in range(20):
    ...     p.record(900_000)  # 900 µs gaps: a paced stream
    >>> p.spinning
    False
    """

    __slots__ = ("_share", "spinning", "window_ns")

    def __init__(self, window_us: int) -> None:
        if window_us < 0:
            raise ValueError(f"window_us must be >= 0, got {window_us}")
        self.window_ns = window_us * 1000
        """How long one spin lasts, from the end of the last message's handling."""
        self.spinning = False
        """Whether the broker should poll for the next message before sleeping."""
        self._share = 0

    def record(self, gap_ns: int) -> None:
        """One more gap: the time from the end of handling one message to the next one's
        arrival (0 when it was already waiting)."""
        hit = _ONE if gap_ns < self.window_ns else 0
        self._share += (hit - self._share) >> _SHIFT
        self.spinning = self._share >= _ON
