"""The adaptive spin window (client.wire.spin): its decisions on gap sequences of the loops
the broker serves, on a fast and a slow machine, fed deterministically (no clock)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pytest

from client.wire.spin import (
    MIN_SPIN_NS,
    REFIT_EVERY,
    WORK_FACTOR,
    SpinPolicy,
    bucket,
    upper_ns,
)

pytestmark = pytest.mark.timeout(30)

US = 1000


def feed(policy: SpinPolicy, gaps_and_work: Iterable[tuple[int, int]]) -> None:
    for gap_ns, work_ns in gaps_and_work:
        policy.record(gap_ns, work_ns)


def tight_loop(
    gap_us: float, work_us: float, n: int, *, seed: int, spread: float = 0.3
) -> Iterator[tuple[int, int]]:
    """A tight request loop's gaps: each about ``gap_us`` (lognormal, ``spread`` wide),
    with a tenth of them up to 3x longer (a preempted peer)."""
    rng = np.random.default_rng(seed)
    gaps = gap_us * rng.lognormal(0.0, spread, n)
    slow = rng.random(n) < 0.1
    gaps[slow] *= rng.uniform(1.0, 3.0, int(slow.sum()))
    work = work_us * rng.lognormal(0.0, 0.2, n)
    for g, w in zip(gaps, work, strict=True):
        yield int(g * US), int(w * US)


def paced(period_us: int, reply_us: int, work_us: int, periods: int) -> Iterator[tuple[int, int]]:
    """A stream paced at ``period_us`` through the broker: each block's reply comes
    ``reply_us`` after the block, and the next block at the next tick."""
    for _ in range(periods):
        yield reply_us * US, work_us * US
        yield (period_us - reply_us) * US, work_us * US


def catch_share(policy: SpinPolicy, gaps_ns: Iterable[int]) -> float:
    gaps = np.fromiter(gaps_ns, dtype=np.int64)
    return float(np.mean(gaps <= policy.window_ns))


def test_nothing_learned_yet_means_no_spin() -> None:
    policy = SpinPolicy(max_us=2000)
    feed(policy, [(10 * US, 3 * US)] * (REFIT_EVERY - 1))
    assert not policy.spinning and policy.window_ns == 0


@pytest.mark.parametrize(
    ("machine", "gap_us", "work_us"),
    [("fast", 15, 3), ("development VM", 70, 20), ("slow", 120, 25)],
)
def test_a_tight_loop_spins_with_a_window_fitted_to_its_gaps(
    machine: str, gap_us: int, work_us: int
) -> None:
    policy = SpinPolicy(max_us=2000)
    feed(policy, tight_loop(gap_us, work_us, 4 * REFIT_EVERY, seed=1))
    assert policy.spinning, (machine, policy)
    # The window covers the loop's gaps: nearly every one is caught...
    later = [g for g, _ in tight_loop(gap_us, work_us, 2000, seed=2)]
    assert catch_share(policy, later) >= 0.85, (machine, policy)
    # ...and it scales with them, not with a constant fitted to one machine.
    assert gap_us * US <= policy.window_ns <= 6 * gap_us * US, (machine, policy)
    assert policy.window_ns <= WORK_FACTOR * work_us * US * 1.3


def test_the_window_follows_the_machine_it_runs_on() -> None:
    fast, slow = SpinPolicy(), SpinPolicy()
    feed(fast, tight_loop(15, 3, 4 * REFIT_EVERY, seed=3))
    feed(slow, tight_loop(120, 25, 4 * REFIT_EVERY, seed=3))
    assert fast.spinning and slow.spinning
    assert slow.window_ns >= 5 * fast.window_ns  # the gaps differ 8x; buckets round


@pytest.mark.parametrize(("reply_us", "work_us"), [(30, 20), (150, 20), (400, 20), (150, 5)])
def test_a_stream_paced_at_1_ms_never_spins(reply_us: int, work_us: int) -> None:
    policy = SpinPolicy(max_us=2000)
    spun = 0
    for gap_work in paced(1000, reply_us, work_us, 20 * REFIT_EVERY):
        policy.record(*gap_work)
        spun += policy.spinning
    assert spun == 0, policy


def test_evenly_spaced_messages_a_millisecond_apart_never_spin() -> None:
    """One-way traffic (or many peers' messages interleaved) with no short gap at all."""
    policy = SpinPolicy(max_us=2000)
    spun = 0
    for _ in range(20 * REFIT_EVERY):
        policy.record(1000 * US, 20 * US)
        spun += policy.spinning
    assert spun == 0, policy


def test_bursts_spin_through_the_burst_with_a_short_window() -> None:
    """100 requests back to back, then 50 ms of quiet, over and over."""
    policy = SpinPolicy(max_us=2000)
    burst = [*tight_loop(15, 3, 99, seed=4), (50_000 * US, 3 * US)]
    for _ in range(6):
        feed(policy, burst)
    assert policy.spinning
    assert policy.window_ns <= 64 * US  # the quiet gaps do not stretch the window


def test_it_turns_off_when_a_tight_loop_becomes_a_paced_stream_and_back_on() -> None:
    policy = SpinPolicy(max_us=2000)
    feed(policy, tight_loop(70, 20, 4 * REFIT_EVERY, seed=5))
    assert policy.spinning
    feed(policy, paced(1000, 150, 20, 2 * REFIT_EVERY))  # 4 refits
    assert not policy.spinning
    feed(policy, tight_loop(70, 20, 4 * REFIT_EVERY, seed=6))
    assert policy.spinning


def test_the_upper_bound_caps_the_window_and_zero_turns_spinning_off() -> None:
    capped, off = SpinPolicy(max_us=50), SpinPolicy(max_us=0)
    for policy in (capped, off):
        feed(policy, tight_loop(120, 25, 4 * REFIT_EVERY, seed=7))
    # 120 µs gaps do not fit a 50 µs bound: spinning would mostly miss.
    assert not capped.spinning and capped.window_ns <= 50 * US
    assert not off.spinning and off.window_ns == 0
    fits = SpinPolicy(max_us=50)
    feed(fits, tight_loop(15, 3, 4 * REFIT_EVERY, seed=7))
    assert fits.spinning and MIN_SPIN_NS <= fits.window_ns <= 50 * US


def test_a_spin_never_outlasts_its_share_of_the_handling_work() -> None:
    """Gaps of 300 µs are a tight loop for a loop that handles a message in 25 µs, but
    not for one that does so in 5 µs: 16 x 5 µs is 80 µs."""
    heavy, light = SpinPolicy(), SpinPolicy()
    feed(heavy, tight_loop(300, 25, 4 * REFIT_EVERY, seed=8, spread=0.1))
    feed(light, tight_loop(300, 5, 4 * REFIT_EVERY, seed=8, spread=0.1))
    assert heavy.spinning and heavy.window_ns <= WORK_FACTOR * 25 * US * 1.3
    assert not light.spinning


def test_one_slow_message_does_not_widen_the_limit() -> None:
    """A model of several MB stored in the middle of a paced stream."""
    policy = SpinPolicy()
    stream = list(paced(1000, 150, 20, 10 * REFIT_EVERY))
    stream[5 * REFIT_EVERY] = (150 * US, 5_000 * US)
    spun = 0
    for gap_work in stream:
        policy.record(*gap_work)
        spun += policy.spinning
    assert spun == 0


def test_without_a_work_measure_only_the_upper_bound_limits_the_window() -> None:
    """A waiting client reports no handling time: its replies' gaps alone decide."""
    policy = SpinPolicy(max_us=2000)
    feed(policy, ((600 * US, 0) for _ in range(4 * REFIT_EVERY)))  # an H2 energy, say
    assert policy.spinning and policy.window_ns == upper_ns(bucket(600 * US))
    slow = SpinPolicy(max_us=2000)
    feed(slow, ((5000 * US, 0) for _ in range(4 * REFIT_EVERY)))
    assert not slow.spinning


def test_messages_already_waiting_count_as_caught() -> None:
    policy = SpinPolicy()
    feed(policy, [(0, 10 * US)] * (2 * REFIT_EVERY))
    assert policy.spinning and policy.window_ns == MIN_SPIN_NS


@pytest.mark.parametrize("max_us", [-1, 1.5, True])
def test_the_bound_must_be_an_integer_of_zero_or_more(max_us: object) -> None:
    with pytest.raises(ValueError, match="max_us"):
        SpinPolicy(max_us=max_us)  # type: ignore[arg-type]


def test_buckets_hold_their_gaps() -> None:
    rng = np.random.default_rng(9)
    for ns in [0, 1, 1023, 1024, 2047, 2048, *rng.integers(0, 10**7, 1000).tolist()]:
        edge = upper_ns(bucket(ns))
        assert ns < edge, ns
        assert ns < 4096 or 3 * ns >= 2 * edge, ns  # within 1.5x of its upper edge
    assert bucket(10**12) == bucket(10**9)  # one last bucket holds every long gap


def test_preempted_handlings_do_not_stretch_the_limit() -> None:
    """A fifth of the handlings take 7x as long (the broker preempted by its own I/O
    thread): their mean would put the limit past a 1 ms stream's long gap; their median
    does not."""
    policy = SpinPolicy()
    rng = np.random.default_rng(10)
    spun = 0
    for k in range(20 * REFIT_EVERY):
        work = 150 * US if rng.random() < 0.2 else 20 * US
        policy.record((300 if k % 2 else 700) * US, work)
        spun += policy.spinning
    assert spun == 0, policy
    assert 18 * US <= policy.work_ns <= 24 * US  # the mean is 46 µs
