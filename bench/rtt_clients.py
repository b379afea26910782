"""The client side of each ``rtt`` peer: a peer client that times round trips, one in flight.

Every peer client has the same shape, so the timed loops differ only in the one call that
sends the request and waits for its reply. Each round trip is timed with
``time.perf_counter_ns()`` around that call alone; the echo is checked outside the timed
span. Every wait is bounded by :data:`REPLY_TIMEOUT_S`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import zmq

from bench.errors import BenchError, EchoMismatch
from bench.rtt_config import PEER_INFO
from bench.rtt_floor import ATTACH, GO, OK, ShmMailbox, echo_into
from bench.rtt_servers import ECHO_SERVICE, MDP_ECHO_SERVICE
from client import AsyncClient, Client, Message
from client.connection import DEFAULT_SPIN_US
from client.wire.curve import apply_curve, load_curve
from client.wire.transport import spin_recv

_clock: Final = time.perf_counter_ns

REPLY_TIMEOUT_S: Final = 10.0
"""Bound on each reply. The first warm-up call doubles as the readiness check."""


class PeerClient(ABC):
    """A connected client of one peer.

    Every peer client is awaited from the one event loop the AsyncClient needs (uvloop, via
    :func:`client.run`). The synchronous ones never suspend inside ``round_trips``, so
    the loop sits idle while they run and adds nothing to their times.
    """

    @abstractmethod
    async def round_trips(self, n: int) -> list[int]:
        """Run ``n`` round trips one after another; returns each one's time in ns."""

    async def pause(self) -> None:
        """The benchmark is done with this peer for now (it calls this after each
        peer's warm-up and timed chunk): a peer whose server polls lets it sleep, so that
        it takes no CPU from the peers timed in between. Most peers have nothing to do."""
        return None

    @abstractmethod
    async def aclose(self) -> None:
        """Close the connection."""


class DealerClient(PeerClient):
    """A pyzmq DEALER that sends the payload as one frame and waits for it to come back;
    a CURVE client of the server's key with ``curve=(certificate, server certificate)``."""

    def __init__(
        self,
        name: str,
        ctx: zmq.Context[Any],
        endpoint: str,
        payload: bytes,
        curve: tuple[str, str] | None = None,
    ) -> None:
        self.name = name
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvtimeo = int(REPLY_TIMEOUT_S * 1000)
        if curve is not None:
            apply_curve(sock, load_curve(curve))
        sock.connect(endpoint)
        self._sock = sock
        self._payload = payload

    spin_us = 0
    """How long to poll for each reply before blocking in ``recv`` (0: block at once)."""

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`; raises TimeoutError if a reply is late."""
        sock, payload, clock = self._sock, self._payload, _clock
        send, recv, spin_ns = sock.send, sock.recv, self.spin_us * 1000
        out = [0] * n
        for i in range(n):
            t0 = clock()
            send(payload)
            frames = spin_recv(sock, time.monotonic_ns() + spin_ns, 1) if spin_ns else None
            try:
                reply = frames[0] if frames is not None else recv()
            except zmq.Again:
                raise TimeoutError(f"{self.name}: no reply in {REPLY_TIMEOUT_S} s") from None
            out[i] = clock() - t0
            if reply != payload:
                raise EchoMismatch(self.name, len(reply))
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        self._sock.close(linger=0)


class SpinningDealerClient(DealerClient):
    """A :class:`DealerClient` that waits for each reply as :class:`~client.Client` does:
    polling for up to ``DEFAULT_SPIN_US``, yielding the CPU in between, then blocking."""

    spin_us = DEFAULT_SPIN_US


class MdpClient(PeerClient):
    """A plain MDP/0.2 client (RFC 18, raw pyzmq DEALER) through the nearloop broker."""

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        self.name = name
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvtimeo = int(REPLY_TIMEOUT_S * 1000)
        sock.connect(endpoint)
        self._sock = sock
        self._request = [b"MDPC02", b"\x01", MDP_ECHO_SERVICE.encode(), payload]
        self._payload = payload

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`; raises TimeoutError if a reply is late."""
        send, recv, msg, clock = (
            self._sock.send_multipart,
            self._sock.recv_multipart,
            self._request,
            _clock,
        )
        out = [0] * n
        for i in range(n):
            t0 = clock()
            send(msg)
            try:
                reply = recv()
            except zmq.Again:
                raise TimeoutError(f"{self.name}: no reply in {REPLY_TIMEOUT_S} s") from None
            out[i] = clock() - t0
            if reply[3:] != [self._payload]:
                raise EchoMismatch(self.name, sum(len(f) for f in reply[3:]))
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        self._sock.close(linger=0)


class NearloopClient(PeerClient):
    """A nearloop :class:`~client.Client` calling the ``echo`` service through the broker
    (with its ``curve=`` keys, if given)."""

    def __init__(
        self,
        name: str,
        ctx: zmq.Context[Any],
        endpoint: str,
        payload: bytes,
        curve: tuple[str, str] | None = None,
    ) -> None:
        self.name = name
        self._client = Client(endpoint, timeout=REPLY_TIMEOUT_S, context=ctx, curve=curve)
        self._array = np.frombuffer(payload, dtype=np.uint8)
        self._request: Callable[..., Message] = partial(self._client.request, ECHO_SERVICE)
        """The one call a round trip times: here a request through the broker."""

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`."""
        request, array, clock = self._request, self._array, _clock
        out = [0] * n
        for i in range(n):
            t0 = clock()
            reply = request(None, array)
            out[i] = clock() - t0
            _check_array(self.name, reply.arrays, array)
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        self._client.close()


