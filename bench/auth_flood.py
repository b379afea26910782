"""``python -m bench flood``: a good client's round trips while bad keys flood the broker.

A CURVE broker on tcp loopback (ZAP allow-lists, :class:`bench.keys.BenchKeys`) serves an
``echo`` worker. A client with an allowed key times round trips in three phases: before
the flood, during it, and after it. The flood is another process
(``python -m bench.rtt_servers flooder``) that makes ``handshakes`` CURVE connections,
each with a fresh random key that no allow-list holds, ``parallel`` at a time; each is
refused by the broker's ZAP handler (a thread beside the broker's loop) and closed once
its socket monitor reports the refusal. The broker's own count of refused handshakes
(``auth_refused`` in ``mmi.stats``) is read before and after.

What it shows: whether refusing bad keys takes anything from the good client. Both the
flood's handshakes (libzmq's I/O thread, then the ZAP thread) and the flooder process run
on the same cores as the good client's path, so on a 2-core machine the "during" phase
also measures plain CPU contention; the flooder's and broker's CPU use are reported.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.cpu import processes_cpu_ns
from bench.endpoints import endpoint
from bench.errors import BenchError
from bench.flood_config import FloodConfig
from bench.keys import BenchKeys
from bench.machine import banner, describe_machine, library_versions
from bench.rtt_servers import ECHO_SERVICE
from bench.stats import LatencySummary, ratio
from client import Client
from client.arguments import write_json
from control_sim.stack.processes import (
    START_TIMEOUT_S,
    ServerGroup,
    interrupts_raise,
    wait_for_line,
)

PHASES: Final = ("before", "during", "after")
FLOOD_TIMEOUT_S: Final = 120.0
"""Bound on the whole flood; a flooder that has not finished by then fails the run."""
CHUNK: Final = 50
"""Round trips between checks of whether the flood is over."""
PAYLOAD_BYTES: Final = 512
REPLY_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class FloodResult:
    """Round trips per phase, what the flood did, and the broker's CPU per phase."""

    config: FloodConfig
    samples_ns: dict[str, npt.NDArray[np.int64]]
    flood_wall_s: float
    flood_refused_seen: int
    """Handshakes the flooder saw refused (its sockets' monitors)."""
    broker_refused: int
    """Handshakes the broker counted as refused over the flood."""
    cpu_us_per_s: dict[str, dict[str, float | None]]
    machine: dict[str, Any]
    versions: dict[str, str | None]

    @property
    def summaries(self) -> dict[str, LatencySummary]:
        """Percentiles per phase."""
        return {p: LatencySummary.of(s) for p, s in self.samples_ns.items()}


def _progress(text: str) -> None:
    print(f"bench flood: {text}", file=sys.stderr, flush=True)


def _auth_refused(c: Client) -> int:
    stats = c.broker_stats()
    refused = stats.get("auth_refused", {})
    return int(sum(refused.values())) if isinstance(refused, dict) else int(refused)


def _timed(c: Client, array: npt.NDArray[np.uint8], n: int) -> list[int]:
    out = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        reply = c.request(ECHO_SERVICE, None, array)
        out[i] = clock() - t0
        if not np.array_equal(reply.arrays[0], array):
            raise BenchError("the echo came back different")
    return out


def measure(config: FloodConfig) -> FloodResult:
    """Start the stack, time the three phases, stop everything (always)."""
    machine = describe_machine()
    array = np.random.default_rng(1).integers(0, 256, PAYLOAD_BYTES, dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="nl-flood-") as tmp, ServerGroup() as servers:
        keys = BenchKeys.create(Path(tmp) / "keys")
        ep = endpoint("tcp", Path(tmp), "broker")
        broker = servers.start("CURVE broker", ["-m", "broker", "--bind", ep, *keys.broker_args()])
        worker = servers.start(
            "CURVE worker",
            ["-m", "bench.rtt_servers", "nearloop-worker", "--connect", ep, *keys.worker_args()],
        )
        servers.wait_ready()
        pids = (broker.pid, worker.pid)
        samples: dict[str, list[int]] = {}
        cpu: dict[str, dict[str, float | None]] = {}
        with Client(ep, timeout=REPLY_TIMEOUT_S, curve=keys.client_curve()) as c:
            _timed(c, array, 1000)  # warm-up
            refused0 = _auth_refused(c)
            _progress(f"before the flood: {config.quiet_n} round trips")
            samples["before"], cpu["before"] = _phase(c, array, pids, lambda: config.quiet_n)
            pace = f", at most {config.rate:g}/s" if config.rate else ""
            _progress(
                f"flood: {config.handshakes} bad-key handshakes, {config.parallel} at a time{pace}"
            )
            flooder = servers.start(
                "flooder",
                [
                    "-m", "bench.rtt_servers", "flooder", "--connect", ep,
                    "--server-cert", str(keys.broker_public),
                    "--handshakes", str(config.handshakes), "--parallel", str(config.parallel),
                    "--rate", str(config.rate),
                ],
            )  # fmt: skip
            wait_for_line(flooder, "READY", START_TIMEOUT_S, name="flooder")
            t0 = time.monotonic()
            deadline = t0 + FLOOD_TIMEOUT_S

            def flooding() -> int:
                if time.monotonic() > deadline:
                    raise BenchError(f"the flood did not finish in {FLOOD_TIMEOUT_S:g} s")
                return CHUNK if flooder.poll() is None else 0

            samples["during"], cpu["during"] = _phase(c, array, pids, flooding)
            done = wait_for_line(flooder, "DONE", START_TIMEOUT_S, name="flooder").split()
            wall_s = time.monotonic() - t0
            cpu["during"]["flooder_us_per_s"] = int(done[4]) / 1e3 / wall_s
            if not samples["during"]:
                raise BenchError("the flood ended before one round trip was timed")
            _progress(f"after the flood: {config.quiet_n} round trips")
            samples["after"], cpu["after"] = _phase(c, array, pids, lambda: config.quiet_n)
            refused = _auth_refused(c) - refused0
    return FloodResult(
        config=config,
        samples_ns={p: np.asarray(samples[p], dtype=np.int64) for p in PHASES},
        flood_wall_s=wall_s,
        flood_refused_seen=int(done[2]),
        broker_refused=refused,
        cpu_us_per_s=cpu,
        machine=machine,
        versions=library_versions(),
    )


