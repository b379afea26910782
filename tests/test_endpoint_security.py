"""Secure by default: what the broker binds, and who may share a lane (PROTOCOL.md §1.1, §3.10).

Real broker processes on real ipc paths and tcp ports: a tcp bind off loopback needs CURVE
or ``--insecure``; an ipc socket is its owner's (0600) or a group's (0660); a second broker
never takes over a live broker's path, even when both start at once; a SIGKILLed broker's
stale socket is replaced, and a stopped broker leaves no files. Lanes open only between a
client and a worker of the same user.
"""

from __future__ import annotations

import grp
import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest

from broker.broker import Broker
from broker.config import BrokerConfig
from broker.endpoints import (
    LOCK_SUFFIX,
    EndpointRefused,
    IpcPathTaken,
    check_exposure,
    exposure,
)
from client import Client, LaneUnavailable
from client.lane import identity
from client.wire import (
    PeerUser,
    ProtocolError,
    WorkerOptions,
    encode_worker_ready,
    parse_worker_options,
)
from client.wire.lanes import IOX2, LaneAsk, lane_ask, lane_refusal, lane_request
from tests.conftest import (
    ROOT,
    START_TIMEOUT_S,
    Stack,
    needs_lanes,
    one_line_error,
    run_module,
    wait_for_line,
    wait_for_workers,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def serves(endpoint: str) -> bool:
    """A client gets an answer from the broker at ``endpoint``."""
    with Client(endpoint, timeout=10) as c:
        return "workers" in c.broker_stats()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- tcp off loopback -------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://127.0.0.1:5555", "tcp://127.8.9.10:*", "tcp://[::1]:5555", "tcp://localhost:1",
     "tcp://[::ffff:127.0.0.1]:1", "ipc:///tmp/x.sock", "ipc://@abstract", "inproc://x"],
)  # fmt: skip
def test_loopback_ipc_and_inproc_are_local(endpoint: str) -> None:
    assert exposure(endpoint) is None
    check_exposure(endpoint, curve=False, insecure=False)


@pytest.mark.parametrize(
    "endpoint",
    ["tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://[::]:5555", "tcp://10.1.2.3:5555",
     "tcp://eth0:5555", "tcp://lo:5555", "tcp://example.org:5555", "ws://127.0.0.1:5555"],
)  # fmt: skip
def test_every_other_endpoint_needs_curve_or_insecure(endpoint: str) -> None:
    with pytest.raises(EndpointRefused) as info:
        check_exposure(endpoint, curve=False, insecure=False)
    text = str(info.value)
    assert text.startswith(f"refusing to bind {endpoint}: ")
    assert "--curve-secret" in text and "--insecure" in text
    check_exposure(endpoint, curve=True, insecure=False)
    check_exposure(endpoint, curve=False, insecure=True)


def test_the_library_refuses_an_open_tcp_bind_and_binds_it_when_insecure() -> None:
    b = Broker(BrokerConfig(endpoints=("tcp://127.0.0.1:*", "tcp://0.0.0.0:*")))
    try:
        with pytest.raises(EndpointRefused, match=r"tcp://0\.0\.0\.0:\*: '0\.0\.0\.0' binds"):
            b.bind()
        assert b.endpoints == []  # checked before anything is bound
    finally:
        b.close()
    b = Broker(BrokerConfig(endpoints=("tcp://0.0.0.0:*",), insecure=True))
    try:
        (ep,) = b.bind()
        assert ep.startswith("tcp://0.0.0.0:")
    finally:
        b.close()


def test_the_command_line_refuses_an_open_tcp_bind_and_serves_it_with_insecure(
    stack: Stack,
) -> None:
    line = one_line_error(run_module("broker", "--bind", "tcp://0.0.0.0:0", timeout=60))
    assert "refusing to bind tcp://0.0.0.0:0" in line and "--insecure" in line
    b = stack.broker("tcp", "--insecure", binds=["tcp://0.0.0.0:*"])
    port = b.endpoint.rpartition(":")[2]
    assert serves(f"tcp://127.0.0.1:{port}")


# --- ipc modes --------------------------------------------------------------------------


def test_an_ipc_socket_is_its_owners_only(stack: Stack) -> None:
    b = stack.broker("ipc")
    path = Path(b.endpoint.removeprefix("ipc://"))
    assert stat.S_ISSOCK(path.stat().st_mode) and mode_of(path) == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert mode_of(Path(f"{path}{LOCK_SUFFIX}")) == 0o600
    assert serves(b.endpoint)


