"""The protocol module on its own: round trips (property-based) and rejections."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from client import wire as p
from client.errors import PayloadTooLarge, ProtocolError

pytestmark = pytest.mark.timeout(120)

DTYPES = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
DTYPES += [">f8", ">i4"]  # big-endian travels too

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    rid=st.integers(0, 2**64 - 1),
    kind=st.sampled_from([p.KIND_REQUEST, p.KIND_REPLY, "block"]),
    ts=st.dictionaries(st.text(min_size=1, max_size=10), st.integers(0, 2**63), max_size=4),
    ttl=st.none() | st.integers(0, 10**9),
    body=msgpack_values,
    session=st.none() | st.integers(0, 2**64 - 1),
)
def test_header_round_trip(
    rid: int, kind: str, ts: dict[str, int], ttl: int | None, body: Any, session: int | None
) -> None:
    frame = p.encode_header(id=rid, kind=kind, ts=ts, ttl_ms=ttl, body=body, session=session)
    h = p.parse_header(frame)
    got = (h.id, h.kind, dict(h.ts), h.ttl_ms, h.body, h.session)
    assert got == (rid, kind, ts, ttl, body, session)


@pytest.mark.parametrize("session", [-1, -(2**63), 1.0, True, "7", [7]])
def test_a_session_that_is_not_a_u64_is_refused(session: Any) -> None:
    frame = msgpack.packb({"id": 1, "kind": "request", "session": session})
    with pytest.raises(ProtocolError, match="header session must be an integer"):
        p.parse_header(frame)


def test_error_header_round_trip() -> None:
    info = p.ErrorInfo(p.ERR_WORKER, "ValueError: x", "Traceback ...")
    h = p.parse_header(p.encode_header(id=7, kind=p.KIND_ERROR, error=info))
    assert h.error == info and h.id == 7


@settings(max_examples=150, deadline=None)
@given(
    arrays=st.lists(
        st.sampled_from(DTYPES).flatmap(
            lambda dt: hnp.arrays(
                np.dtype(dt), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)
            )
        ),
        max_size=4,
    )
)  # fmt: skip
def test_arrays_round_trip(arrays: list[np.ndarray[Any, Any]]) -> None:
    out = _over_the_wire(arrays)
    assert len(out) == len(arrays)
    for a, b in zip(arrays, out, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _over_the_wire(arrays: list[np.ndarray[Any, Any]]) -> tuple[Any, ...]:
    specs, inline, frames = p.arrays_to_frames(arrays)
    # What crosses the wire is bytes: rebuild from copies, as a receiver would.
    wire = [bytes(f) for f in frames]
    header = p.parse_header(p.encode_header(id=1, kind="x", arrays=specs, inline=inline))
    assert len(header.arrays) == len(arrays)
    return p.frames_to_arrays(header.arrays, wire, header.inline)


def test_non_contiguous_array_is_sent_in_c_order() -> None:
    a = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    (b,) = _over_the_wire([a])
    np.testing.assert_array_equal(a, b)


def test_small_arrays_ride_in_the_header_up_to_the_inline_bounds() -> None:
    most = p.INLINE_ARRAY_MAX_BYTES
    fits = np.arange(most, dtype=np.uint8)
    too_big = np.arange(most + 1, dtype=np.uint8)
    n_fit = p.INLINE_TOTAL_MAX_BYTES // most
    packed = p.arrays_to_frames([fits, too_big])
    assert [d is not None for d in packed.inline] == [True, False]
    assert len(packed.frames) == 1 and packed.frames[0].nbytes == most + 1
    # The per-header total: once it is spent, arrays that would fit go as frames.
    packed = p.arrays_to_frames([fits] * (n_fit + 1))
    assert [d is not None for d in packed.inline] == [True] * n_fit + [False]
    out = _over_the_wire([fits] * (n_fit + 1) + [too_big, np.float64(2.5), np.zeros((0, 3))])
    np.testing.assert_array_equal(out[n_fit], fits)
    np.testing.assert_array_equal(out[n_fit + 1], too_big)
    assert out[-2].shape == () and out[-2] == 2.5 and out[-1].shape == (0, 3)
    # Large arrays alone: no inline list at all, the header as before inline existed.
    assert p.arrays_to_frames([too_big]).inline == ()


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (["<f8", [2], b"\0" * 15], "must be bin of 16 bytes"),
        (["<f8", [2], "sixteen chars!!!"], "must be bin of 16 bytes"),
        (["<f8", [2], b"\0" * 16, 1], "bad array spec"),
    ],
)
def test_bad_inline_arrays_are_refused(entry: list[Any], match: str) -> None:
    frame = msgpack.packb({"id": 1, "kind": "x", "arrays": [entry]})
    with pytest.raises(ProtocolError, match=match):
        p.parse_header(frame)


def test_inline_and_framed_arrays_must_add_up_to_the_frames() -> None:
    header = p.parse_header(
        msgpack.packb({"id": 1, "kind": "x", "arrays": [["|u1", [1], b"a"], ["|u1", [2]]]})
    )
    assert p.frames_to_arrays(header.arrays, [b"bc"], header.inline)[1].tobytes() == b"bc"
    with pytest.raises(ProtocolError, match="1 arrays but 0 frames"):
        p.frames_to_arrays(header.arrays, [], header.inline)
    with pytest.raises(ProtocolError, match="1 arrays but 2 frames"):
        p.frames_to_arrays(header.arrays, [b"bc", b"d"], header.inline)


@pytest.mark.parametrize("dtype", ["O", "V8", "U4", "M8[s]", "not-a-dtype"])
def test_non_numeric_dtypes_are_refused(dtype: str) -> None:
    with pytest.raises(ProtocolError):
        p.ArraySpec(dtype, (1,))


def test_array_frame_size_must_match_spec() -> None:
    with pytest.raises(ProtocolError, match="does not match"):
        p.frames_to_arrays([p.ArraySpec("<f8", (3,))], [b"\0" * 23])
    with pytest.raises(ProtocolError, match="arrays but"):
        p.frames_to_arrays([p.ArraySpec("<f8", (3,))], [])


def test_oversized_bodies_are_refused_before_sending() -> None:
    big = memoryview(bytearray(p.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(PayloadTooLarge) as exc:
        p.check_body_size([b"h", big])
    assert exc.value.limit == p.MAX_MESSAGE_BYTES
    with pytest.raises(PayloadTooLarge):
        p.encode_header(id=1, kind="x", body="x" * (p.MAX_HEADER_BYTES + 1))


names = st.binary(min_size=1, max_size=30).filter(lambda b: all(0x20 < c < 0x7F for c in b))
bodies = st.lists(st.binary(max_size=40), max_size=5)


@settings(max_examples=200, deadline=None)
@given(version=st.sampled_from([1, 2]), service=names, body=bodies)
def test_client_request_round_trip(version: int, service: bytes, body: list[bytes]) -> None:
    frames = p.encode_client_request(version, service, body)
    msg = p.parse_peer_message(frames)
    assert msg == p.ClientRequest(version, service, body)


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from([1, 2]),
    final=st.booleans(),
    address=st.binary(min_size=1, max_size=16),
    body=bodies,
)
def test_worker_reply_round_trip(
    version: int, final: bool, address: bytes, body: list[bytes]
) -> None:
    if version == 1 and not final:
        with pytest.raises(ValueError):
            p.encode_worker_reply(version, final, address, body)
        return
    msg = p.parse_peer_message(p.encode_worker_reply(version, final, address, body))
    assert msg == p.WorkerReply(version, final, address, body)


@settings(max_examples=100, deadline=None)
@given(version=st.sampled_from([1, 2]), address=st.binary(max_size=16), body=bodies)
def test_worker_request_and_broker_reply_round_trip(
    version: int, address: bytes, body: list[bytes]
) -> None:
    assert p.parse_broker_to_worker(p.encode_worker_request(version, address, body), version) == (
        p.BrokerRequest(version, address, body)
    )
    reply = p.encode_client_reply(version, True, b"svc", body)
    assert p.parse_broker_reply(reply) == p.BrokerReply(version, True, b"svc", body)


@pytest.mark.parametrize("version", [1, 2])
def test_ready_heartbeat_disconnect(version: int) -> None:
    opts = p.WorkerOptions(credit=8, heartbeat_ms=40, liveness=4, declared=True)
    ready = p.parse_peer_message(p.encode_worker_ready(version, b"echo", opts))
    assert ready == p.WorkerReady(version, b"echo", opts)
    plain = p.parse_peer_message(p.encode_worker_ready(version, b"echo"))
    assert isinstance(plain, p.WorkerReady) and plain.options == p.PLAIN_WORKER
    assert p.parse_peer_message(p.encode_worker_heartbeat(version)) == p.WorkerHeartbeat(version)
    assert p.parse_peer_message(p.encode_worker_disconnect(version)) == p.WorkerDisconnect(version)
    assert p.parse_broker_to_worker(p.encode_worker_heartbeat(version), version) == (
        p.BrokerHeartbeat(version)
    )


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=12), max_size=8))
def test_garbage_parses_or_raises_protocol_error(frames: list[bytes]) -> None:
    for parse in (p.parse_peer_message, p.parse_broker_reply, p.parse_broker_to_worker):
        with contextlib.suppress(ProtocolError):
            parse(frames)
    with contextlib.suppress(ProtocolError):
        p.parse_header(b"".join(frames))


@pytest.mark.parametrize(
    "frames",
    [
        [p.MDPC02, b"\x09", b"svc"],
        [p.MDPW02, b"\x09"],
        [p.MDPW02, p.W_FINAL, b"addr", b"not-empty", b"x"],
        [p.MDPC02, p.C_REQUEST, b"bad\x00name"],
        [p.EMPTY, p.MDPW01, p.W1_READY, b""],
        [p.MDPW02, p.W_READY, b"svc", b"\xc1"],
        [p.MDPW02, p.W_READY, b"svc", b"\x91\x01"],
        [p.MDPW02, p.W_READY, b"svc", b"\x81\xa6credit\x00"],
    ],
)
def test_malformed_commands_are_protocol_errors(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        p.parse_peer_message(frames)


def test_hostile_nesting_is_a_protocol_error_not_a_crash() -> None:
    """Lists nested 1010 deep: msgpack reads them, but a plain repr() would recurse."""
    deep = b"\x91" * 1010 + b"\x01"
    for key in (b"\xa2id", b"\xa4kind", b"\xa6ttl_ms", b"\xa6arrays", b"\xa2ts"):
        rest = b"\xa2id\x01" if key != b"\xa2id" else b"\xa4kind\xa1x"
        frame = b"\x82" + rest + key + deep
        with pytest.raises(ProtocolError):
            p.parse_header(frame)


def test_error_texts_with_lone_surrogates_still_encode() -> None:
    info = p.ErrorInfo(p.ERR_WORKER, "bad \udcff text", "tb \ud800")
    h = p.parse_header(p.encode_header(id=3, kind=p.KIND_ERROR, error=info))
    assert h.error is not None and "bad" in h.error.message


def test_too_many_arrays_are_refused_before_sending() -> None:
    with pytest.raises(ProtocolError, match="arrays, max"):
        p.arrays_to_frames([np.zeros(1)] * (p.MAX_ARRAYS + 1))
