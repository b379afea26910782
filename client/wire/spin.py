"""When a poll loop polls for its next message instead of sleeping, and for how long.

Polling (spinning) catches the next message without a kernel wake-up, which on a VM costs
tens of microseconds a hop. It pays when the next message comes soon, as in a tight
request loop, where each message follows the last within a hop or two. It wastes a CPU
when the gaps are long, as in a stream paced at a millisecond, and on a small node that
CPU is one the decoders need. How soon "soon" is depends on the machine: the same tight
loop leaves gaps of ~15 µs on a fast host and ~120 µs on a slow VM. So no window is
fixed here; :class:`SpinPolicy` fits one to the gaps the loop observes where it runs.

How it decides, every :data:`REFIT_EVERY` messages:

- Gaps are counted in half-octave buckets of nanoseconds, halved at each refit, so the
  counts follow the last hundred or so messages. Recording one gap is a ``bit_length``,
  a few integer operations and an increment.
- The *limit* is the longest spin that can pay: the caller's upper bound, and, when the
  caller reports its own handling time per message (``work_ns``), :data:`WORK_FACTOR`
  times the median of that (a streaming estimate: one comparison a message; a median,
  so that handlings slowed by preemption, which on a loaded 2-core VM are a quarter of
  them, do not stretch it). A tight loop's gap is a
  few handlings long (the peer's own handling, two socket hops, a wake-up: ~5x the
  broker's handling on the development VM), and a paced stream's is many; the handling
  time scales with the machine, so the ratio does not depend on the machine it was
  measured on.
- The window is the upper edge of the bucket holding the 90th percentile of the gaps
  within the limit: between 1x and 1.5x that percentile, which is its safety margin. It
  is at least :data:`MIN_SPIN_NS` and at most the limit.
- The loop spins only while at least :data:`CATCH_SHARE` of all recent gaps, long ones
  included, fit in that window. So at most about a quarter of the spins miss, and no
  spin lasts longer than the limit. A stream paced at 1 ms through the broker has, in
  every period, one gap of most of the period (the wait for the next block), far past
  a limit of ~300 µs, so it never spins; a period near 16 handlings (~500 µs on the
  development VM) is a tight loop by this measure, and spins.
"""

from __future__ import annotations

from typing import Final

MIN_SPIN_NS: Final = 5_000
"""The shortest window (unless ``max_us`` is shorter): below it a spin costs about what
one poll does."""
DEFAULT_MAX_SPIN_US: Final = 2_000
"""The default upper bound on the window: past ~2 ms a sleeping thread's wake-up costs
little next to the wait, on any machine."""
WORK_FACTOR: Final = 16
"""A spin may last at most this many times the loop's median handling of one message."""
REFIT_EVERY: Final = 64
"""Messages between two refits of the window; the gap counts halve at each."""
CATCH_SHARE: Final = (3, 4)
"""Spin only while at least this share (numerator, denominator) of recent gaps would be
caught by the window."""
QUANTILE: Final = (9, 10)
"""The window covers this share (numerator, denominator) of the gaps within the limit."""

_FLOOR: Final = 1 << 10
"""Gaps under ~2 µs (a message already waiting) count in the first two buckets."""
_FIRST: Final = 2 * _FLOOR.bit_length()
_BUCKETS: Final = 2 * 27
"""Half-octave buckets, indexed by twice a gap's bit length plus its second-highest bit
(:func:`bucket`); the last one also counts every longer gap (~50 ms and more)."""
_LAST: Final = _BUCKETS - 1


def bucket(ns: int) -> int:
    """The bucket a gap of ``ns`` nanoseconds counts in: ``ns`` < ``upper_ns(bucket(ns))``,
    and from 4 µs on ``ns`` >= two thirds of it (up to the last bucket, which holds every
    longer gap).

    >>> [bucket(ns) for ns in (0, 1_800, 90_000, 120_000, 10**9)]
    [22, 23, 34, 35, 53]
    """
    v = ns | _FLOOR
    b = v.bit_length()
    i = b << 1 | (v >> (b - 2)) & 1
    return i if i < _BUCKETS else _LAST


