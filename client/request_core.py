"""The core that Client and AsyncClient share: build requests, decode replies, match ids,
and the timeout and spin budget of each wait, checked once."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy.typing as npt

from client.errors import ProtocolError, RemoteError, remote_error
from client.messages import Message
from client.wire import (
    KIND_ERROR,
    KIND_REPLY,
    KIND_REQUEST,
    MMI_PREFIX,
    Frame,
    Header,
    arrays_to_frames,
    check_body_size,
    encode_client_request,
    encode_header,
    frames_to_arrays,
    parse_broker_reply,
    parse_header,
)

DEFAULT_SPIN_US: Final = 1000
"""How long a waiting client polls for a reply before it sleeps in the kernel: long
enough to cover a parameter-loop call (an H2 energy through the broker, ~0.5 ms on the
2-core development VM), which a shorter spin would outlast and then still pay the
wake-up."""

TTL_SHARE: Final = 0.9
"""The broker may queue a request for this share of the caller's timeout, so that a
``no_worker`` error still reaches the caller before its own deadline."""


class RequestCore:
    """Encodes requests with fresh ids and decodes replies into Messages or RemoteErrors."""

    def __init__(self, default_timeout: float, spin_us: int = DEFAULT_SPIN_US) -> None:
        if default_timeout <= 0:
            raise ValueError("default_timeout must be > 0 seconds")
        if type(spin_us) is not int or spin_us < 0:
            raise ValueError(f"spin_us must be an integer >= 0, got {spin_us!r}")
        self.default_timeout = default_timeout
        self.spin_ns = spin_us * 1000
        """How long a caller polls for its reply before sleeping (0: it sleeps at once)."""
        self._ids = itertools.count(1)
        self.late_replies = 0
        """Replies that arrived for a request whose caller had already timed out."""

    def timeout_of(self, timeout: float | None) -> float:
        """The effective timeout in seconds, checked."""
        t = self.default_timeout if timeout is None else timeout
        if t <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {t}")
        return t

    def build(
        self,
        service: str,
        body: Any,
        arrays: Sequence[npt.NDArray[Any]],
        timeout: float,
        session: int | None = None,
    ) -> tuple[int, list[Frame]]:
        """A new request id and the frames to send. Raises before sending anything bad.

        ``session`` goes into the header: the broker routes ``nl.session`` requests by it.
        """
        rid = next(self._ids)
        specs, inline, frames = arrays_to_frames(arrays)
        header = encode_header(
            id=rid,
            kind=KIND_REQUEST,
            ts={"client_send": time.monotonic_ns()},
            ttl_ms=int(timeout * TTL_SHARE * 1000),
            arrays=specs,
            body=body,
            session=session,
            inline=inline,
        )
        msg_body = [header, *frames]
        if frames:  # a lone header is bounded by encode_header
            check_body_size(msg_body)
        return rid, encode_client_request(2, service.encode(), msg_body)

    def build_mmi(self, service: str, argument: bytes) -> tuple[int, list[Frame]]:
        """An MMI request (RFC 8); our header rides after the argument and is echoed back."""
        rid = next(self._ids)
        header = encode_header(id=rid, kind=KIND_REQUEST)
        return rid, encode_client_request(2, service.encode(), [argument, header])

    def decode(self, frames: list[Frame]) -> tuple[int, Message | RemoteError]:
        """Decode one reply into (request id, Message or the RemoteError to raise)."""
        reply = parse_broker_reply(frames)
        body = reply.body
        if not body:
            raise ProtocolError("reply has no body")
        if reply.service.startswith(MMI_PREFIX):
            header = parse_header(body[-1])
            fields = [bytes(f) for f in body[:-1]]
            mmi = Header(id=header.id, kind=KIND_REPLY, body=fields)
            return header.id, Message(mmi, (), False)
        header = parse_header(body[0])
        if header.kind == KIND_ERROR and header.error is not None:
            e = header.error
            service = reply.service.decode(errors="replace")
            return header.id, remote_error(service, e.type, e.message, e.traceback)
        arrays = frames_to_arrays(header.arrays, body[1:], header.inline)
        return header.id, Message(header, arrays, not reply.final)
