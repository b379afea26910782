"""CURVE on the broker's tcp endpoints: keys, allow-lists, roles, reloads, the wire itself.

Every test runs a real ``python -m broker`` with keys made by ``zmq.auth``, and talks to it
over tcp loopback (and its ipc endpoint, which stays NULL).
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from client import AsyncClient, Client, RequestTimeout, ServiceUnavailable, Worker
from client.wire import MDPC02, MDPW02, W_DISCONNECT, W_HEARTBEAT, W_READY
from client.wire.curve import CurveKeys, KeyFileError, apply_curve, load_curve
from tests.conftest import (
    ROOT,
    BrokerProc,
    Stack,
    one_line_error,
    run_module,
    stop_process,
    wait_for_workers,
    wait_until,
)
from tests.peers.mdp_rfc import PlainWorker, V1Client, V2Client, echo

REFUSED_WAIT_S = 1.0
"""How long a refused peer waits for the reply that must not come."""


@dataclass
class Keys:
    """Key pairs in a tmp dir: the broker's, and allow-list folders of public keys."""

    root: Path

    def __post_init__(self) -> None:
        for name, folder in [
            ("broker", "server"), ("alice", "clients"), ("worker", "workers"),
            ("qpu1", "qpu_workers"), ("eve", "outsiders"), ("bob", "outsiders"),
        ]:  # fmt: skip
            (self.root / folder).mkdir(exist_ok=True)
            zmq.auth.create_certificates(self.root / folder, name)

    def dir(self, folder: str) -> Path:
        return self.root / folder

    def secret(self, name: str) -> Path:
        return next(self.root.glob(f"*/{name}.key_secret"))

    def curve(self, name: str) -> tuple[str, str]:
        """``curve=`` for the peer ``name``."""
        return str(self.secret(name)), str(self.root / "server" / "broker.key")

    def broker_args(self) -> list[str]:
        return [
            "--curve-secret", str(self.root / "server" / "broker.key_secret"),
            "--allow-clients", str(self.dir("clients")),
            "--allow-workers", str(self.dir("workers")),
            "--allow-workers", f"qpu={self.dir('qpu_workers')}",
        ]  # fmt: skip


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def broker(stack: Stack, keys: Keys) -> BrokerProc:
    """A CURVE broker on tcp loopback (endpoints[0]) and on ipc (endpoints[1], NULL)."""
    binds = ["tcp://127.0.0.1:*", stack.endpoint("ipc")]
    return stack.broker("tcp", *keys.broker_args(), "--log-level", "INFO", binds=binds)


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.destroy(linger=0)


class WorkerThread:
    """A nearloop :class:`Worker` serving on a thread of this process."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(10)


@pytest.fixture
def echo_worker(broker: BrokerProc, keys: Keys) -> Iterator[WorkerThread]:
    w = WorkerThread(Worker(broker.endpoint, "echo", lambda m: m.body, curve=keys.curve("worker")))
    try:
        wait_for_workers(broker.endpoints[1], "echo", 1)
        yield w
    finally:
        w.stop()


def stats(broker: BrokerProc) -> dict[str, Any]:
    """``mmi.stats`` through the broker's NULL ipc endpoint."""
    with Client(broker.endpoints[1], timeout=5) as c:
        return c.broker_stats()


def curve_dealer(ctx: zmq.Context[Any], endpoint: str, keys: CurveKeys) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.linger = 0
    apply_curve(sock, keys)
    sock.connect(endpoint)
    return sock


# --- round trips ---------------------------------------------------------------------------


def test_an_allowed_client_and_worker_make_round_trips(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread
) -> None:
    with Client(broker.endpoint, timeout=10, curve=keys.curve("alice")) as c:
        assert c.request("echo", {"x": 1}).body == {"x": 1}

    async def main() -> Any:
        async with AsyncClient(broker.endpoint, timeout=10, curve=keys.curve("alice")) as ac:
            return (await ac.request("echo", {"y": 2})).body

    assert asyncio.run(main()) == {"y": 2}
    # A worker key may act as a client too (decoders fetch their models with theirs).
    with Client(broker.endpoint, timeout=10, curve=keys.curve("worker")) as c:
        assert c.request("echo", [3]).body == [3]
    s = stats(broker)
    assert s["auth_refused"] == {"CURVE": 0, "mismatch": 0, "aborted": 0}
    assert s["roles_refused"] == 0