def upper_ns(i: int) -> int:
    """The upper edge of bucket ``i``: 1.5 or 2 times its lower edge.

    >>> upper_ns(bucket(90_000)), upper_ns(bucket(120_000))
    (98304, 131072)
    """
    return (3 + (i & 1)) << ((i >> 1) - 2)


class SpinPolicy:
    """Learns from the gaps between messages whether polling for the next one pays, and
    for how long (module docstring).

    ``max_us`` bounds the window; 0 turns spinning off. ``record`` each gap, and the
    loop's own handling time of the message when it has one; read ``spinning`` and
    ``window_ns``.

    >>> p = SpinPolicy(max_us=2_000)
    >>> p.spinning
    False
    >>> for _ in range(2 * REFIT_EVERY):
    ...     p.record(120_000, 25_000)  # a tight loop on a slow machine
    >>> p.spinning, p.window_ns
    (True, 131072)
    >>> for _ in range(2 * REFIT_EVERY):
    ...     p.record(150_000, 25_000)  # a stream paced at 1 ms: the decoder's reply...
    ...     p.record(850_000, 25_000)  # ...then the next block, long after
    >>> p.spinning
    False
    """

    __slots__ = ("_counts", "_left", "limit_ns", "max_ns", "spinning", "window_ns",
                 "work_ns")  # fmt: skip

    def __init__(self, max_us: int = DEFAULT_MAX_SPIN_US) -> None:
        if type(max_us) is not int or max_us < 0:
            raise ValueError(f"max_us must be an integer >= 0, got {max_us!r}")
        self.max_ns = max_us * 1000
        """The upper bound on the window (0: never spin)."""
        self.window_ns = 0
        """How long one spin lasts, from the end of the last message's handling."""
        self.spinning = False
        """Whether the loop should poll for its next message before sleeping."""
        self.limit_ns = self.max_ns
        """The longest spin the last refit allowed."""
        self.work_ns = 0
        """The loop's median handling time of a message, a streaming estimate that each
        one moves 1/32 up or down (0: not measured)."""
        self._counts = [0] * _BUCKETS
        self._left = REFIT_EVERY

    def record(self, gap_ns: int, work_ns: int = 0) -> None:
        """One more message: ``gap_ns`` from the end of handling the last one to this
        one's arrival (0 when it was already waiting), and ``work_ns`` the loop spent
        handling it (0: not measured; then only ``max_us`` bounds the window)."""
        v = gap_ns | _FLOOR  # bucket(gap_ns), inline: this runs once per message
        b = v.bit_length()
        i = b << 1 | (v >> (b - 2)) & 1
        self._counts[i if i < _BUCKETS else _LAST] += 1
        m = self.work_ns
        if work_ns > m:
            self.work_ns = m + (m >> 5) if m else work_ns
        elif work_ns < m:
            self.work_ns = m - (m >> 5)
        self._left -= 1
        if not self._left:
            self.refit()

    def refit(self) -> None:
        """Decide from the gaps counted so far (module docstring); then halve the counts.
        ``record`` calls this every REFIT_EVERY messages."""
        self._left = REFIT_EVERY
        work = self.work_ns
        limit = self.max_ns if not work else min(self.max_ns, WORK_FACTOR * work)
        self.limit_ns = limit
        counts = self._counts
        self._counts = [c >> 1 for c in counts]
        # The buckets a spin within the limit could catch: those whose upper edge fits.
        top = _FIRST
        while top < _LAST and upper_ns(top) <= limit:
            top += 1
        short = sum(counts[_FIRST:top])
        self.spinning = False
        self.window_ns = 0
        if not short:
            return
        need = -(-short * QUANTILE[0] // QUANTILE[1])
        caught = 0
        for i in range(_FIRST, top):
            caught += counts[i]
            if caught >= need:
                self.window_ns = max(upper_ns(i), min(MIN_SPIN_NS, limit))
                break
        self.spinning = caught * CATCH_SHARE[1] >= sum(counts) * CATCH_SHARE[0]

    def __repr__(self) -> str:
        return (
            f"SpinPolicy(spinning={self.spinning}, window_ns={self.window_ns}, "
            f"limit_ns={self.limit_ns}, work_ns={self.work_ns}, max_ns={self.max_ns})"
        )
