"""The server side of each ``rtt`` peer, one process each: ``python -m bench.rtt_servers KIND``.

- ``dealer-echo --bind EP | --connect EP [--curve-secret FILE]``: a DEALER that sends
  every message back as it came, envelope included. Bound, it is the direct peer (a CURVE
  server with ``--curve-secret``); connected to a proxy's backend, it is the proxy's
  worker (the zguide "asyncsrv" pattern: the ROUTER's identity frame rides through the
  worker and routes the reply home).
- ``proxy --frontend EP --backend EP``: libzmq's C ``zmq.proxy`` between a ROUTER
  frontend and a DEALER backend, both bound.
- ``nearloop-worker --connect EP [--curve CERT BROKER_CERT]``: a :class:`client.Worker`
  for service ``echo`` that returns the request's body and arrays.
- ``flooder --connect EP --server-cert FILE --handshakes N --parallel P [--rate HZ]``:
  CURVE handshakes with fresh random keys (:mod:`bench.auth_flood`), ``P`` at a time
  and at most ``HZ`` a second, each
  socket closed once its monitor reports the handshake's end; prints READY, then
  ``DONE N REFUSED ACCEPTED CPU_NS`` when all are over (CPU_NS: its CPU time since READY), and
  exits.
- ``scraper --url URL --interval-ms MS``: fetches ``/metrics`` every ``MS`` and parses it
  with :mod:`prometheus_client.parser`, as Prometheus would scrape the broker.
- ``rpcq-server --bind EP``: an :class:`rpcq.Server` with an ``echo`` method.
- ``shm-echo --bind EP``: the shared-memory floor's server (:mod:`bench.rtt_floor`): a
  REP socket that attaches mailboxes and, on ``go``, busy-polls one until it is stopped.

Each prints READY once its sockets are set up, and exits when its stdin reaches EOF, so
it cannot outlive the benchmark that started it.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

import zmq

ECHO_SERVICE = "echo"
MDP_ECHO_SERVICE = "mdp-echo"
"""The nearloop service name and the rpcq method name the clients call."""


def _exit_when_stdin_closes() -> None:
    def watch() -> None:
        # Raw reads on fd 0: a daemon thread must hold no interpreter lock (such as the
        # sys.stdin buffer's) when the process exits the normal way.
        while os.read(0, 4096):
            pass
        os._exit(0)  # EOF: the benchmark is gone

    threading.Thread(target=watch, name="stdin-watchdog", daemon=True).start()


def _ready() -> None:
    print("READY", flush=True)


def dealer_echo(*, bind: str | None, connect: str | None, curve_secret: str | None) -> None:
    """Echo every multipart message on a DEALER socket, unchanged."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if curve_secret is not None:
        from zmq.auth import load_certificate

        public, secret = load_certificate(curve_secret)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
    if bind is not None:
        sock.bind(bind)
    if connect is not None:
        sock.connect(connect)
    _ready()
    while True:
        sock.send_multipart(sock.recv_multipart())


def proxy(*, frontend: str, backend: str) -> None:
    """Relay ROUTER ``frontend`` <-> DEALER ``backend`` with libzmq's C proxy loop."""
    ctx: zmq.Context[Any] = zmq.Context()
    front: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
    back: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    for sock, ep in ((front, frontend), (back, backend)):
        sock.linger = 0
        sock.bind(ep)
    _ready()
    zmq.proxy(front, back)


def nearloop_worker(*, connect: str, curve: tuple[str, str] | None) -> None:
    """Serve ``echo`` through the broker at ``connect`` until SIGTERM."""
    from client import Message, Payload, run_worker

    def echo(m: Message) -> Payload:
        return Payload(body=m.body, arrays=m.arrays)

    # It prints READY each time the broker takes it.
    run_worker(connect, ECHO_SERVICE, echo, curve=curve)