def a_group_of_ours() -> grp.struct_group:
    """A group this process may give files to, other than its own: any existing one for
    root, else a supplementary group."""
    if os.geteuid() == 0:
        for name in ("nogroup", "daemon"):
            try:
                return grp.getgrnam(name)
            except KeyError:
                continue
    others = set(os.getgroups()) - {os.getegid()}
    if not others:
        pytest.skip("this user is in no group but its own, and is not root")
    return grp.getgrgid(min(others))


@pytest.mark.parametrize("by", ["name", "gid"])
def test_ipc_group_gives_the_socket_to_that_group(stack: Stack, by: str) -> None:
    group = a_group_of_ours()
    b = stack.broker("ipc", "--ipc-group", group.gr_name if by == "name" else str(group.gr_gid))
    path = Path(b.endpoint.removeprefix("ipc://"))
    assert mode_of(path) == 0o660 and path.stat().st_gid == group.gr_gid
    assert serves(b.endpoint)


def test_an_unknown_ipc_group_is_a_one_line_error(stack: Stack) -> None:
    ep = stack.endpoint("ipc")
    line = one_line_error(run_module("broker", "--bind", ep, "--ipc-group", "no-such-group-nl"))
    assert line == "error: ipc group 'no-such-group-nl': no such group on this host"
    assert not Path(ep.removeprefix("ipc://")).exists()


# --- no takeover ------------------------------------------------------------------------


def test_a_second_broker_on_a_live_path_is_refused_and_the_first_still_serves(
    stack: Stack,
) -> None:
    first = stack.broker("ipc")
    path = first.endpoint.removeprefix("ipc://")
    line = one_line_error(run_module("broker", "--bind", first.endpoint, timeout=60))
    assert f"another broker (pid {first.proc.pid}) holds {path}" in line
    b = Broker(BrokerConfig(endpoints=(first.endpoint,)))
    try:
        with pytest.raises(IpcPathTaken, match="another broker") as info:
            b.bind()
        assert info.value.path == path
    finally:
        b.close()
    assert Path(path).exists()  # the refused ones removed nothing
    assert serves(first.endpoint)
    assert first.proc.poll() is None


def start_broker(endpoint: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "broker", "--bind", endpoint],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_two_brokers_started_at_once_on_one_path_exactly_one_serves(stack: Stack) -> None:
    ep = stack.endpoint("ipc")
    procs = [start_broker(ep), start_broker(ep)]
    stack.procs.extend(procs)
    # The loser exits 2 with one error line; the winner prints READY and keeps running.
    exited = wait_until(
        lambda: [p for p in procs if p.poll() is not None], START_TIMEOUT_S, "one broker to exit"
    )
    loser = exited[0]
    winner = procs[1 - procs.index(loser)]
    assert loser.returncode == 2
    err = (loser.stderr.read() if loser.stderr else "").strip()
    assert err.startswith("error: refusing to bind") and "another broker" in err, err
    wait_for_line(winner, "READY", START_TIMEOUT_S)
    assert serves(ep) and winner.poll() is None


def _race(endpoint: str, barrier: Any, results: Any, release: Any) -> None:
    """One contender of :func:`test_many_contenders_in_lockstep_one_wins`."""
    b = Broker(BrokerConfig(endpoints=(endpoint,)))
    barrier.wait(60)
    try:
        b.bind()
    except IpcPathTaken:
        results.put("refused")
        b.close()
        return
    results.put("bound")
    stopper = threading.Thread(target=lambda: (release.wait(60), b.stop()))
    stopper.start()
    b.run()  # serves until the test releases it
    stopper.join()
    b.close()


def test_many_contenders_in_lockstep_one_wins(stack: Stack) -> None:
    ep = stack.endpoint("ipc")
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results, release = ctx.Barrier(n), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_race, args=(ep, barrier, results, release)) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        outcomes = sorted(results.get(timeout=60) for _ in range(n))
        assert outcomes == ["bound"] + ["refused"] * (n - 1)
        assert serves(ep)
    finally:
        release.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert not Path(ep.removeprefix("ipc://")).exists()


def test_a_sigkilled_brokers_stale_socket_is_replaced(stack: Stack) -> None:
    first = stack.broker("ipc")
    path = Path(first.endpoint.removeprefix("ipc://"))
    first.stop(signal.SIGKILL)
    assert path.exists()  # nobody removed it
    second = stack.broker("ipc")
    assert second.endpoint == first.endpoint
    assert serves(second.endpoint)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_broker_removes_its_socket_and_lock(stack: Stack, sig: int) -> None:
    b = stack.broker("ipc")
    path = Path(b.endpoint.removeprefix("ipc://"))
    assert path.exists() and Path(f"{path}{LOCK_SUFFIX}").exists()
    assert b.stop(sig) == 0
    assert sorted(stack.tmp.iterdir()) == []