def _phase(
    c: Client, array: npt.NDArray[np.uint8], pids: tuple[int, ...], chunk: Any
) -> tuple[list[int], dict[str, float | None]]:
    """Time chunks of round trips while ``chunk()`` says how many more (0: stop; a
    quiet phase runs one chunk of its whole size). Returns the samples and CPU per second
    of this process and of ``pids``."""
    servers0, own0, t0 = processes_cpu_ns(pids), time.process_time_ns(), time.perf_counter_ns()
    out: list[int] = []
    while n := chunk():
        out += _timed(c, array, n)
        if n != CHUNK:
            break
    wall_s = (time.perf_counter_ns() - t0) / 1e9
    own, servers1 = time.process_time_ns() - own0, processes_cpu_ns(pids)
    servers = None if servers0 is None or servers1 is None else (servers1 - servers0) / 1e3
    return out, {
        "client_us_per_s": own / 1e3 / wall_s,
        "servers_us_per_s": None if servers is None else servers / wall_s,
    }


def format_report(result: FloodResult) -> str:
    """The table: each phase's percentiles, its p50 against before the flood, and CPU."""
    s = result.summaries
    lines = [
        banner("flood", result.machine),
        f"A client with an allowed CURVE key, {PAYLOAD_BYTES} B echo over tcp:// through a "
        "CURVE broker, timed before, during and after a flood of "
        f"{result.config.handshakes} handshakes with unknown keys "
        f"({result.config.parallel} at a time"
        + (f", at most {result.config.rate:g} a second" if result.config.rate else "")
        + ").",
        "",
        f"{'phase':<8}{'n':>7}{'p50 µs':>9}{'p99 µs':>9}{'p99.9 µs':>10}{'max µs':>10}"
        f"{'p50 vs. before':>16}{'client CPU µs/s':>17}{'servers CPU µs/s':>18}",
    ]
    for phase in PHASES:
        x, cpu = s[phase], result.cpu_us_per_s[phase]
        r = ratio(x.p50_us, s["before"].p50_us)
        servers = cpu["servers_us_per_s"]
        servers_text = "n/a" if servers is None else f"{servers:.0f}"
        lines.append(
            f"{phase:<8}{x.n:>7}{x.p50_us:>9.1f}{x.p99_us:>9.1f}{x.p999_us:>10.1f}"
            f"{x.max_us:>10.1f}{'n/a' if r is None else f'{r:.2f}x':>16}"
            f"{cpu['client_us_per_s'] or 0:>17.0f}{servers_text:>18}"
        )
    lines += [
        "",
        f"flood: {result.config.handshakes} handshakes in {result.flood_wall_s:.1f} s "
        f"({result.config.handshakes / result.flood_wall_s:.0f}/s); the flooder saw "
        f"{result.flood_refused_seen} refused; the broker counted {result.broker_refused} "
        "refused (auth_refused).",
        "servers: the broker and the worker. The flooder, on the same cores, spent "
        f"{result.cpu_us_per_s['during']['flooder_us_per_s'] or 0:.0f} µs of CPU per second "
        "of the flood.",
    ]
    return "\n".join(lines)


def to_json_doc(result: FloodResult) -> dict[str, Any]:
    """The JSON document."""
    s = result.summaries
    return {
        "benchmark": "flood",
        "date": result.machine["date"],
        "machine": result.machine,
        "versions": result.versions,
        "config": {
            "handshakes": result.config.handshakes,
            "parallel": result.config.parallel,
            "quiet_n": result.config.quiet_n,
            "rate": result.config.rate,
            "payload_bytes": PAYLOAD_BYTES,
        },
        "unit": "microseconds",
        "phases": {
            p: {
                **s[p].to_dict(),
                "p50_vs_before": ratio(s[p].p50_us, s["before"].p50_us),
                "cpu": result.cpu_us_per_s[p],
            }
            for p in PHASES
        },
        "flood": {
            "wall_s": result.flood_wall_s,
            "refused_seen_by_flooder": result.flood_refused_seen,
            "refused_counted_by_broker": result.broker_refused,
        },
    }


def main(config: FloodConfig) -> int:
    """Run it, print the table, write JSON and plot if asked; returns 0."""
    if config.plot_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise BenchError("--plot needs matplotlib (pip install 'nearloop[bench]')")
    with interrupts_raise():
        result = measure(config)
    print(format_report(result), flush=True)
    if config.json_path is not None:
        write_json(config.json_path, to_json_doc(result))
        _progress(f"wrote {config.json_path}")
    if config.plot_path is not None:
        from bench.plot import save_rtt_figure

        title = (
            f"good client's round trip before, during and after {config.handshakes} bad-key "
            f"handshakes · {result.machine['cpu_model']} · {result.machine['date']}"
        )
        save_rtt_figure(config.plot_path, result.samples_ns, result.summaries, title)
        _progress(f"wrote {config.plot_path}")
    return 0
