"""The floors of the ``rtt`` table: a shared-memory mailbox and a plain function call.

``shm-floor`` is the least a co-located round trip can cost from Python: two processes,
both busy-polling a mailbox in one shared-memory segment, with no kernel call on the
path. The segment holds a sequence counter per direction, each on its own cache line,
and a request and a reply area; both are numpy views over
:class:`multiprocessing.shared_memory.SharedMemory`. A round trip copies the payload in,
bumps the request counter, and polls the reply counter; the other side polls the request
counter, copies the request into the reply (:func:`echo_into`) and bumps the reply
counter.

Memory order: a counter is stored after the payload it announces and loaded before the
payload is read, with nothing else between them. On x86-64 (TSO) stores are seen in
order and loads happen in order, so in practice that is enough. On aarch64 nothing
orders them without barriers (store-release, load-acquire), which Python does not offer,
so a reader could see the new counter with an old payload. This is a *floor* to measure
against, not a transport.

``inproc`` does the same echo work (:func:`echo_into`) as a plain function call in one
process: what the round trip costs with no second process at all.

Between batches the mailbox's server blocks on a ZeroMQ REP socket, so it polls only
while the benchmark times this peer. The segment's owner is the benchmark process: it
creates it, and unlinks its name as soon as the server has attached, so that nothing is
left in ``/dev/shm`` however either process ends afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from time import perf_counter_ns
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from bench.errors import EchoMismatch

if TYPE_CHECKING:
    import zmq

NAME_PREFIX: Final = "nl-shmfloor-"
"""Every segment's name starts so, then the creating process's id: whose it is."""
STOP: Final = (1 << 64) - 1
"""The request counter's value that sends the server back to wait for the next batch."""
ATTACH: Final = b"attach"
GO: Final = b"go"
OK: Final = b"ok"
"""The control messages on the server's REP socket: ``attach NAME``, ``go``; it answers
``ok`` to each (or an error text)."""

_LINE: Final = 64
"""Bytes of a cache line: the two counters never share one."""
_REQ_SEQ: Final = 0
_REP_SEQ: Final = _LINE // 8
"""Indexes of the counters in the segment's uint64 view."""
_CHECK_CLOCK_EVERY: Final = (1 << 16) - 1
"""A polling client reads the clock (for its timeout) once per 65536 polls."""


def echo_into(request: npt.NDArray[np.uint8], reply: npt.NDArray[np.uint8]) -> None:
    """The echo work both floors do: copy the request into the reply."""
    reply[:] = request


def new_name() -> str:
    """A fresh segment name that says whose it is (``nl-shmfloor-PID-RANDOM``)."""
    return f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