def scraper(*, url: str, interval_ms: int) -> None:
    """Scrape ``url`` every ``interval_ms`` and parse what comes back, until stopped."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> int:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return sum(1 for _ in text_string_to_metric_families(reply.read().decode()))

    deadline = time.monotonic() + _FIRST_SCRAPE_S
    while True:  # the broker, started beside us, may not serve yet
        try:
            scrape()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # a retry interval: the endpoint gives no other signal
    _ready()
    while True:
        due = time.monotonic_ns() + interval_ms * 1_000_000
        scrape()
        time.sleep(max(0, due - time.monotonic_ns()) / 1e9)  # a period, not a wait on a condition


def mdp_echo_worker(*, connect: str) -> None:
    """A plain MDP/0.2 worker, as a third party would write it from RFC 18: raw pyzmq,
    echoing the request body; it serves ``MDP_ECHO_SERVICE``."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(connect)
    sock.send_multipart([b"MDPW02", b"\x01", MDP_ECHO_SERVICE.encode()])
    _ready()
    heartbeat = [b"MDPW02", b"\x05"]
    interval_ns = 1_000_000_000
    due = time.monotonic_ns() + interval_ns
    while True:
        left_ms = (due - time.monotonic_ns()) // 1_000_000
        if sock.poll(max(left_ms, 0) + 1):
            msg = sock.recv_multipart()
            if msg[1] == b"\x02":  # REQUEST: header, command, address, empty, body...
                sock.send_multipart([b"MDPW02", b"\x04", msg[2], b"", *msg[4:]])
                due = time.monotonic_ns() + interval_ns
        # Heartbeat when a second passed without a reply, whatever else arrived: the
        # broker's own heartbeats keep coming while this worker sits unused.
        if time.monotonic_ns() >= due:
            sock.send_multipart(heartbeat)
            due = time.monotonic_ns() + interval_ns


_HANDSHAKE_ENDS: Final = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "refused",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "refused",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "accepted",
}
_HANDSHAKE_TIMEOUT_S: Final = 30.0
_FIRST_SCRAPE_S: Final = 30.0
"""How long the scraper waits for the broker it scrapes to serve /metrics."""


def flooder(*, connect: str, server_cert: str, handshakes: int, parallel: int, rate: float) -> None:
    """Make ``handshakes`` CURVE handshakes with unknown keys, ``parallel`` at a time, and
    no more than ``rate`` a second (0: as fast as they are refused)."""
    from zmq.auth import load_certificate
    from zmq.utils.monitor import recv_monitor_message

    server_key, _ = load_certificate(server_cert)
    ctx: zmq.Context[Any] = zmq.Context()
    poller = zmq.Poller()
    open_: dict[zmq.Socket[bytes], tuple[zmq.Socket[bytes], float]] = {}
    counts = {"refused": 0, "accepted": 0}
    started = 0
    events = 0
    for event in _HANDSHAKE_ENDS:
        events |= event
    _ready()
    cpu0_ns, t0 = time.process_time_ns(), time.monotonic()
    gap_s = 1 / rate if rate > 0 else 0.0
    while started < handshakes or open_:
        while (
            started < handshakes
            and len(open_) < parallel
            and time.monotonic() >= t0 + started * gap_s
        ):
            sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.reconnect_ivl = 60_000  # one handshake per socket: no retry before it closes
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.curve_serverkey = server_key
            # An address of its own: pyzmq's default names a monitor after the socket's file
            # descriptor, which the next socket reuses once this one is closed.
            address = f"inproc://flooder-monitor-{started}"
            sock.monitor(address, events)
            monitor = ctx.socket(zmq.PAIR)
            monitor.connect(address)
            poller.register(monitor, zmq.POLLIN)
            sock.connect(connect)
            open_[monitor] = (sock, time.monotonic() + _HANDSHAKE_TIMEOUT_S)
            started += 1
        due_s = t0 + started * gap_s - time.monotonic() if started < handshakes else 1.0
        for monitor, _ in poller.poll(max(1, min(1000, int(due_s * 1000)))):
            outcome = _HANDSHAKE_ENDS.get(recv_monitor_message(monitor)["event"])
            if outcome is None:
                continue
            counts[outcome] += 1
            sock, _deadline = open_.pop(monitor)
            poller.unregister(monitor)
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
        if open_ and time.monotonic() > min(deadline for _, deadline in open_.values()):
            raise SystemExit(f"flooder: a handshake got no answer in {_HANDSHAKE_TIMEOUT_S} s")
    cpu_ns = time.process_time_ns() - cpu0_ns
    print(f"DONE {handshakes} {counts['refused']} {counts['accepted']} {cpu_ns}", flush=True)