@pytest.mark.timeout(180)
def test_a_syndrome_stream_reaches_curve_decoders(
    stack: Stack, broker: BrokerProc, keys: Keys
) -> None:
    """The decoder worker (``python -m decoders --curve``) fetches its model and decodes
    the blocks of a stream (``control_sim qec --curve``), both over CURVE."""
    stack.server(
        "-m", "decoders", "--connect", broker.endpoint, "--decoder", "pymatching",
        "--curve", *keys.curve("worker"),
    )  # fmt: skip
    done = run_module(
        "control_sim", "qec", "--connect", broker.endpoint, "--curve", *keys.curve("alice"),
        "--code", "repetition", "--distance", "3", "--rounds", "2", "--shots", "2000",
        "--block-shots", "500", "--json", str(keys.root / "qec.json"), timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    s = json.loads((keys.root / "qec.json").read_text())
    assert s["blocks_decoded"] == 4 and s["blocks_failed"] == 0 and s["lost"] == 0


@pytest.mark.timeout(150)
def test_a_stream_made_from_an_endpoint_takes_curve_keys(
    stack: Stack, broker: BrokerProc, keys: Keys
) -> None:
    """``Stream(endpoint, ..., curve=...)`` and ``AsyncStream.open`` make their own CURVE
    client, and close it; beside a client, ``curve=`` is an error."""
    from client import AsyncStream, Stream
    from control_sim.qec.codes import CodeSpec
    from control_sim.qec.source import SyndromeSampler

    stack.server(
        "-m", "decoders", "--connect", broker.endpoint, "--decoder", "pymatching",
        "--curve", *keys.curve("worker"),
    )  # fmt: skip
    wait_for_workers(broker.endpoints[1], "decode", 1)
    sampler = SyndromeSampler(CodeSpec("repetition", 3, 2, 0.01), seed=3)
    blocks = [sampler.sample_block(50)[0] for _ in range(2)]
    with Stream(broker.endpoint, "decode", sampler.dem, curve=keys.curve("alice")) as s:
        for block in blocks:
            s.send(block)
        results = s.drain(60)
        own = s.client
    assert [r.seq for r in results] == [0, 1] and all(r.ok for r in results)
    assert own._conn.sock is None  # the stream closed the client it made

    async def via_async() -> int:
        stream = await AsyncStream.open(
            broker.endpoint, "decode", sampler.dem, curve=keys.curve("alice")
        )
        async with stream:
            await stream.send(blocks[0])
            return len(await stream.drain(60))

    assert asyncio.run(via_async()) == 1
    c = Client(broker.endpoint, timeout=10, curve=keys.curve("alice"))
    with c, pytest.raises(ValueError, match="curve= goes with an endpoint"):
        Stream(c, "decode", sampler.dem, curve=keys.curve("alice"))


@pytest.mark.timeout(120)
def test_the_qpu_worker_registers_with_a_key_for_qpu_only(
    stack: Stack, broker: BrokerProc, keys: Keys
) -> None:
    stack.server(
        "-m", "control_sim", "qpu", "--connect", broker.endpoint, "--curve", *keys.curve("qpu1")
    )  # fmt: skip
    wait_for_workers(broker.endpoints[1], "qpu", 1)
    with Client(broker.endpoint, timeout=30, curve=keys.curve("alice")) as c:
        assert c.service_available("qpu")
    assert stats(broker)["roles_refused"] == 0


# --- refusals ------------------------------------------------------------------------------


def test_an_unknown_key_gets_nothing_back_and_is_counted(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread
) -> None:
    eve = Client(broker.endpoint, timeout=REFUSED_WAIT_S, curve=keys.curve("eve"))
    with eve, pytest.raises(RequestTimeout):
        eve.request("echo", {"steal": 1})
    with Client(broker.endpoint, timeout=10, curve=keys.curve("alice")) as alice:
        assert alice.request("echo", 1).body == 1
        refused = alice.broker_stats()["auth_refused"]
    assert refused["CURVE"] >= 1


def test_a_client_key_sending_ready_gets_disconnect_and_no_request(
    broker: BrokerProc, keys: Keys, ctx: zmq.Context[Any]
) -> None:
    thief = curve_dealer(ctx, broker.endpoint, load_curve(keys.curve("alice")))
    thief.send_multipart([MDPW02, W_READY, b"echo"])
    assert thief.poll(10_000), "no answer to the READY"
    assert thief.recv_multipart() == [MDPW02, W_DISCONNECT]
    s = stats(broker)
    assert s["roles_refused"] == 1
    assert s["services"].get("echo", {}).get("workers", 0) == 0
    # A request for that service waits for a worker that never came: none reaches the thief.
    c = Client(broker.endpoint, timeout=REFUSED_WAIT_S, curve=keys.curve("alice"))
    with c, pytest.raises((ServiceUnavailable, RequestTimeout)):  # expired at the broker
        c.request("echo", "for the real worker only")
    assert not thief.poll(500)


def test_no_peer_takes_over_another_connection_by_claiming_its_routing_id(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread, ctx: zmq.Context[Any]
) -> None:
    """With CURVE the broker does not hand a routing id in use to a new connection. A
    session's open names its worker's routing id to the client; an admitted peer that
    claims it gets none of the worker's requests, and clients go on being served by the
    real worker."""
    with Client(broker.endpoint, timeout=10, curve=keys.curve("alice")) as alice:
        with alice.open_session("echo", lane="off") as session:
            worker_id = bytes.fromhex(session.worker)
        thief = ctx.socket(zmq.DEALER)
        thief.linger = 0
        thief.setsockopt(zmq.ROUTING_ID, worker_id)
        apply_curve(thief, load_curve(keys.curve("worker")))  # an admitted worker key
        thief.connect(broker.endpoint)
        thief.send_multipart([MDPW02, W_HEARTBEAT])  # as the worker would
        for i in range(20):
            assert alice.request("echo", i).body == i
        assert not thief.poll(500), "the thief got a request"


class Forwarder:
    """A TCP forwarder between peers and the broker, on a thread: it can drop the peers'
    side of every connection (a reset, so they reconnect at once) while it keeps its own
    connections to the broker open, as a network fault seen first by one end does."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.peer_of: dict[socket.socket, socket.socket] = {}
        self.downstream: list[socket.socket] = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while not self.stopping:
            for key, _ in self.sel.select(0.05):
                with self.lock:
                    self._step(key.fileobj)  # type: ignore[arg-type]

    def _step(self, sock: socket.socket) -> None:
        if sock is self.listener:
            down, _ = sock.accept()
            up = socket.create_connection(self.upstream)
            self.peer_of[down], self.peer_of[up] = up, down
            self.downstream.append(down)
            self.sel.register(down, selectors.EVENT_READ)
            self.sel.register(up, selectors.EVENT_READ)
            return
        other = self.peer_of.get(sock)
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data or other is None:
            self._forget(sock)
            return
        other.sendall(data)

    def _forget(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        self.peer_of.pop(sock, None)
        sock.close()

    def drop_downstream(self) -> int:
        """Reset every peer-side connection; keep the broker side open. Returns how many."""
        with self.lock:
            dropped = list(self.downstream)
            self.downstream.clear()
            for down in dropped:
                up = self.peer_of.pop(down, None)
                if up is not None:
                    self.peer_of[up] = None  # type: ignore[assignment]  # keep it, deaf
                down.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sel.unregister(down)
                down.close()
            return len(dropped)

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for sock in [*self.peer_of, self.listener]:
            sock.close()


def test_a_peer_that_reconnects_while_the_broker_holds_its_old_connection_is_served(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread
) -> None:
    """The peer's end of its connection is reset while the broker's end stays open, and
    the peer reconnects at once: a CURVE broker, which hands no routing id over, must not
    park the new connection (it did, for good, while clients kept their id)."""
    host, port = broker.endpoint.removeprefix("tcp://").rsplit(":", 1)
    fwd = Forwarder((host, int(port)))
    try:
        with Client(f"tcp://127.0.0.1:{fwd.port}", timeout=10, curve=keys.curve("alice")) as c:
            assert c.request("echo", "before").body == "before"
            assert fwd.drop_downstream() == 1
            # Sent at once, before the client may have seen the drop: it can go out on
            # the dead connection and be lost with it (PROTOCOL.md §3.11), so it is
            # declared idempotent, and sent again once the drop is seen.
            assert c.request("echo", "after", idempotent=True).body == "after"
    finally:
        fwd.close()


def test_a_worker_key_for_one_service_may_register_for_that_one_only(
    broker: BrokerProc, keys: Keys, ctx: zmq.Context[Any]
) -> None:
    qpu1 = load_curve(keys.curve("qpu1"))
    wrong = curve_dealer(ctx, broker.endpoint, qpu1)
    wrong.send_multipart([MDPW02, W_READY, b"decoders"])
    assert wrong.poll(10_000)
    assert wrong.recv_multipart() == [MDPW02, W_DISCONNECT]
    right = curve_dealer(ctx, broker.endpoint, qpu1)
    right.send_multipart([MDPW02, W_READY, b"qpu"])
    assert right.poll(10_000)
    assert right.recv_multipart() == [MDPW02, W_HEARTBEAT]  # taken (PROTOCOL.md §3.4)
    s = stats(broker)
    assert s["roles_refused"] == 1
    assert s["services"]["qpu"]["workers"] == 1
    assert "decoders" not in s["services"]


def test_a_plaintext_peer_cannot_talk_to_a_curve_endpoint(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread, ctx: zmq.Context[Any]
) -> None:
    plain = V2Client(ctx, broker.endpoint)
    with pytest.raises(TimeoutError):
        plain.request(b"echo", [b"hello"], timeout_ms=int(REFUSED_WAIT_S * 1000))
    with Client(broker.endpoint, timeout=10, curve=keys.curve("alice")) as alice:
        assert alice.request("echo", "meanwhile").body == "meanwhile"

    def plaintext_counted() -> bool:
        # Which side sees the mechanisms differ first is a race: the broker (a mismatch)
        # or the plaintext peer, which hangs up (aborted).
        refused = stats(broker)["auth_refused"]
        return bool(refused["mismatch"] + refused["aborted"] >= 1 and refused["CURVE"] == 0)

    wait_until(plaintext_counted, 10, "the plaintext handshake counted")


def test_a_flood_of_bad_keys_leaves_good_clients_served(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread, ctx: zmq.Context[Any]
) -> None:
    server = load_curve(keys.curve("alice")).server
    flood = 300
    bad: list[zmq.Socket[bytes]] = []
    with Client(broker.endpoint, timeout=20, curve=keys.curve("alice")) as alice:
        for i in range(flood):
            public, secret = zmq.curve_keypair()
            s = curve_dealer(ctx, broker.endpoint, CurveKeys(public, secret, server))
            s.send_multipart([MDPC02, b"\x01", b"echo", b"flood"])
            bad.append(s)
            if i % 10 == 0:  # a good request every ten bad handshakes, all answered
                assert alice.request("echo", i).body == i
        wait_until(
            lambda: alice.broker_stats()["auth_refused"]["CURVE"] >= flood, 60, "the flood counted"
        )
        assert alice.request("echo", "after").body == "after"
    assert not any(s.poll(0) for s in bad)
    for s in bad:
        s.close()


# --- NULL endpoints ------------------------------------------------------------------------


def test_plain_mdp_peers_work_on_the_ipc_endpoint_of_a_curve_broker(
    broker: BrokerProc, ctx: zmq.Context[Any]
) -> None:
    ipc = broker.endpoints[1]
    worker = PlainWorker(ctx, ipc, b"plain", echo, version=2)
    worker.start()
    try:
        wait_for_workers(ipc, "plain", 1)
        assert V2Client(ctx, ipc).request(b"plain", [b"a", b"b"]) == ([], [b"a", b"b"])
        assert V1Client(ctx, ipc).request(b"plain", [b"c"]) == [b"c"]
    finally:
        worker.stop()
    assert stats(broker)["roles_refused"] == 0


# --- reloads -------------------------------------------------------------------------------


def _reloaded(broker: BrokerProc, n: int, failures: int = 0) -> None:
    def done() -> bool:
        s = stats(broker)
        return s["auth_reloads"] == n and s["auth_reload_failures"] == failures

    wait_until(done, 15, f"reload #{n}")


@pytest.mark.timeout(120)
def test_sighup_admits_a_new_key_and_refuses_a_removed_one_for_new_connections(
    broker: BrokerProc, keys: Keys, echo_worker: WorkerThread
) -> None:
    bob = Client(broker.endpoint, timeout=REFUSED_WAIT_S, curve=keys.curve("bob"))
    with bob, pytest.raises(RequestTimeout):
        bob.request("echo", "not yet")
    shutil.copy(keys.root / "outsiders" / "bob.key", keys.dir("clients"))
    broker.proc.send_signal(signal.SIGHUP)
    _reloaded(broker, 1)
    with Client(broker.endpoint, timeout=10, curve=keys.curve("bob")) as bob:
        assert bob.request("echo", "now").body == "now"

    with Client(broker.endpoint, timeout=10, curve=keys.curve("alice")) as connected:
        assert connected.request("echo", "before").body == "before"
        (keys.dir("clients") / "alice.key").unlink()
        broker.proc.send_signal(signal.SIGHUP)
        _reloaded(broker, 2)
        assert connected.request("echo", "still here").body == "still here"
        new = Client(broker.endpoint, timeout=REFUSED_WAIT_S, curve=keys.curve("alice"))
        with new, pytest.raises(RequestTimeout):
            new.request("echo", "refused")

    # A reload that fails keeps the lists in force: bob is still let in.
    keys.dir("clients").rename(keys.root / "clients-away")
    broker.proc.send_signal(signal.SIGHUP)
    _reloaded(broker, 2, failures=1)
    assert broker.proc.poll() is None
    with Client(broker.endpoint, timeout=10, curve=keys.curve("bob")) as bob:
        assert bob.request("echo", "kept").body == "kept"


# --- the wire ------------------------------------------------------------------------------

_PROBE = r"""
import socket, subprocess, sys, threading, time
from client import Client, Worker
marker, root, use_curve = sys.argv[1].encode(), sys.argv[2], sys.argv[3] == "1"
cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
cap.bind(("lo", 0))
cap.setblocking(False)
extra, curve_c, curve_w = [], None, None
if use_curve:
    extra = ["--curve-secret", f"{root}/server/broker.key_secret",
             "--allow-clients", f"{root}/clients", "--allow-workers", f"{root}/workers"]
    curve_c = (f"{root}/clients/alice.key_secret", f"{root}/server/broker.key")
    curve_w = (f"{root}/workers/worker.key_secret", f"{root}/server/broker.key")
else:
    extra = ["--bind", f"ipc://{root}/probe.sock"]
broker = subprocess.Popen([sys.executable, "-m", "broker", "--bind", "tcp://127.0.0.1:*", *extra],
                          stdout=subprocess.PIPE, text=True)
try:
    ep = broker.stdout.readline().split()[1]
    w = Worker(ep, "echo", lambda m: m.body, curve=curve_w)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    with Client(ep, timeout=30, curve=curve_c) as c:
        assert c.request("echo", {"m": marker.decode()}).body == {"m": marker.decode()}
    w.stop()
    t.join(10)
    seen = bytearray()
    while True:
        try:
            seen += cap.recv(65536)
        except BlockingIOError:
            break
    print("BYTES", len(seen), "MARKER", marker in seen, flush=True)
finally:
    broker.terminate()
    broker.wait(10)
"""


def _netns_or_skip() -> str:
    name = f"nl-curve-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    if shutil.which("ip") is None:
        pytest.skip("no ip(8) here to create a network namespace")
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    return name


@pytest.mark.timeout(120)
def test_the_wire_is_not_plaintext_with_curve(keys: Keys) -> None:
    """A raw socket on the loopback of a network namespace of its own sees the marker a
    request carries without CURVE, and does not with it."""
    ns = _netns_or_skip()
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=10)
        marker = f"NEARLOOP-MARKER-{uuid.uuid4().hex}"
        results = {}
        for use_curve in ("0", "1"):
            done = subprocess.run(
                ["ip", "netns", "exec", ns, sys.executable, "-c", _PROBE, marker,
                 str(keys.root), use_curve],
                cwd=ROOT, capture_output=True, text=True, timeout=90,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            line = done.stdout.strip().splitlines()[-1].split()
            assert int(line[1]) > 0, "the capture saw nothing"
            results[use_curve] = line[3]
        assert results == {"0": "True", "1": "False"}
    finally:
        subprocess.run(["ip", "netns", "delete", ns], timeout=10)


# --- bad input -----------------------------------------------------------------------------


def test_curve_keys_are_checked_with_clear_errors(keys: Keys, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.key_secret"
    garbled.write_text("this is not a certificate\n")
    broker_public = str(keys.root / "server" / "broker.key")
    with pytest.raises(KeyFileError, match="no such certificate file"):
        load_curve((str(tmp_path / "missing.key_secret"), broker_public))
    with pytest.raises(KeyFileError, match=r"garbled\.key_secret: not a ZeroMQ certificate"):
        load_curve((str(garbled), broker_public))
    with pytest.raises(KeyFileError, match="a public certificate, where a secret one"):
        load_curve((broker_public, broker_public))
    with pytest.raises(KeyFileError, match="not a 40-character Z85"):
        load_curve((str(keys.secret("alice")), b"short"))
    with pytest.raises(ValueError, match="curve must be"):
        load_curve(str(keys.secret("alice")))  # type: ignore[arg-type]
    server = zmq.auth.load_certificate(broker_public)[0]
    k = load_curve((str(keys.secret("alice")), server))  # the Z85 key itself works too
    assert k.server == server and "secret" not in repr(k)


def test_broker_command_line_errors_are_one_line(keys: Keys, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.key_secret"
    garbled.write_text('public-key = "nonsense"\n')
    secret = str(keys.root / "server" / "broker.key_secret")
    clients = str(keys.dir("clients"))
    bind = ["--bind", "tcp://127.0.0.1:*"]
    cases = [
        (["--allow-clients", clients], "allow-lists need CURVE"),
        (["--curve-secret", secret], "at least one allow-list"),
        (["--curve-secret", str(tmp_path / "none"), "--allow-clients", clients], "no such"),
        (["--curve-secret", str(garbled), "--allow-clients", clients], "not a ZeroMQ"),
        (["--curve-secret", secret[: -len("_secret")], "--allow-clients", clients], "public"),
        (["--curve-secret", secret, "--allow-clients", str(tmp_path / "nodir")], "directory"),
        (["--curve-secret", secret, "--allow-workers", "=x"], "SERVICE=DIR"),
    ]
    for args, says in cases:
        line = one_line_error(run_module("broker", *bind, *args, timeout=60))
        assert says in line, (args, line)


@pytest.mark.parametrize(
    "argv",
    [
        ["client", "stats", "--connect", "tcp://127.0.0.1:5555"],
        ["decoders", "--connect", "tcp://127.0.0.1:5555", "--decoder", "pymatching"],
        ["control_sim", "qpu", "--connect", "tcp://127.0.0.1:5555"],
        ["control_sim", "vqe", "--connect", "tcp://127.0.0.1:5555"],
        ["control_sim", "qec", "--connect", "tcp://127.0.0.1:5555"],
        ["control_sim", "demo", "--connect", "tcp://127.0.0.1:5555"],
    ],
)
def test_a_missing_curve_file_is_one_line(argv: list[str], keys: Keys, tmp_path: Path) -> None:
    missing = str(tmp_path / "nobody.key_secret")
    done = run_module(*argv, "--curve", missing, str(keys.root / "server" / "broker.key"))
    line = one_line_error(done)
    assert "--curve" in line and "nobody.key_secret: no such certificate file" in line


def test_curve_without_connect_is_one_line(keys: Keys) -> None:
    line = one_line_error(run_module("control_sim", "vqe", "--curve", *keys.curve("alice")))
    assert "--curve needs --connect" in line


def test_a_curve_broker_stops_cleanly(stack: Stack, keys: Keys) -> None:
    """A broker process stopped with SIGTERM exits 0 with its ZAP and monitor threads."""
    b = stack.broker("tcp", *keys.broker_args())
    assert stop_process(b.proc) == 0
