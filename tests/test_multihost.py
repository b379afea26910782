"""Several hosts on one machine: a worker in its own network namespace (:mod:`tests.netns`).

The broker runs in one namespace and binds its bridge address; a worker on the "remote
host" connects over TCP. Cutting the link mid-request (no FIN, no RST: a partition) must
be caught by heartbeats and the request served by a local worker, which, like this test,
reaches the broker's ipc endpoint from the root namespace. Needs root and iproute2;
traffic stays between namespaces this test made. Both loops over CURVE across four such
hosts: tests/test_multihost_loops.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from client import Client
from tests.conftest import (
    START_TIMEOUT_S,
    Stack,
    broker_stats,
    spawn,
    wait_for_line,
    wait_for_workers,
    wait_until,
)
from tests.netns import Host, needs_netns, network

pytestmark = [pytest.mark.timeout(90), needs_netns]


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    with network("broker", "remote") as made:
        yield made


def test_remote_worker_serves_and_a_partition_loses_nothing(
    stack: Stack, hosts: dict[str, Host]
) -> None:
    # The bridge address is off loopback, so without CURVE the broker needs --insecure; the
    # traffic stays in namespaces this test made (the CURVE runs: test_multihost_loops.py).
    broker = stack.broker(
        "ipc", "--insecure", binds=[stack.endpoint("ipc"), f"tcp://{hosts['broker'].address}:*"],
        runner=hosts["broker"].runner(),
    )  # fmt: skip
    ipc_ep, tcp_ep = broker.endpoints
    remote_host = hosts["remote"]
    remote = spawn(
        ["-m", "tests.peers.nl_worker", tcp_ep, "echo", "--heartbeat-ms", "100"],
        remote_host.runner(),
    )
    stack.procs.append(remote)
    wait_for_line(remote, "READY", START_TIMEOUT_S)
    wait_for_workers(ipc_ep, "echo", 1)
    mark = stack.tmp / "mark"
    mark.mkdir()
    with Client(ipc_ep, timeout=30) as c:
        assert c.request("echo", "over tcp").body["pid"] == remote.pid
        pending = c.submit("echo", {"op": "sleep", "s": 1.0, "mark": str(mark)})
        wait_until(lambda: list(mark.iterdir()), 10, "the remote worker to start")
        remote_host.link(up=False)  # partition: packets vanish, nothing is closed
        local = stack.worker(ipc_ep, "echo")
        reply = pending.result()
        assert reply.body["pid"] == local.pid
        stats = broker_stats(ipc_ep)
        assert stats["workers_expired"] == 1 and stats["redispatched"] == 1
        assert c.late_replies == 0


def netns_names() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def test_the_namespaces_go_also_when_the_test_fails() -> None:
    made: list[str] = []
    with pytest.raises(RuntimeError, match="the body failed"), network("hub", "a", "b") as hosts:
        made = [h.netns for h in hosts.values()]
        assert set(made) <= netns_names()
        hosts["a"].link(up=False)
        raise RuntimeError("the body failed")
    assert len(made) == 3 and not set(made) & netns_names()
