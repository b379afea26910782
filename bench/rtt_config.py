"""What ``python -m bench rtt`` measures: peer names, defaults, and the checked settings.

This module imports nothing heavy, so that ``python -m bench --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Transport = Literal["ipc", "tcp"]

PEERS: Final = ("direct", "proxy", "proxy-spin", "nearloop", "nearloop-async", "broker-mdp", "rpcq")
"""Every peer, in the order the table lists them."""

BASELINE: Final = "proxy"
"""The peer the "vs. proxy" ratios divide by."""

DEFAULT_N: Final = 20_000
DEFAULT_WARMUP: Final = 1_000
DEFAULT_ROUNDS: Final = 10
DEFAULT_PAYLOAD_BYTES: Final = 512
DEFAULT_SEED: Final = 20_240_512


@dataclass(frozen=True, slots=True)
class RttConfig:
    """Settings of one ``rtt`` run; invalid combinations raise ValueError."""

    n: int = DEFAULT_N
    """Timed round trips per peer."""
    warmup: int = DEFAULT_WARMUP
    """Untimed round trips per peer before the first timed one."""
    rounds: int = DEFAULT_ROUNDS
    """Each peer's ``n`` round trips are split into this many chunks, taken round-robin."""
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    transport: Transport = "ipc"
    peers: tuple[str, ...] = PEERS
    seed: int = DEFAULT_SEED
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 1 <= self.rounds <= self.n:
            raise ValueError(f"rounds must be in 1..n ({self.n}), got {self.rounds}")
        if self.payload_bytes < 1:
            raise ValueError(f"payload_bytes must be >= 1, got {self.payload_bytes}")
        if self.transport not in ("ipc", "tcp"):
            raise ValueError(f"transport must be ipc or tcp, got {self.transport!r}")
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown or not self.peers:
            raise ValueError(
                f"peers must be a non-empty subset of {', '.join(PEERS)}; got {unknown}"
            )
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"peers listed twice: {', '.join(self.peers)}")


def parse_peers(text: str) -> tuple[str, ...]:
    """``"proxy,nearloop"`` -> ``("proxy", "nearloop")``, in the canonical table order."""
    names = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(names - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    return tuple(p for p in PEERS if p in names)
