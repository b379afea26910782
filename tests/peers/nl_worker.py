"""A nearloop Worker process for the tests: ``python -m tests.peers.nl_worker EP SERVICE``.

The request body picks what it does: ``{"op": "echo"}`` (default) echoes body and arrays,
``{"op": "sleep", "s": S, "mark": DIR}`` records its pid in DIR then works for S seconds,
``{"op": "fail", "msg": M, "repeat": N}`` raises ValueError(M * N). Every reply carries
the worker's pid.

Stateful ops, for sessions: ``{"op": "count"}`` counts calls per header ``session`` and
returns the count; ``{"op": "ticks", "n": N, "every_us": T}`` answers later, through a
deferred reply: one PARTIAL ``{"tick": k}`` every T µs from the idle callback, then a
FINAL after N of them (N = 0: until the worker dies).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Any

from client import DeferredReply, Message, Payload, Worker, serve

COUNTS: dict[int | None, int] = {}
TICKS: list[tuple[DeferredReply, int, int]] = []  # (reply, ticks left or -1, every_us)
WORKER: list[Worker] = []


def idle() -> int | None:
    """Send one tick to each open tick stream; come back after the shortest period."""
    for i, (reply, left, every_us) in enumerate(list(TICKS)):
        reply.partial({"tick": reply.partials, "pid": os.getpid()})
        if left == 1:
            reply.finish({"ticks": reply.partials, "pid": os.getpid()})
        TICKS[i] = (reply, left - 1, every_us)
    TICKS[:] = [t for t in TICKS if t[0].open]
    return min((t[2] for t in TICKS), default=None)


def handle(m: Message) -> Any:
    body: Any = m.body
    op = body.get("op", "echo") if isinstance(body, dict) else "echo"
    if op == "count":
        COUNTS[m.header.session] = COUNTS.get(m.header.session, 0) + 1
        return {"pid": os.getpid(), "count": COUNTS[m.header.session]}
    if op == "ticks":
        reply = WORKER[0].defer()
        TICKS.append((reply, int(body["n"]) or -1, int(body.get("every_us", 1000))))
        return reply
    if op == "sleep":
        if "mark" in body:
            pathlib.Path(body["mark"], str(os.getpid())).touch()
        time.sleep(body["s"])  # stands for a long computation
    elif op == "fail":
        raise ValueError(body.get("msg", "failed on purpose") * body.get("repeat", 1))
    return Payload(body={"pid": os.getpid(), "echo": body}, arrays=m.arrays)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("service")
    p.add_argument("--credit", type=int, default=1)
    p.add_argument("--heartbeat-ms", type=int, default=50)
    p.add_argument("--liveness", type=int, default=3)
    a = p.parse_args()
    worker = Worker(
        a.endpoint,
        a.service,
        handle,
        idle=idle,
        credit=a.credit,
        heartbeat_ms=a.heartbeat_ms,
        liveness=a.liveness,
        reconnect_max_ms=200,
    )
    WORKER.append(worker)
    serve(worker)


if __name__ == "__main__":
    main()
