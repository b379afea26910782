"""Errors of the benchmarks: one base class, subclasses that carry what went wrong."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark could not run or produced a wrong result; the CLI prints it and exits 1."""


class EchoMismatch(BenchError):
    """A peer answered with something other than the request's payload."""

    def __init__(self, peer: str, got: int) -> None:
        super().__init__(f"{peer}: echo of {got} bytes does not match the request")
        self.peer = peer
        self.got = got
