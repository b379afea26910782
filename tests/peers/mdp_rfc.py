"""Plain Majordomo peers written from the RFC texts alone (RFC 7: MDP/0.1, RFC 18: MDP/0.2).

They deliberately import nothing from nearloop: they are what a third party would write.
Each worker runs on a thread with its own socket and heartbeats at the RFC reference
rate unless told otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

# RFC 7 (MDP/0.1)
MDPC01 = b"MDPC01"
MDPW01 = b"MDPW01"
V1 = {
    "READY": b"\x01",
    "REQUEST": b"\x02",
    "REPLY": b"\x03",
    "HEARTBEAT": b"\x04",
    "DISCONNECT": b"\x05",
}
# RFC 18 (MDP/0.2)
MDPC02 = b"MDPC02"
MDPW02 = b"MDPW02"
C2 = {"REQUEST": b"\x01", "PARTIAL": b"\x02", "FINAL": b"\x03"}
W2 = {
    "READY": b"\x01", "REQUEST": b"\x02", "PARTIAL": b"\x03", "FINAL": b"\x04",
    "HEARTBEAT": b"\x05", "DISCONNECT": b"\x06",
}  # fmt: skip


class V1Client:
    """RFC 7 client on a REQ socket: the REQ socket adds the empty delimiter frame."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.REQ)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def request(self, service: bytes, body: list[bytes], timeout_ms: int = 5000) -> list[bytes]:
        self.sock.send_multipart([MDPC01, service, *body])
        if not self.sock.poll(timeout_ms):
            raise TimeoutError("no reply")
        reply = self.sock.recv_multipart()
        assert reply[0] == MDPC01, reply
        assert reply[1] == service, reply
        return reply[2:]


class V2Client:
    """RFC 18 client on a DEALER socket: no empty frame; zero or more PARTIAL, then FINAL."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def request(
        self, service: bytes, body: list[bytes], timeout_ms: int = 5000
    ) -> tuple[list[list[bytes]], list[bytes]]:
        """Returns (partials, final body)."""
        self.sock.send_multipart([MDPC02, C2["REQUEST"], service, *body])
        partials = []
        while True:
            if not self.sock.poll(timeout_ms):
                raise TimeoutError("no reply")
            msg = self.sock.recv_multipart()
            assert msg[0] == MDPC02 and msg[2] == service, msg
            if msg[1] == C2["FINAL"]:
                return partials, msg[3:]
            assert msg[1] == C2["PARTIAL"], msg
            partials.append(msg[3:])


Handler = Callable[[list[bytes]], list[list[bytes]]]
"""Takes a request body; returns the reply bodies (all but the last are PARTIALs in 0.2)."""


class PlainWorker(threading.Thread):
    """An RFC 7 or RFC 18 worker on a DEALER socket, heartbeating every ``heartbeat_ms``."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        service: bytes,
        handler: Handler,
        *,
        version: int,
        heartbeat_ms: int = 2500,
        liveness: int = 3,
    ) -> None:
        super().__init__(daemon=True)
        self.ctx, self.endpoint, self.service = ctx, endpoint, service
        self.handler, self.version = handler, version
        self.heartbeat_ms, self.liveness = heartbeat_ms, liveness
        self.stopping = threading.Event()
        self.served = 0
        self.heartbeats_received = 0
        self.disconnects = 0
        self.heartbeats_sent = 0

    def keep_address(self, address: bytes) -> bytes:
        """What this worker keeps of a REQUEST's client address and echoes in its replies:
        the frame as it is, as RFC 7 and RFC 18 ask."""
        return address

    def _cmd(self, name: str, *rest: bytes) -> list[bytes]:
        if self.version == 1:
            return [b"", MDPW01, V1[name], *rest]
        return [MDPW02, W2[name], *rest]

    def run(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        sock.send_multipart(self._cmd("READY", self.service))
        next_hb = time.monotonic() + self.heartbeat_ms / 1000
        at = 2 if self.version == 1 else 1  # index of the command frame
        cmds = V1 if self.version == 1 else W2
        try:
            while not self.stopping.is_set():
                if sock.poll(50):
                    msg = sock.recv_multipart()
                    cmd = msg[at]
                    if cmd == cmds["REQUEST"]:
                        address, empty, body = msg[at + 1], msg[at + 2], msg[at + 3 :]
                        assert empty == b""
                        address = self.keep_address(address)
                        replies = self.handler(body)
                        # Counted before the reply goes, so a caller holding the reply
                        # sees the count (counted after, a test could read it first).
                        self.served += 1
                        for i, r in enumerate(replies):
                            last = i == len(replies) - 1
                            if self.version == 1:
                                sock.send_multipart(self._cmd("REPLY", address, b"", *r))
                            else:
                                name = "FINAL" if last else "PARTIAL"
                                sock.send_multipart(self._cmd(name, address, b"", *r))
                    elif cmd == cmds["HEARTBEAT"]:
                        self.heartbeats_received += 1
                    elif cmd == cmds["DISCONNECT"]:
                        self.disconnects += 1
                        sock.close()
                        sock = self.ctx.socket(zmq.DEALER)
                        sock.linger = 0
                        sock.connect(self.endpoint)
                        sock.send_multipart(self._cmd("READY", self.service))
                if time.monotonic() >= next_hb:
                    sock.send_multipart(self._cmd("HEARTBEAT"))
                    self.heartbeats_sent += 1
                    next_hb = time.monotonic() + self.heartbeat_ms / 1000
            sock.send_multipart(self._cmd("DISCONNECT"))
        finally:
            sock.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def echo(body: list[bytes]) -> list[list[bytes]]:
    """One reply: the request body."""
    return [body]