def test_a_path_another_program_listens_on_is_refused(stack: Stack) -> None:
    ep = stack.endpoint("ipc")
    path = ep.removeprefix("ipc://")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(path)
        other.listen()
        line = one_line_error(run_module("broker", "--bind", ep, timeout=60))
        assert "a live process that is not a nearloop broker accepts connections" in line
        assert Path(path).exists()


def test_a_file_that_is_not_a_socket_is_left_alone(stack: Stack) -> None:
    ep = stack.endpoint("ipc")
    path = Path(ep.removeprefix("ipc://"))
    path.write_text("precious")
    line = one_line_error(run_module("broker", "--bind", ep, timeout=60))
    assert "exists and is not a socket" in line
    assert path.read_text() == "precious"


# --- lanes: one user ---------------------------------------------------------------------


def declare(monkeypatch: pytest.MonkeyPatch, user: PeerUser) -> None:
    """Make this process's client declare ``user`` when it asks for a lane."""
    monkeypatch.setattr(identity, "user_identity", lambda: user)


@needs_lanes
def test_a_lane_opens_only_for_the_same_user(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    b = stack.broker("ipc")
    # Liveness sized for a busy machine: this test is about lanes, not expiry.
    stack.worker(b.endpoint, "svc", "--heartbeat-ms", "200", "--liveness", "10")
    wait_for_workers(b.endpoint, "svc", 1)
    me = identity.user_identity()
    other_uid = me.uid + 4242
    stranger = PeerUser(other_uid, (max(me.gids) + 4242,))
    group_mate = PeerUser(other_uid, (max(me.gids) + 4242, me.gids[0]))
    with Client(b.endpoint, timeout=10) as c:
        with c.open_session("svc", lane="auto") as s:
            assert s.lane == "shm" and s.lane_refused is None
        declare(monkeypatch, stranger)
        with c.open_session("svc", lane="auto") as s:
            assert s.lane == "zmq" and s.lane_refused is not None
            assert f"runs as uid {me.uid} and this client as uid {other_uid}" in s.lane_refused
            assert "no group in common" in s.lane_refused
            assert s.request({"op": "count"}).body["count"] == 1
        with pytest.raises(LaneUnavailable, match="no group in common"):
            c.open_session("svc", lane="require")
        declare(monkeypatch, group_mate)
        with c.open_session("svc", lane="auto") as s:
            assert s.lane == "zmq" and s.lane_refused is not None
            assert f"share group {me.gids[0]}" in s.lane_refused
            assert "owner-only (mode 0600)" in s.lane_refused
        stats = c.broker_stats()
    assert stats["lanes_opened"] == 1 and stats["sessions"] == 0


def test_ready_carries_the_workers_user_and_a_bad_one_is_malformed() -> None:
    me = PeerUser(1000, (1000, 27))
    opts = WorkerOptions(declared=True, host="h", lanes=(IOX2,), user=me)
    ready = encode_worker_ready(2, b"svc", opts)
    assert parse_worker_options(ready[-1]).user == me
    assert parse_worker_options(msgpack.packb({"credit": 1})).user is None
    for bad in ({"uid": -1, "gids": [1]}, {"uid": 1, "gids": []}, {"uid": 1},
                {"uid": "0", "gids": [0]}, {"uid": 1, "gids": [2**32]}):  # fmt: skip
        with pytest.raises(ProtocolError):
            parse_worker_options(msgpack.packb(bad))


def test_a_lane_ask_without_a_user_gets_no_lane() -> None:
    me = PeerUser(1000, (1000,))
    worker = WorkerOptions(declared=True, host="h", lanes=(IOX2,), user=me)
    older_client = lane_request({"service": "s", "lane": {"host": "h", "transports": [IOX2]}})
    assert older_client == LaneAsk("h", None)
    assert "client that declared no user" in str(lane_refusal(worker, older_client))
    older_worker = WorkerOptions(declared=True, host="h", lanes=(IOX2,))
    assert "declared no user" in str(lane_refusal(older_worker, LaneAsk("h", me)))
    assert lane_refusal(worker, lane_request({"lane": lane_ask("h", me)})) is None
