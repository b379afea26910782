"""``python -m client`` against a real broker and worker."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import Stack, run_module, wait_for_workers

pytestmark = pytest.mark.timeout(60)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_module("client", *args, timeout=30)


def test_stats_ping_and_call(stack: Stack) -> None:
    broker = stack.broker("ipc")
    stack.worker(broker.endpoint)
    wait_for_workers(broker.endpoint, "echo", 1)
    stats = run_cli("stats", broker.endpoint)
    assert stats.returncode == 0 and json.loads(stats.stdout)["workers"] == 1
    assert run_cli("ping", broker.endpoint, "echo").returncode == 0
    assert run_cli("ping", broker.endpoint, "nope").returncode == 1
    call = run_cli("call", broker.endpoint, "echo", '{"x": [1, 2]}')
    assert call.returncode == 0 and json.loads(call.stdout)["echo"] == {"x": [1, 2]}
    bad = run_cli("--timeout", "0.3", "call", broker.endpoint, "nobody")
    assert bad.returncode == 2 and "no_worker" in bad.stderr
