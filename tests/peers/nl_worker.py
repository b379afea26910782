"""A nearloop Worker process for the tests: ``python -m tests.peers.nl_worker EP SERVICE``.

The request body picks what it does: ``{"op": "echo"}`` (default) echoes body and arrays,
``{"op": "sleep", "s": S, "mark": DIR}`` records its pid in DIR then works for S seconds,
``{"op": "fail", "msg": M, "repeat": N}`` raises ValueError(M * N). Every reply carries
the worker's pid.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time
from typing import Any

from client import Message, Payload, run_worker


def handle(m: Message) -> Payload:
    body: Any = m.body
    op = body.get("op", "echo") if isinstance(body, dict) else "echo"
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
    run_worker(
        a.endpoint,
        a.service,
        handle,
        credit=a.credit,
        heartbeat_ms=a.heartbeat_ms,
        liveness=a.liveness,
        reconnect_max_ms=200,
    )


if __name__ == "__main__":
    main()
