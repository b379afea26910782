"""``python -m client`` (``nearloop stats|ping|call``) against a real broker and worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Stack, one_line_error, run_module, wait_for_workers

pytestmark = pytest.mark.timeout(60)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("client", *args, timeout=30)


def test_stats_ping_and_call(stack: Stack) -> None:
    broker = stack.broker("ipc")
    ep = broker.endpoint
    stack.worker(ep)
    wait_for_workers(ep, "echo", 1)
    stats = run_cli("stats", "--connect", ep)
    assert stats.returncode == 0 and json.loads(stats.stdout)["workers"] == 1
    assert run_cli("ping", "--connect", ep, "echo").returncode == 0
    assert run_cli("ping", "--connect", ep, "nope").returncode == 1
    call = run_cli("call", "--connect", ep, "echo", '{"x": [1, 2]}')
    assert call.returncode == 0 and json.loads(call.stdout)["echo"] == {"x": [1, 2]}
    bad = run_cli("call", "--connect", ep, "--timeout-s", "0.3", "nobody")
    assert "no_worker" in one_line_error(bad)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["stats", "--connect", "localhost:5555"], "'localhost:5555' names no transport"),
        (["stats"], "the following arguments are required: --connect"),
        (["call", "--connect", "ipc:///tmp/nl-x.sock", "svc", "{oops"], "is not JSON"),
        (["stats", "--connect", "ipc:///tmp/nl-x.sock", "--timeout-s", "0"], "must be > 0"),
    ],
    ids=["endpoint", "no-connect", "body", "timeout"],
)
def test_user_errors_are_one_line(args: list[str], says: str) -> None:
    line = one_line_error(run_cli(*args))
    assert says in line and f"python -m client {args[0]} --help" in line


def test_no_broker_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(
        run_cli("stats", "--connect", f"ipc://{tmp_path}/no.sock", "--timeout-s", "0.5")
    )
    assert "0.5 s" in line
