"""A fixed-cadence clock for emitting syndrome blocks, and the slip it measures.

Tick ``k`` is due at ``start_ns + k * period_ns`` on ``time.perf_counter_ns()``. The
schedule never moves: when the producer falls behind, late ticks are released at once
and their lateness is recorded as *slip*, so a report shows how far the producer fell
behind instead of a quietly stretched period.

Waiting sleeps coarsely until ``spin_us`` before the tick, then spins on
``perf_counter_ns`` for the rest: ``time.sleep`` on Linux overshoots by 50-100 us or
more (timer slack plus the wake-up), which alone would miss a 100 us period.

>>> clock = PacingClock(None)
>>> t0 = clock.wait_next()
>>> t1 = clock.wait_next()
>>> t1 >= t0 and clock.ticks == 2 and clock.slip_us_max == 0.0
True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from control_sim.qec.integers import check_int

__all__ = ["DEFAULT_SPIN_US", "PacingClock", "PacingStats"]

#: Default busy-wait stretch before each tick. It covers the p99 overshoot of
#: ``time.sleep`` measured on a loaded 2-core VM (~110 us) with some room.
DEFAULT_SPIN_US: Final = 200

_NS_PER_US: Final = 1_000
_NS_PER_S: Final = 1_000_000_000


@dataclass(frozen=True)
class PacingStats:
    """A snapshot of a clock's counters.

    ``late_ticks`` counts ticks that were already due when ``wait_next()`` was called
    (the producer was behind); ``slip_us_*`` are over all ticks, in microseconds.
    """

    period_us: int | None
    ticks: int
    late_ticks: int
    slip_us_max: float
    slip_us_mean: float


class PacingClock:
    """Releases ticks every ``period_us`` microseconds, or at once when it is ``None``.

    The schedule is anchored at ``start_ns`` (a ``time.perf_counter_ns()`` value) or, by
    default, at the first :meth:`wait_next` call, which is tick 0 and returns at once.
    ``spin_us`` is how long before each tick the clock stops sleeping and busy-waits;
    raise it on a noisier machine, lower it to spend less CPU on long periods.
    """

    def __init__(
        self, period_us: int | None, *, spin_us: int = DEFAULT_SPIN_US, start_ns: int | None = None
    ) -> None:
        self._period_us = (
            None if period_us is None else check_int("period_us", period_us, 1, unit="us")
        )
        self._period_ns = None if period_us is None else period_us * _NS_PER_US
        self._spin_ns = check_int("spin_us", spin_us, 0, unit="us") * _NS_PER_US
        self._start_ns = start_ns
        self._ticks = 0
        self._late_ticks = 0
        self._slip_ns_max = 0
        self._slip_ns_total = 0

    @property
    def spin_ns(self) -> int:
        """How long before each tick the clock stops sleeping and busy-waits, in ns."""
        return self._spin_ns

    @property
    def period_us(self) -> int | None:
        """The tick period, or ``None`` for an unpaced clock."""
        return self._period_us

    @property
    def start_ns(self) -> int | None:
        """When tick 0 is due (``perf_counter_ns``); ``None`` until the first tick if unset."""
        return self._start_ns

    @property
    def next_due_ns(self) -> int | None:
        """When the next tick is due, or ``None`` if unpaced or not started yet."""
        if self._period_ns is None or self._start_ns is None:
            return None
        return self._start_ns + self._ticks * self._period_ns

    @property
    def ticks(self) -> int:
        """Ticks released so far."""
        return self._ticks

    @property
    def late_ticks(self) -> int:
        """Ticks that were already due when :meth:`wait_next` was called."""
        return self._late_ticks

    @property
    def slip_ns_max(self) -> int:
        """The largest gap between a tick's release and its schedule, in nanoseconds."""
        return self._slip_ns_max

    @property
    def slip_us_max(self) -> float:
        """:attr:`slip_ns_max` in microseconds."""
        return self._slip_ns_max / _NS_PER_US

    @property
    def slip_us_mean(self) -> float:
        """Mean slip over all released ticks, in microseconds (0.0 before the first)."""
        return self._slip_ns_total / self._ticks / _NS_PER_US if self._ticks else 0.0

    def stats(self) -> PacingStats:
        """A snapshot of the counters, for reports."""
        return PacingStats(
            period_us=self._period_us,
            ticks=self._ticks,
            late_ticks=self._late_ticks,
            slip_us_max=self.slip_us_max,
            slip_us_mean=self.slip_us_mean,
        )

    def wait_next(self) -> int:
        """Block until the next tick is due; return the release time (``perf_counter_ns``).

        Unpaced, it returns at once. Paced, a tick that is already due is released at
        once and counted in :attr:`late_ticks`; either way the release's lateness against
        the schedule is recorded as slip.
        """
        now_ns = time.perf_counter_ns()
        if self._period_ns is None:
            self._ticks += 1
            return now_ns
        if self._start_ns is None:
            self._start_ns = now_ns
        due_ns = self._start_ns + self._ticks * self._period_ns
        if now_ns < due_ns:
            sleep_ns = due_ns - now_ns - self._spin_ns
            if sleep_ns > 0:
                time.sleep(sleep_ns / _NS_PER_S)
            now_ns = time.perf_counter_ns()
            while now_ns < due_ns:
                now_ns = time.perf_counter_ns()
        elif now_ns > due_ns:
            self._late_ticks += 1
        slip_ns = now_ns - due_ns
        self._slip_ns_total += slip_ns
        if slip_ns > self._slip_ns_max:
            self._slip_ns_max = slip_ns
        self._ticks += 1
        return now_ns

    def __repr__(self) -> str:
        return (
            f"PacingClock(period_us={self._period_us}, ticks={self._ticks}, "
            f"late_ticks={self._late_ticks}, slip_us_max={self.slip_us_max:.1f})"
        )
