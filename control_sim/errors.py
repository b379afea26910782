"""Errors of the control runtime: one base class, subclasses that carry their fields."""

from __future__ import annotations


class ControlSimError(Exception):
    """The control runtime could not run; its command line prints this and exits 1."""


class StackUnavailable(ControlSimError):
    """The broker named with ``--connect`` did not answer, or lacks a worker a run needs.

    The user's to fix (start the broker or the worker): the command line exits 2.
    """


class ServerStartError(ControlSimError):
    """A server process exited, or printed no READY line in time."""

    def __init__(self, name: str, pid: int, why: str) -> None:
        super().__init__(f"{name} (pid {pid}) {why}")
        self.name = name
        self.pid = pid
