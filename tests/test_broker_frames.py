"""What the broker sends, frame by frame, against a real ``python -m broker``.

The broker builds a worker's REQUEST and a client's reply by hand, for speed; these tests
pin both byte-equal to the wire encoders (``encode_worker_request``,
``encode_client_reply``) for MDP/0.1 and MDP/0.2. They also pin the client-address token
(PROTOCOL.md §2.5) and the HEARTBEAT that answers an accepted READY (§4.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from broker.broker import TOKEN_FORMAT
from client.wire import (
    MAX_HEARTBEAT_MS,
    ZERO_COPY_THRESHOLD_BYTES,
    encode_client_reply,
    encode_client_request,
    encode_header,
    encode_worker_disconnect,
    encode_worker_heartbeat,
    encode_worker_ready,
    encode_worker_reply,
    encode_worker_request,
    parse_broker_to_worker,
)
from tests.conftest import BrokerProc, Stack, broker_stats, wait_for_workers
from tests.peers.cstring_worker import c_string, zmsg_received, zmsg_sent

pytestmark = pytest.mark.timeout(60)

WAIT_MS = 10_000
"""How long a raw socket waits for what the broker must send (bounded, busy-machine safe)."""

# Body frames of every kind the broker forwards: a nearloop header, an empty frame, binary
# with NULs, and a frame large enough for the zero-copy path.
REQUEST_BODY = [
    encode_header(id=7, kind="request", body={"x": 1}),
    b"",
    b"\x00\x01\x02\xff",
    bytes(range(256)) * (ZERO_COPY_THRESHOLD_BYTES // 256 + 1),
]
PARTIAL_BODY = [encode_header(id=7, kind="reply", body="part"), b"\x00"]
FINAL_BODY = [encode_header(id=7, kind="reply", body="done"), b"", b"\xfe" * 100_000]
SERVICE = b"pin"


@pytest.fixture
def broker_args() -> tuple[str, ...]:
    """More ``python -m broker`` flags; a test overrides this by parametrizing it."""
    return ()


@pytest.fixture
def broker(stack: Stack, broker_args: tuple[str, ...]) -> BrokerProc:
    # Plain workers get the broker's own heartbeat interval: at the largest one, only the
    # HEARTBEAT that answers READY can arrive within WAIT_MS.
    return stack.broker("ipc", "--heartbeat-ms", str(MAX_HEARTBEAT_MS), *broker_args)


Dealer = Callable[[], "zmq.Socket[bytes]"]


@pytest.fixture
def dealer(zctx: zmq.Context[Any], broker: BrokerProc) -> Iterator[Dealer]:
    """Makes raw DEALER sockets connected to ``broker``; closes them afterwards."""
    made: list[zmq.Socket[bytes]] = []

    def connect() -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = zctx.socket(zmq.DEALER)
        s.connect(broker.endpoint)
        made.append(s)
        return s

    yield connect
    for s in made:
        s.close(linger=0)


def receive(sock: zmq.Socket[bytes]) -> list[bytes]:
    assert sock.poll(WAIT_MS), "the broker sent nothing"
    return sock.recv_multipart()


def plain_worker(dealer: Dealer, version: int) -> zmq.Socket[bytes]:
    """A raw DEALER that sends a plain READY (no options) and gets the broker's answer."""
    w = dealer()
    w.send_multipart(encode_worker_ready(version, SERVICE))
    assert receive(w) == encode_worker_heartbeat(version)
    return w


@pytest.mark.parametrize("client_version", [1, 2])
@pytest.mark.parametrize("worker_version", [1, 2])
def test_hand_built_request_and_replies_equal_the_encoders(
    broker: BrokerProc,
    dealer: Dealer,
    worker_version: int,
    client_version: int,
) -> None:
    w = plain_worker(dealer, worker_version)
    c = dealer()
    c.send_multipart(encode_client_request(client_version, SERVICE, REQUEST_BODY))

    request = receive(w)
    token = parse_broker_to_worker(request, worker_version).address
    assert request == encode_worker_request(worker_version, token, REQUEST_BODY)
    assert re.fullmatch(rb"[0-9a-f]{16}", token)

    if worker_version == 2:
        w.send_multipart(encode_worker_reply(2, False, token, PARTIAL_BODY))
    w.send_multipart(encode_worker_reply(worker_version, True, token, FINAL_BODY))
    if worker_version == 2 and client_version == 2:
        assert receive(c) == encode_client_reply(2, False, SERVICE, PARTIAL_BODY)
    assert receive(c) == encode_client_reply(client_version, True, SERVICE, FINAL_BODY)
    dropped = int(worker_version == 2 and client_version == 1)
    assert broker_stats(broker.endpoint)["partials_dropped_v01"] == dropped


def test_every_dispatch_gets_a_fresh_token(broker: BrokerProc, dealer: Dealer) -> None:
    w = plain_worker(dealer, 2)
    c = dealer()
    tokens = []
    for i in range(20):
        c.send_multipart(encode_client_request(2, SERVICE, [b"%d" % i]))
        token = parse_broker_to_worker(receive(w)).address
        tokens.append(token)
        w.send_multipart(encode_worker_reply(2, True, token, [b"ok"]))
        assert receive(c) == encode_client_reply(2, True, SERVICE, [b"ok"])
    assert len(set(tokens)) == len(tokens)


@given(st.integers(0, 2**64 - 1))
def test_a_token_survives_string_minded_peers(n: int) -> None:
    """16 printable hex digits: no NUL for a C string to stop at, and never the 17-byte
    or 33-byte ``@`` frames that the zguide's ``zmsg`` rewrites."""
    token = TOKEN_FORMAT % n
    assert re.fullmatch(rb"[0-9a-f]{16}", token)
    assert zmsg_sent(c_string(zmsg_received(token))) == token


@pytest.mark.parametrize("version", [1, 2])
def test_an_accepted_ready_is_answered_at_once_with_a_heartbeat(
    broker: BrokerProc, dealer: Dealer, version: int
) -> None:
    """The broker's heartbeat interval here is 60 s, so the HEARTBEAT that ``plain_worker``
    waits for is the answer to READY. It counts as a registration, and nothing else
    follows it."""
    w = plain_worker(dealer, version)
    wait_for_workers(broker.endpoint, SERVICE.decode(), 1)
    assert not w.poll(200)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("service", [b"mmi.mine", b"nl.mine"])
def test_a_refused_ready_gets_disconnect_and_no_heartbeat(
    broker: BrokerProc,
    dealer: Dealer,
    version: int,
    service: bytes,
) -> None:
    w = dealer()
    w.send_multipart(encode_worker_ready(version, service))
    assert receive(w) == encode_worker_disconnect(version)
    stats = broker_stats(broker.endpoint)
    assert stats["workers_registered"] == 0 and stats["malformed"] == 1


@pytest.mark.parametrize("broker_args", [("--max-services", "1")])
@pytest.mark.parametrize("version", [1, 2])
def test_a_ready_past_max_services_gets_disconnect_and_no_heartbeat(
    broker: BrokerProc, dealer: Dealer, version: int
) -> None:
    plain_worker(dealer, version)  # takes the one service slot
    late = dealer()
    late.send_multipart(encode_worker_ready(version, b"one-too-many"))
    assert receive(late) == encode_worker_disconnect(version)
    stats = broker_stats(broker.endpoint)
    assert stats["workers_registered"] == 1 and stats["services_refused"] == 1
