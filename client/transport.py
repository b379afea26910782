"""Socket plumbing shared by the broker, clients and workers: the hot-path send and receive.

pyzmq's ``send_multipart``/``recv_multipart`` and ``copy=False`` everywhere cost several
microseconds per message in Python; these loops do the least per frame. Small frames are
copied (cheaper than wrapping them in a ``zmq.Frame``); frames of
ZERO_COPY_THRESHOLD_BYTES or more are never copied on send, and frames past the envelope
are never copied on receive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import zmq

from client.protocol import MAX_MESSAGE_BYTES, ZERO_COPY_THRESHOLD_BYTES, Frame

_RCVMORE: Final = zmq.RCVMORE
_SNDMORE: Final = zmq.SNDMORE
_BIG: Final = ZERO_COPY_THRESHOLD_BYTES

poll = zmq.zmq_poll
"""``poll([(socket, zmq.POLLIN)], timeout_ms)``: the C poll, without a Poller object."""

PollItems = list[tuple[Any, int]]


def poll_items(sock: zmq.Socket[bytes]) -> PollItems:
    """The argument ``poll`` takes to wait for ``sock`` to be readable."""
    return [(sock, zmq.POLLIN)]


def recv_frames(sock: zmq.Socket[bytes], flags: int, copy_first: int) -> list[Frame]:
    """Receive one whole multipart message (poll first: with ``flags=0`` this blocks).

    The first ``copy_first`` frames (identity and Majordomo envelope, all tiny) come back
    as ``bytes``, so they compare and hash cheaply; the rest come back as ``zmq.Frame``,
    never copied, so array payloads of any size cost no copy on receive.
    """
    recv = sock.recv
    more = sock.getsockopt
    frames: list[Frame] = [recv(flags)]
    while more(_RCVMORE):
        frames.append(recv(0, copy=len(frames) < copy_first))
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[Frame], flags: int = 0) -> None:
    """Send a multipart message; frames of ZERO_COPY_THRESHOLD_BYTES or more go zero-copy.

    Raises ``zmq.Again`` (with NOBLOCK) or ``zmq.ZMQError`` from the first frame only:
    ZeroMQ delivers a multipart message whole or not at all.
    """
    send = sock.send
    last = len(frames) - 1
    more = flags | _SNDMORE
    for i, f in enumerate(frames):
        if len(f) < _BIG:
            send(f, more if i < last else flags)
        else:
            send(f, more if i < last else flags, copy=False)


def configure(sock: zmq.Socket[bytes], *, linger_ms: int = 0) -> None:
    """Options every nearloop socket gets: zero-copy threshold, a hard per-frame size cap,
    and reconnects that back off from 10 ms to at most 1 s."""
    sock.copy_threshold = ZERO_COPY_THRESHOLD_BYTES
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)


def connect_dealer(context: zmq.Context[Any], endpoint: str) -> zmq.Socket[bytes]:
    """A configured DEALER connected to ``endpoint``: what clients and workers talk on."""
    sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
    configure(sock)
    sock.connect(endpoint)
    return sock
