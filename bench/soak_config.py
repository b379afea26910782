"""What one ``bench soak`` run does: its length, its pace, its kills and its windows.

The defaults are the issue's 30-minute run's, light enough for a 2-core machine (the p99
goal needs headroom): a ``qpu`` estimate (H2, exact) every 50 ms, and a 50-shot d=5
surface-code block every 10 ms to two pymatching workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from client.arguments import DEFAULT_P, DEFAULT_SEED, check_distance

DEFAULT_MINUTES: Final = 30.0
DEFAULT_WINDOW_S: Final = 300.0
DEFAULT_SAMPLE_S: Final = 5.0
DEFAULT_DECODER_KILL_AT: Final = 0.4
DEFAULT_BROKER_KILL_AT: Final = 0.7
DEFAULT_KILL_MARGIN_S: Final = 10.0
DEFAULT_REQUEST_PERIOD_MS: Final = 50.0
DEFAULT_BLOCK_PERIOD_US: Final = 10_000
DEFAULT_DISTANCE: Final = 5
DEFAULT_BLOCK_SHOTS: Final = 50
DEFAULT_DECODER_WORKERS: Final = 2
DEFAULT_REQUEST_TIMEOUT_S: Final = 10.0
RSS_GROWTH_GOAL: Final = 0.10
"""After the first window, no process's RSS grows by more than this fraction."""
P99_RATIO_GOAL: Final = 1.5
"""Each window's p99 within this factor of the first window's."""


@dataclass(frozen=True, slots=True)
class SoakConfig:
    """One ``bench soak`` run. Times in the unit their name says."""

    minutes: float = DEFAULT_MINUTES
    window_s: float = DEFAULT_WINDOW_S
    sample_s: float = DEFAULT_SAMPLE_S
    decoder_kill_at: float = DEFAULT_DECODER_KILL_AT
    """Fraction of the run at which a decoder worker is SIGKILLed (and replaced)."""
    broker_kill_at: float = DEFAULT_BROKER_KILL_AT
    """Fraction of the run at which the broker is SIGKILLed (and restarted)."""
    kill_margin_s: float = DEFAULT_KILL_MARGIN_S
    """The "excluding kills" view leaves out the samples in flight at any moment from
    each kill to this long after its replacement's READY."""
    request_period_ms: float = DEFAULT_REQUEST_PERIOD_MS
    block_period_us: int = DEFAULT_BLOCK_PERIOD_US
    distance: int = DEFAULT_DISTANCE
    block_shots: int = DEFAULT_BLOCK_SHOTS
    p: float = DEFAULT_P
    decoder_workers: int = DEFAULT_DECODER_WORKERS
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    seed: int = DEFAULT_SEED
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        positive = {
            "--minutes": self.minutes,
            "--window-s": self.window_s,
            "--sample-s": self.sample_s,
            "--request-period-ms": self.request_period_ms,
            "--request-timeout-s": self.request_timeout_s,
        }
        for flag, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{flag} must be a number > 0, got {value}")
        if not (math.isfinite(self.kill_margin_s) and self.kill_margin_s >= 0):
            raise ValueError(f"--kill-margin-s must be >= 0, got {self.kill_margin_s}")
        for flag, at in (
            ("--decoder-kill-at", self.decoder_kill_at),
            ("--broker-kill-at", self.broker_kill_at),
        ):
            if not 0 < at < 1:
                raise ValueError(f"{flag} is a fraction of the run, strictly between 0 and 1; "
                                 f"got {at}")  # fmt: skip
        if self.decoder_kill_at == self.broker_kill_at:
            raise ValueError("--decoder-kill-at and --broker-kill-at must differ")
        if self.window_s > self.duration_s:
            raise ValueError(
                f"--window-s {self.window_s:g} is longer than the run ({self.duration_s:g} s): "
                "the goals compare windows"
            )
        if self.sample_s > self.window_s:
            raise ValueError(f"--sample-s {self.sample_s:g} is longer than a window")
        if self.block_period_us < 100:
            raise ValueError(f"--block-period-us must be >= 100, got {self.block_period_us}")
        if self.block_shots < 1:
            raise ValueError(f"--block-shots must be >= 1, got {self.block_shots}")
        if self.decoder_workers < 2:
            raise ValueError(
                f"--decoder-workers must be >= 2 (one is killed while the others carry on), "
                f"got {self.decoder_workers}"
            )
        if not 0 <= self.p < 0.5:
            raise ValueError(f"--p must be in [0, 0.5), got {self.p}")
        check_distance(self.distance)

    @property
    def duration_s(self) -> float:
        """How long both loops run, in seconds."""
        return self.minutes * 60.0

    @property
    def windows(self) -> int:
        """How many latency windows the run has (the last may be shorter)."""
        return max(1, math.ceil(self.duration_s / self.window_s - 1e-9))
