"""The wire layer's errors, and the base of every error the ``client`` package raises.

:class:`NearloopError` is the one base: :mod:`client.errors` builds the rest of the
client's errors (remote errors, timeouts) on it.
"""

from __future__ import annotations


class NearloopError(Exception):
    """Base of every error the ``client`` package (wire layer included) raises."""


class ProtocolError(NearloopError):
    """A message does not follow the nearloop / Majordomo wire protocol."""


class PayloadTooLarge(ProtocolError):
    """A message (or its header) is larger than the protocol allows; nothing was sent."""

    def __init__(self, size: int, limit: int, *, what: str = "message") -> None:
        super().__init__(f"{what} of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit
        self.what = what