class LaneSessionClient(NearloopClient):
    """A nearloop session on the ``echo`` worker over a shared-memory lane
    (``lane="require"``: no lane, no peer)."""

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        super().__init__(name, ctx, endpoint, payload)
        self._session = self._client.open_session(ECHO_SERVICE, lane="require")
        self._request = self._session.request

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        self._session.close()
        await super().aclose()


class AsyncNearloopClient(PeerClient):
    """A nearloop :class:`~client.AsyncClient` on the running loop (uvloop via client.run)."""

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        self.name = name
        self._client = AsyncClient(endpoint, timeout=REPLY_TIMEOUT_S, context=ctx)
        self._array = np.frombuffer(payload, dtype=np.uint8)

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`."""
        request, array, clock = self._client.request, self._array, _clock
        out = [0] * n
        for i in range(n):
            t0 = clock()
            reply = await request(ECHO_SERVICE, None, array)
            out[i] = clock() - t0
            _check_array(self.name, reply.arrays, array)
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        await self._client.close()


class RpcqClient(PeerClient):
    """An :class:`rpcq.Client` calling the ``echo`` method with blocking ``call``."""

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        import rpcq  # optional: the caller skips this peer when rpcq is missing

        self.name = name
        # rpcq's __init__ lacks __all__, hence the ignore; the client makes its own zmq context.
        self._client = rpcq.Client(endpoint, timeout=REPLY_TIMEOUT_S)  # type: ignore[attr-defined]
        self._payload = payload

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`; rpcq raises TimeoutError if a reply is late."""
        call, payload, clock = self._client.call, self._payload, _clock
        out = [0] * n
        for i in range(n):
            t0 = clock()
            reply = call(ECHO_SERVICE, payload)
            out[i] = clock() - t0
            if reply != payload:
                raise EchoMismatch(self.name, len(reply))
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        self._client.close()  # type: ignore[no-untyped-call]


class InprocClient(PeerClient):
    """The echo work as a plain function call (:func:`bench.rtt_floor.echo_into`), with
    the payload copied in and out as the shared-memory floor does; no second process."""

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        self.name = name
        self._payload = np.frombuffer(payload, dtype=np.uint8)

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`; the last echo is checked."""
        payload, clock, echo = self._payload, _clock, echo_into
        request, reply, got = (np.zeros_like(payload) for _ in range(3))
        out = [0] * n
        for i in range(n):
            t0 = clock()
            request[:] = payload
            echo(request, reply)
            got[:] = reply
            out[i] = clock() - t0
        if not np.array_equal(got, payload):
            raise EchoMismatch(self.name, got.nbytes)
        return out

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""


class ShmFloorClient(PeerClient):
    """The client side of the shared-memory floor (:mod:`bench.rtt_floor`).

    It creates the mailbox, has the server attach it over the control socket at
    ``endpoint``, and unlinks its name at once. The first ``round_trips`` after a
    :meth:`pause` wakes the server (``go``); :meth:`pause` sends it back to sleep on its
    socket, so it polls only while this peer runs.
    """

    def __init__(self, name: str, ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> None:
        self.name = name
        self._payload = np.frombuffer(payload, dtype=np.uint8)
        sock: zmq.Socket[bytes] = ctx.socket(zmq.REQ)
        sock.linger = 0
        sock.rcvtimeo = int(REPLY_TIMEOUT_S * 1000)
        sock.connect(endpoint)
        self._control = sock
        self._box = ShmMailbox.create(len(payload))
        try:
            self._call(f"{ATTACH.decode()} {self._box.name} {len(payload)}".encode())
        except BaseException:
            self._box.close()
            sock.close(linger=0)
            raise
        finally:
            self._box.unlink()  # both sides have it mapped, or never will: the name goes now
        self._seq = 1
        self._serving = False

    def _call(self, command: bytes) -> None:
        self._control.send(command)
        try:
            answer = self._control.recv()
        except zmq.Again:
            raise TimeoutError(f"{self.name}: no answer in {REPLY_TIMEOUT_S} s") from None
        if answer != OK:
            raise BenchError(f"{self.name}: server answered {answer.decode(errors='replace')}")

    async def round_trips(self, n: int) -> list[int]:
        """See :meth:`PeerClient.round_trips`; raises TimeoutError if a reply is late."""
        if not self._serving:
            self._call(GO)
            self._serving = True
        first, self._seq = self._seq, self._seq + n
        return self._box.round_trips(self._payload, n, first, int(REPLY_TIMEOUT_S * 1e9))

    async def pause(self) -> None:
        """See :meth:`PeerClient.pause`: the server stops polling."""
        if self._serving:
            self._box.stop_server()
            self._serving = False

    async def aclose(self) -> None:
        """See :meth:`PeerClient.aclose`."""
        await self.pause()
        self._box.close()
        self._control.close(linger=0)


PeerClientFactory = Callable[..., PeerClient]
"""``(peer name, zmq context, endpoint, payload[, curve=]) -> PeerClient``: a class above;
those of peers on CURVE stacks take ``curve=``."""


def open_peer_client(
    peer: str,
    ctx: zmq.Context[Any],
    endpoint: str,
    payload: bytes,
    curve: tuple[str, str] | None = None,
) -> PeerClient:
    """Connect the client of ``peer``, the class its :class:`~bench.rtt_config.PeerInfo`
    names, to ``endpoint``, with the CURVE keys ``curve`` of its stack, if it has them."""
    factory: PeerClientFactory = globals()[PEER_INFO[peer].client]
    if curve is None:
        return factory(peer, ctx, endpoint, payload)
    return factory(peer, ctx, endpoint, payload, curve=curve)


def _check_array(peer: str, got: tuple[npt.NDArray[Any], ...], sent: npt.NDArray[Any]) -> None:
    if len(got) != 1 or not np.array_equal(got[0], sent):
        raise EchoMismatch(peer, sum(a.nbytes for a in got))
