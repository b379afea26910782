"""The server side of each ``rtt`` peer, one process each: ``python -m bench.rtt_servers KIND``.

- ``dealer-echo --bind EP | --connect EP``: a DEALER that sends every message back as it
  came, envelope included. Bound, it is the direct peer; connected to a proxy's backend,
  it is the proxy's worker (the zguide "asyncsrv" pattern: the ROUTER's identity frame
  rides through the worker and routes the reply home).
- ``proxy --frontend EP --backend EP``: libzmq's C ``zmq.proxy`` between a ROUTER
  frontend and a DEALER backend, both bound.
- ``nearloop-worker --connect EP``: a :class:`client.Worker` for service ``echo`` that
  returns the request's body and arrays.
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
from typing import Any

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


def dealer_echo(*, bind: str | None, connect: str | None) -> None:
    """Echo every multipart message on a DEALER socket, unchanged."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sock.linger = 0
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


def nearloop_worker(*, connect: str) -> None:
    """Serve ``echo`` through the broker at ``connect`` until SIGTERM."""
    from client import Message, Payload, run_worker

    def echo(m: Message) -> Payload:
        return Payload(body=m.body, arrays=m.arrays)

    run_worker(connect, ECHO_SERVICE, echo)  # prints READY each time the broker takes it


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
    px = kinds.add_parser("proxy")
    px.add_argument("--frontend", required=True)
    px.add_argument("--backend", required=True)
    kinds.add_parser("nearloop-worker").add_argument("--connect", required=True)
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
        dealer_echo(bind=args.bind, connect=args.connect)
    elif args.kind == "proxy":
        proxy(frontend=args.frontend, backend=args.backend)
    elif args.kind == "nearloop-worker":
        nearloop_worker(connect=args.connect)
    elif args.kind == "mdp-echo-worker":
        mdp_echo_worker(connect=args.connect)
    elif args.kind == "shm-echo":
        shm_echo(bind=args.bind)
    else:
        rpcq_server(bind=args.bind)


if __name__ == "__main__":
    main()
