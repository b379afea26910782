"""What ``python -m bench flood`` is told (:mod:`bench.auth_flood`); imports nothing heavy,
so that ``python -m bench --help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_HANDSHAKES: Final = 1000
DEFAULT_PARALLEL: Final = 50
DEFAULT_QUIET_N: Final = 5000
"""Round trips timed before and after the flood."""


@dataclass(frozen=True, slots=True)
class FloodConfig:
    """Settings of one ``flood`` run; invalid ones raise ValueError."""

    handshakes: int = DEFAULT_HANDSHAKES
    parallel: int = DEFAULT_PARALLEL
    quiet_n: int = DEFAULT_QUIET_N
    rate: float = 0.0
    """Handshakes a second at most; 0: as fast as the broker refuses them."""
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        for name in ("handshakes", "parallel", "quiet_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate}")