def rpcq_server(*, bind: str) -> None:
    """Serve rpcq method ``echo`` on the default asyncio loop, as rpcq users run it."""
    import asyncio

    import rpcq

    server = rpcq.Server()  # type: ignore[attr-defined]  # rpcq's __init__ lacks __all__

    def echo(payload: bytes) -> bytes:
        return payload

    server.rpc_handler(echo)
    _ready()  # rpcq binds inside run_async; the client's first call waits for it, bounded
    asyncio.run(server.run_async(bind))


def shm_echo(*, bind: str) -> None:
    """Serve shared-memory mailboxes, controlled over a REP socket at ``bind``."""
    from bench.rtt_floor import serve

    ctx: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.REP)
    sock.linger = 0
    sock.bind(bind)
    _ready()
    serve(sock)


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per server kind."""
    p = argparse.ArgumentParser(prog="python -m bench.rtt_servers")
    kinds = p.add_subparsers(dest="kind", required=True)
    echo = kinds.add_parser("dealer-echo")
    where = echo.add_mutually_exclusive_group(required=True)
    where.add_argument("--bind")
    where.add_argument("--connect")
    echo.add_argument("--curve-secret")
    px = kinds.add_parser("proxy")
    px.add_argument("--frontend", required=True)
    px.add_argument("--backend", required=True)
    worker = kinds.add_parser("nearloop-worker")
    worker.add_argument("--connect", required=True)
    worker.add_argument("--curve", nargs=2, metavar=("CERT", "BROKER_CERT"))
    flood = kinds.add_parser("flooder")
    flood.add_argument("--connect", required=True)
    flood.add_argument("--server-cert", required=True)
    flood.add_argument("--handshakes", type=int, required=True)
    flood.add_argument("--parallel", type=int, required=True)
    flood.add_argument("--rate", type=float, default=0.0)
    scrape = kinds.add_parser("scraper")
    scrape.add_argument("--url", required=True)
    scrape.add_argument("--interval-ms", type=int, default=1000)
    kinds.add_parser("mdp-echo-worker").add_argument("--connect", required=True)
    kinds.add_parser("rpcq-server").add_argument("--bind", required=True)
    kinds.add_parser("shm-echo").add_argument("--bind", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Run one server until SIGTERM or until stdin closes."""
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark stops us, with SIGTERM
    _exit_when_stdin_closes()
    if args.kind == "dealer-echo":
        dealer_echo(bind=args.bind, connect=args.connect, curve_secret=args.curve_secret)
    elif args.kind == "proxy":
        proxy(frontend=args.frontend, backend=args.backend)
    elif args.kind == "nearloop-worker":
        nearloop_worker(connect=args.connect, curve=tuple(args.curve) if args.curve else None)
    elif args.kind == "flooder":
        flooder(
            connect=args.connect,
            server_cert=args.server_cert,
            handshakes=args.handshakes,
            parallel=args.parallel,
            rate=args.rate,
        )
    elif args.kind == "scraper":
        scraper(url=args.url, interval_ms=args.interval_ms)
    elif args.kind == "mdp-echo-worker":
        mdp_echo_worker(connect=args.connect)
    elif args.kind == "shm-echo":
        shm_echo(bind=args.bind)
    else:
        rpcq_server(bind=args.bind)


if __name__ == "__main__":
    main()
