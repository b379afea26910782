"""Socket plumbing shared by the broker, clients and workers: the hot-path send and receive.

pyzmq's ``send_multipart``/``recv_multipart`` and ``copy=False`` everywhere cost several
microseconds per message in Python; these loops do the least per frame. Small frames are
copied (cheaper than wrapping them in a ``zmq.Frame``); frames of
ZERO_COPY_THRESHOLD_BYTES or more are never copied on send, and frames past the envelope
are never copied on receive.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import zmq

from client.wire.curve import CurveKeys, apply_curve
from client.wire.frames import Frame
from client.wire.limits import MAX_MESSAGE_BYTES, ZERO_COPY_THRESHOLD_BYTES

# Plain ints: pyzmq's flag enums cost a Python-level enum operation on every ``|``.
_RCVMORE: Final = int(zmq.RCVMORE)
_SNDMORE: Final = int(zmq.SNDMORE)
_EVENTS: Final = int(zmq.EVENTS)
_FD: Final = int(zmq.FD)
_POLLIN: Final = int(zmq.POLLIN)
_NOBLOCK: Final = int(zmq.NOBLOCK)
_BIG: Final = ZERO_COPY_THRESHOLD_BYTES
# The compiled methods under pyzmq's Python wrappers, whose routing_id/group handling
# (draft sockets only) costs about a microsecond per frame.
_send: Final = zmq.backend.Socket.send
_recv: Final = zmq.backend.Socket.recv
_get: Final = zmq.backend.Socket.get

yield_cpu: Final = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
"""Let any other runnable thread have this CPU first (``sched_yield``)."""

poll = zmq.zmq_poll
"""``poll([(socket, zmq.POLLIN)], timeout_ms)``: the C poll, without a Poller object."""

PollItems = list[tuple[Any, int]]

RECONNECT_IVL_MAX_MS: Final = 100
"""The longest ZeroMQ waits between two attempts to reconnect a socket to a broker that
is not there. It bounds how long after a restarted broker binds its peers come back: a
connect attempt costs a refused SYN (or a missing ipc path) ten times a second, nothing
to speak of, and a broker restarted after a long outage is found within this bound."""

CONNECT_TIMEOUT_MS: Final = 250
"""How long one tcp connect attempt may wait for the broker's host to answer before it is
given up and retried. Without it an attempt made during a partition waits on the
kernel's SYN retries (1, 3, 7, 15 s apart), so a worker came back up to 6 s after a 20 s
cut healed; with it, within about this bound plus RECONNECT_IVL_MAX_MS. A tcp handshake
on a cluster network takes well under a millisecond."""


def poll_items(sock: zmq.Socket[bytes]) -> PollItems:
    """The argument ``poll`` takes to wait for ``sock`` to be readable."""
    return [(sock, zmq.POLLIN)]


def wait_readable(
    sock: zmq.Socket[bytes], timeout_ns: int, also: zmq.Socket[bytes] | None = None
) -> bool:
    """Wait up to ``timeout_ns`` (microsecond precision, unlike zmq_poll's milliseconds)
    for a message on ``sock``. True if one can be received without blocking.

    With ``also`` (a socket monitor), the wait ends early, returning False, as soon as
    ``also`` has a message: the caller reads it."""
    if _readable(sock):
        return True
    fd: int = _get(sock, _FD)  # type: ignore[assignment]  # an int option
    fds = (fd,) if also is None else (fd, int(also.getsockopt(_FD)))
    end = time.monotonic_ns() + timeout_ns
    while True:
        if also is not None and _readable(also):
            return False
        left = end - time.monotonic_ns()
        if left <= 0:
            return False
        # ZMQ_FD only says "look at ZMQ_EVENTS again": readiness may be spurious.
        select.select(fds, (), (), left / 1e9)
        if _readable(sock):
            return True


def _readable(sock: zmq.Socket[bytes]) -> bool:
    events: int = _get(sock, _EVENTS)  # type: ignore[assignment]  # an int option
    return bool(events & _POLLIN)


def spin_readable(sock: zmq.Socket[bytes], until_ns: int) -> bool:
    """Poll ``sock`` without sleeping until it is readable (True) or ``until_ns``
    (monotonic) has passed (False).

    A thread blocked in the kernel pays a wake-up when its message comes, and on a virtual
    machine an idle vCPU's wake-up costs tens of microseconds. Polling skips it. Between
    polls the thread yields its CPU, so any other runnable thread on it (this process's
    ZeroMQ I/O thread, which delivers the message, among them) runs first.
    """
    while not _readable(sock):
        if time.monotonic_ns() >= until_ns:
            return False
        yield_cpu()
    return True


def spin_recv(sock: zmq.Socket[bytes], until_ns: int, copy_first: int) -> list[Frame] | None:
    """Receive one message, polling without sleeping (:func:`spin_readable`) until
    ``until_ns`` (monotonic); None if none came by then."""
    if not spin_readable(sock, until_ns):
        return None
    return recv_frames(sock, _NOBLOCK, copy_first)


def recv_by(
    sock: zmq.Socket[bytes],
    until_ns: int,
    spin_ns: int,
    copy_first: int,
    also: zmq.Socket[bytes] | None = None,
) -> list[Frame] | None:
    """Receive one message by ``until_ns`` (monotonic), or None if none came by then.

    For the first ``spin_ns`` it polls without sleeping (:func:`spin_recv`); after that it
    sleeps in the kernel until the message comes or time is up, or until ``also`` has a
    message (then None, early: see :func:`wait_readable`).
    """
    if spin_ns > 0:
        frames = spin_recv(sock, min(until_ns, time.monotonic_ns() + spin_ns), copy_first)
        if frames is not None:
            return frames
    if not wait_readable(sock, until_ns - time.monotonic_ns(), also):
        return None
    return recv_frames(sock, _NOBLOCK, copy_first)


def recv_frames(sock: zmq.Socket[bytes], flags: int, copy_first: int) -> list[Frame]:
    """Receive one whole multipart message (poll first: with ``flags=0`` this blocks).

    The first ``copy_first`` frames (identity and Majordomo envelope, all tiny) come back
    as ``bytes``, so they compare and hash cheaply; the rest come back as ``zmq.Frame``,
    never copied, so array payloads of any size cost no copy on receive.
    """
    frames: list[Frame] = [_recv(sock, flags)]
    while _get(sock, _RCVMORE):
        frames.append(_recv(sock, 0, len(frames) < copy_first))
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[Frame], flags: int = 0) -> None:
    """Send a multipart message; frames of ZERO_COPY_THRESHOLD_BYTES or more go zero-copy.

    Raises ``zmq.Again`` (with NOBLOCK) or ``zmq.ZMQError`` from the first frame only:
    ZeroMQ delivers a multipart message whole or not at all.
    """
    last = len(frames) - 1
    more = int(flags) | _SNDMORE
    for i, f in enumerate(frames):
        _send(sock, f, more if i < last else flags, len(f) < _BIG)


def configure(sock: zmq.Socket[bytes], *, linger_ms: int = 0) -> None:
    """Options every nearloop socket gets: zero-copy threshold, a hard per-frame size cap,
    reconnects that back off from 10 ms to at most RECONNECT_IVL_MAX_MS, and tcp connect
    attempts given up after CONNECT_TIMEOUT_MS."""
    sock.copy_threshold = ZERO_COPY_THRESHOLD_BYTES
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.CONNECT_TIMEOUT, CONNECT_TIMEOUT_MS)


def connect_dealer(
    context: zmq.Context[Any],
    endpoint: str,
    *,
    stable_identity: bool = False,
    curve: CurveKeys | None = None,
    before_connect: Callable[[zmq.Socket[bytes]], None] | None = None,
) -> zmq.Socket[bytes]:
    """A configured DEALER connected to ``endpoint``: what clients and workers talk on.

    With ``curve`` the socket is a CURVE client (ZeroMQ RFC 26) of the broker whose public
    key it holds (:mod:`client.wire.curve`): its keys are set before it connects.

    With ``stable_identity`` the socket keeps one random routing id across transport
    reconnects, so the broker (which sets ROUTER_HANDOVER) still routes replies to
    requests sent before a dropped connection came back. Ids generated by libzmq start
    with a zero byte; ours never do.
    """
    sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    configure(sock)
    if stable_identity:
        sock.setsockopt(zmq.ROUTING_ID, b"nl" + os.urandom(8))
    if curve is not None:
        apply_curve(sock, curve)
    if before_connect is not None:
        before_connect(sock)  # a socket monitor, say: it must see the first connection
    sock.connect(endpoint)
    return sock
