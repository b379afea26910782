"""What applications see: a decoded :class:`Message` and the :class:`Payload` they send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from client.wire import Header
from client.wire.trace import NO_HOSTS, Breakdown, breakdown, stamps_of


class Message(NamedTuple):
    """A decoded nearloop message: its header, and arrays rebuilt over the received frames.

    Arrays of 64 KiB or more are views over the received frame's memory, not copies.
    (A NamedTuple: one is built per message on the hot path.)
    """

    header: Header
    arrays: tuple[npt.NDArray[Any], ...] = ()
    partial: bool = False
    received_ns: int = 0
    """When a client received it, on its monotonic clock (ns); 0 where none recorded it
    (a request as a worker's handler sees it)."""
    hosts: Mapping[str, str] = NO_HOSTS
    """The host identities of the clocks that stamped it besides the client's
    (``broker``, ``worker``), where known: a traced reply through the broker names both,
    a reply over a lane its worker (on this host)."""

    @property
    def id(self) -> int:
        """The request id this message belongs to."""
        return self.header.id

    @property
    def body(self) -> Any:
        """The msgpack body (scalars, lists, maps), or None."""
        return self.header.body

    @property
    def ts(self) -> dict[str, int]:
        """Its timestamps in ns, on their takers' monotonic clocks (PROTOCOL.md §3.2):
        those the header carries, plus ``client_recv`` where the client recorded one."""
        return stamps_of(self.header.ts, self.received_ns)

    def trace(self, host: str | None = None) -> Breakdown:
        """Its round trip cut into hops (:func:`client.wire.trace.breakdown`), as seen
        from ``host`` (default: this process's host identity). A reply through the broker
        has the broker's hops only if the client asked for a trace (``client.trace =
        True``); a reply over a session's lane has the client's and the worker's.

        Raises ValueError for a message that is not a reply the client received.
        """
        if host is None:
            from client.lane.host import host_identity

            host = host_identity()
        return breakdown(self.ts, self.hosts, host)

    @property
    def array(self) -> npt.NDArray[Any]:
        """The only array; raises if there is not exactly one."""
        if len(self.arrays) != 1:
            raise ValueError(f"message carries {len(self.arrays)} arrays, not 1")
        return self.arrays[0]

    def __repr__(self) -> str:
        shapes = ", ".join(f"{a.dtype}{list(a.shape)}" for a in self.arrays)
        return (
            f"Message(id={self.id}, kind={self.header.kind!r}, body={self.body!r}, "
            f"arrays=[{shapes}]{', partial' if self.partial else ''})"
        )


@dataclass(frozen=True, slots=True)
class Payload:
    """What a handler returns: a msgpack body and numpy arrays sent as raw frames."""

    body: Any = None
    arrays: Sequence[npt.NDArray[Any]] = ()

    @classmethod
    def of(cls, value: Any) -> Payload:
        """Wrap a handler's return value: a Payload as is, an array as one array, else a body.

        >>> Payload.of({"energy": -1.137}).body
        {'energy': -1.137}
        >>> len(Payload.of(np.zeros(3)).arrays)
        1
        """
        if isinstance(value, Payload):
            return value
        if isinstance(value, np.ndarray):
            return cls(arrays=(value,))
        return cls(body=value)
