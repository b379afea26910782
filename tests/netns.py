"""Several "hosts" on one machine: network namespaces joined to a bridge by veth pairs.

The first host is the hub: its namespace holds a bridge with the hub's own address, and
every other host's namespace has one end of a veth pair (``eth0``, with its address on
the same /24), whose other end is a port of that bridge. Every host reaches every other
one; the addresses live only inside namespaces made here, so tests running at once never
clash (only the namespaces' names are global, and they carry this process's pid).

Cutting a host's link (:meth:`Host.link` ``up=False``) sets its bridge port down: packets
vanish and nothing is closed, as when a cable is pulled; no FIN, no RST reaches anyone.

Processes run in a host with ``ip netns exec``, which execs the command, so a
``Popen``'s pid is the program's own. Unix-domain sockets with a path are not confined to
a network namespace, so a broker in the hub can also bind an ``ipc://`` endpoint that the
test process (in the root namespace) reads stats from.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SUBNET = "10.231.0"
"""The hosts' /24: the hub is ``.1``, the others ``.2``, ``.3``, ..."""
BRIDGE = "nlbr0"
"""The bridge's name inside the hub's namespace."""
HOST_IF = "eth0"
"""Each other host's end of its veth pair, inside its namespace."""

_serial = itertools.count()


def netns_missing() -> str | None:
    """Why this process cannot make network namespaces (not root, no iproute2), or None."""
    if os.geteuid() != 0:
        return "needs root to make network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (the ip command)"
    return None


needs_netns = pytest.mark.skipif(netns_missing() is not None, reason=f"{netns_missing()}")
"""For a test that makes network namespaces."""


class NetnsUnavailable(RuntimeError):
    """The kernel or the container refused a namespace, a veth pair or a bridge."""


def ip(*args: str) -> None:
    """Run ``ip ARGS``; a refusal raises :class:`NetnsUnavailable` with ip's message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class Host:
    """One network namespace: its name, its address, and the bridge port that is its
    link (None for the hub, which owns the bridge)."""

    name: str
    netns: str
    address: str
    hub_netns: str
    port: str | None

    def runner(self) -> tuple[str, ...]:
        """The command prefix that runs a program in this host, with a host identity of
        its own (``NEARLOOP_HOST_ID``), so that no shared-memory lane joins two hosts."""
        return ("ip", "netns", "exec", self.netns, "env", f"NEARLOOP_HOST_ID={self.netns}")

    def link(self, *, up: bool) -> None:
        """Restore or cut this host's link (its bridge port in the hub)."""
        if self.port is None:
            raise ValueError(f"{self.name} is the hub: it has no link of its own to cut")
        ip("-n", self.hub_netns, "link", "set", self.port, "up" if up else "down")


@contextmanager
def network(*names: str) -> Iterator[dict[str, Host]]:
    """Make one namespace per name, the first the hub; yield the hosts by name. Every
    namespace goes at the end, also when the body or the making fails (their veths and
    bridge go with them). Skips the test when the kernel refuses a namespace."""
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"need distinct host names, got {names!r}")
    if len(names) > 250:
        raise ValueError("at most 250 hosts on one /24")
    tag = f"nl-{os.getpid()}-{next(_serial)}"
    made: list[str] = []
    try:
        try:
            hosts = _make(tag, names, made)
        except NetnsUnavailable as exc:
            pytest.skip(f"cannot make network namespaces here: {exc}")
        yield hosts
    finally:
        for netns in reversed(made):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _make(tag: str, names: tuple[str, ...], made: list[str]) -> dict[str, Host]:
    hub_ns = f"{tag}-{names[0]}"
    ip("netns", "add", hub_ns)
    made.append(hub_ns)
    ip("-n", hub_ns, "link", "set", "lo", "up")
    ip("-n", hub_ns, "link", "add", BRIDGE, "type", "bridge")
    ip("-n", hub_ns, "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    ip("-n", hub_ns, "link", "set", BRIDGE, "up")
    hosts = {names[0]: Host(names[0], hub_ns, f"{SUBNET}.1", hub_ns, None)}
    for i, name in enumerate(names[1:], start=2):
        netns, port = f"{tag}-{name}", f"port{i}"
        ip("netns", "add", netns)
        made.append(netns)
        ip("-n", hub_ns, "link", "add", port, "type", "veth", "peer", "name", HOST_IF,
           "netns", netns)  # fmt: skip
        ip("-n", hub_ns, "link", "set", port, "master", BRIDGE)
        ip("-n", hub_ns, "link", "set", port, "up")
        ip("-n", netns, "addr", "add", f"{SUBNET}.{i}/24", "dev", HOST_IF)
        ip("-n", netns, "link", "set", HOST_IF, "up")
        ip("-n", netns, "link", "set", "lo", "up")
        hosts[name] = Host(name, netns, f"{SUBNET}.{i}", hub_ns, port)
    return hosts
