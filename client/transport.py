"""Socket plumbing shared by the broker, clients and workers: zero-copy receive and send."""

from __future__ import annotations

from collections.abc import Sequence

import zmq

from client.protocol import MAX_MESSAGE_BYTES, ZERO_COPY_THRESHOLD_BYTES, Frame


def recv_frames(sock: zmq.Socket[bytes], flags: int, copy_first: int) -> list[Frame]:
    """Receive one multipart message.

    The first ``copy_first`` frames (identity and Majordomo envelope, all tiny) come back as
    ``bytes`` so they compare and hash cheaply; the rest come back as ``zmq.Frame`` without
    a copy, so large array payloads are never copied on receive. Raises ``zmq.Again`` when
    ``flags`` has NOBLOCK and nothing is waiting.
    """
    frames: list[Frame] = [sock.recv(flags)]
    i = 1
    while sock.rcvmore:
        frames.append(sock.recv(0, copy=i < copy_first))
        i += 1
    return frames


def send_frames(sock: zmq.Socket[bytes], frames: Sequence[Frame], flags: int = 0) -> None:
    """Send a multipart message; frames of ZERO_COPY_THRESHOLD_BYTES or more go zero-copy."""
    sock.send_multipart(frames, flags, copy=False)


def configure(sock: zmq.Socket[bytes], *, linger_ms: int = 0) -> None:
    """Options every nearloop socket gets: zero-copy threshold, a hard per-frame size cap."""
    sock.copy_threshold = ZERO_COPY_THRESHOLD_BYTES
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    sock.setsockopt(zmq.LINGER, linger_ms)