class ShmMailbox:
    """A request and a reply slot of ``payload_bytes`` each, and their counters, in one
    shared-memory segment. :meth:`create` makes one, :meth:`attach` opens one by name;
    :meth:`close` unmaps it (the creator unlinks its name with :meth:`unlink`)."""

    def __init__(self, shm: SharedMemory, payload_bytes: int, *, owner: bool) -> None:
        self.shm = shm
        self.owner = owner
        self.payload_bytes = payload_bytes
        self.seqs: npt.NDArray[np.uint64] = np.ndarray((2 * _LINE // 8,), np.uint64, shm.buf)
        self.request: npt.NDArray[np.uint8] = np.ndarray(
            (payload_bytes,), np.uint8, shm.buf, offset=2 * _LINE
        )
        self.reply: npt.NDArray[np.uint8] = np.ndarray(
            (payload_bytes,), np.uint8, shm.buf, offset=2 * _LINE + payload_bytes
        )
        self._unlinked = not owner

    @staticmethod
    def size(payload_bytes: int) -> int:
        """Bytes of the segment for ``payload_bytes`` each way."""
        return 2 * _LINE + 2 * payload_bytes

    @classmethod
    def create(cls, payload_bytes: int) -> ShmMailbox:
        """A new segment under a fresh name (:func:`new_name`), counters at 0."""
        shm = SharedMemory(name=new_name(), create=True, size=cls.size(payload_bytes))
        box = cls(shm, payload_bytes, owner=True)
        box.seqs[:] = 0
        return box

    @classmethod
    def attach(cls, name: str, payload_bytes: int) -> ShmMailbox:
        """Open the segment ``name`` that another process created and owns."""
        if sys.version_info >= (3, 13):
            shm = SharedMemory(name=name, track=False)
        else:
            shm = SharedMemory(name=name)
            # Before 3.13 attaching registers the segment with this process's resource
            # tracker, which would unlink it (and warn) when this process exits.
            resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        if shm.size < cls.size(payload_bytes):
            shm.close()
            raise ValueError(f"segment {name} holds {shm.size} bytes, too few")
        return cls(shm, payload_bytes, owner=False)

    @property
    def name(self) -> str:
        """The segment's name (without the leading ``/``)."""
        return self.shm.name

    def unlink(self) -> None:
        """Remove the segment's name; the mappings stay until each side closes."""
        if not self._unlinked:
            self._unlinked = True
            self.shm.unlink()

    def close(self) -> None:
        """Drop the views and unmap; the owner also unlinks if it has not yet."""
        del self.seqs, self.request, self.reply  # the mapping cannot close under views
        self.shm.close()
        self.unlink()

    def round_trips(
        self, payload: npt.NDArray[np.uint8], n: int, first_seq: int, timeout_ns: int
    ) -> list[int]:
        """The client side: ``n`` round trips of ``payload`` numbered from ``first_seq``;
        each one's time in ns (``time.perf_counter_ns`` around copy in, poll, copy out).

        Raises TimeoutError if a reply takes ``timeout_ns``, EchoMismatch if the last one
        differs from ``payload``.
        """
        seqs, request, reply, clock = self.seqs, self.request, self.reply, perf_counter_ns
        out = [0] * n
        got = np.empty_like(payload)
        for k in range(n):
            seq = first_seq + k
            polls = 0
            t0 = clock()
            request[:] = payload
            seqs[_REQ_SEQ] = seq
            while seqs[_REP_SEQ] != seq:
                polls += 1
                if not polls & _CHECK_CLOCK_EVERY and clock() - t0 > timeout_ns:
                    raise TimeoutError(f"shm-floor: no reply in {timeout_ns / 1e9:g} s")
            got[:] = reply
            out[k] = clock() - t0
        if n and not np.array_equal(got, payload):
            raise EchoMismatch("shm-floor", got.nbytes)
        return out

    def stop_server(self) -> None:
        """Send the polling server back to wait on its control socket."""
        self.seqs[_REQ_SEQ] = STOP

    def last_request(self) -> int:
        """The request counter now: what :meth:`serve_batch` waits to see change."""
        return int(self.seqs[_REQ_SEQ])

    def serve_batch(self, last: int) -> None:
        """The server side: echo requests, polling without sleeping, until STOP.

        ``last`` is :meth:`last_request` read *before* the client was told to go, so
        that a request it writes at once is not taken for the last one.
        """
        seqs, request, reply = self.seqs, self.request, self.reply
        while True:
            seq = seqs[_REQ_SEQ]
            if seq == last:
                continue
            if seq == STOP:
                return
            echo_into(request, reply)
            seqs[_REP_SEQ] = seq
            last = seq


def serve(control: zmq.Socket[bytes]) -> None:
    """Serve mailboxes on the REP socket ``control``: ``attach NAME`` opens one (closing the
    previous), ``go`` polls it until the client stops it (:meth:`ShmMailbox.serve_batch`).
    Runs until the process ends."""
    box: ShmMailbox | None = None
    while True:
        command, _, arg = control.recv().partition(b" ")
        if command == ATTACH:
            if box is not None:
                box.close()
                box = None
            try:
                name, size = arg.decode().split()
                box = ShmMailbox.attach(name, int(size))
            except (ValueError, OSError) as exc:
                control.send(f"cannot attach: {exc}".encode())
                continue
            control.send(OK)
        elif command == GO and box is not None:
            last = box.last_request()
            control.send(OK)
            box.serve_batch(last)
        else:
            control.send(b"unknown command or no mailbox: " + command)
