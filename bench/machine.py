"""What a benchmark ran on: date, machine, Python and library versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("nearloop", "pyzmq", "msgpack", "numpy", "uvloop", "rpcq", "matplotlib")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions(extra: Sequence[str] = ()) -> dict[str, str | None]:
    """Installed versions of the libraries on the measured paths (None: not installed):
    :data:`LIBRARIES`, then the distributions named in ``extra``."""
    import zmq

    versions: dict[str, str | None] = {}
    for name in (*LIBRARIES, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["libzmq"] = zmq.zmq_version()
    return versions


def describe_machine() -> dict[str, Any]:
    """Date, platform, CPU, cores, load and Python, as a JSON-ready dict."""
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else None,
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def banner(benchmark: str, machine: dict[str, Any]) -> str:
    """The first line of a benchmark's report: what ran, when, and on what machine."""
    m = machine
    return (
        f"nearloop bench {benchmark} · {m['date']} · {m['cpu_model']} · {m['cpu_count']} "
        f"cores · load {m['loadavg_1m']:.2f} · {m['python']} · {m['platform']}"
    )
