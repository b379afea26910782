"""``python -m control_sim demo``: both loops of nearloop, end to end, on one broker.

It starts the embedded local stack (a broker, two pymatching decoder workers and one QPU
worker, as subprocesses on ipc://), or uses ``--connect EP``; then it runs

1. the **parameter loop**: H2 VQE through the ``qpu`` service, beside the same loop run
   in-process (:mod:`control_sim.vqe.comparison`);
2. the **syndrome loop**: a surface-code memory experiment (d=5, 5 rounds, p=0.001)
   emitted as one 500-shot block every 2 ms and streamed to the decoder workers
   (:mod:`control_sim.qec.run`);

and prints one readable summary (or writes it as JSON).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from control_sim.qec.codes import CodeSpec
from control_sim.qec.run import QecConfig, qec_ok, run_qec
from control_sim.qec.run import format_summary as format_qec
from control_sim.qpu.names import DEFAULT_SERVICE as DEFAULT_QPU_SERVICE
from control_sim.stack.local_stack import LocalStack, StackSpec, require_services
from control_sim.vqe.comparison import VqeConfig, run_vqe_session
from control_sim.vqe.comparison import format_summary as format_vqe
from decoders.names import DEFAULT_DECODER_SERVICE

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from client.wire.curve import CurveSpec


def _qec_default() -> QecConfig:
    return QecConfig(
        spec=CodeSpec("surface", 5, 5, 0.001),
        decoder_service=DEFAULT_DECODER_SERVICE,
        shots=100_000,
        block_shots=500,
        seed=2026,
        period_us=2000,  # paced, so reaction time is per-block latency, not queueing
    )


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """What the demo runs; the defaults are what ``python -m control_sim demo`` runs."""

    vqe: VqeConfig = field(default_factory=lambda: VqeConfig(service=DEFAULT_QPU_SERVICE))
    qec: QecConfig = field(default_factory=_qec_default)
    decoder: str = "pymatching"
    decoder_workers: int = 2
    qpu_workers: int = 1

    def stack(self) -> StackSpec:
        """The local stack the demo starts when it is not given a broker."""
        return StackSpec(
            decoder_workers=self.decoder_workers,
            decoder=self.decoder,
            decoder_service=self.qec.decoder_service,
            qpu_workers=self.qpu_workers,
            qpu_service=self.vqe.service,
        )


def run_demo(
    config: DemoConfig,
    connect: str | None = None,
    *,
    curve: CurveSpec | None = None,
    metrics: CollectorRegistry | None = None,
    chaos: bool = False,
) -> dict[str, Any]:
    """Run both loops (on a local stack unless ``connect`` names a broker, talked to with
    CURVE keys ``curve`` if given); the summary. ``metrics``: a registry the QEC stream's
    reaction time and backlog are exported from.

    ``chaos`` (local stack only, else ValueError): the two loops run side by side, and
    the broker is SIGKILLed and restarted on the same endpoint once, mid-run; the summary
    says what that cost (``chaos``)."""
    began = time.perf_counter()
    if chaos:
        if connect is not None:
            raise ValueError("--chaos kills the demo's own broker: it needs the local stack")
        with LocalStack(config.stack()) as stack:
            stack_s = time.perf_counter() - began
            return _both_with_chaos(config, stack, began, stack_s=stack_s, metrics=metrics)
    if connect is not None:
        require_services(connect, needs(config, connect), curve=curve)
        return _both(config, connect, began, stack_s=None, curve=curve, metrics=metrics)
    with LocalStack(config.stack()) as stack:
        stack_s = time.perf_counter() - began
        return _both(config, stack.endpoint, began, stack_s=stack_s, metrics=metrics)


def _both(
    config: DemoConfig,
    endpoint: str,
    began: float,
    *,
    stack_s: float | None,
    curve: CurveSpec | None = None,
    metrics: CollectorRegistry | None = None,
) -> dict[str, Any]:
    vqe = run_vqe_session(endpoint, config.vqe, curve=curve)
    qec = run_qec(config.qec, endpoint, curve=curve, metrics=metrics)
    qec["workers"] = None if stack_s is None else config.decoder_workers
    return {
        "endpoint": endpoint,
        "local_stack": stack_s is not None,
        "stack_start_s": stack_s,
        "vqe": vqe,
        "qec": qec,
        "wall_s": time.perf_counter() - began,
    }


def _both_with_chaos(
    config: DemoConfig,
    stack: LocalStack,
    began: float,
    *,
    stack_s: float,
    metrics: CollectorRegistry | None,
) -> dict[str, Any]:
    """Both loops at once (the VQE in a thread, started first), and the broker killed
    and restarted once as the stream's clock starts, after its warm-up: the stream has
    blocks in flight for certain, and the VQE whenever it is still running then (the
    summary says whether it was)."""
    endpoint = stack.endpoint
    box: dict[str, Any] = {}

    def vqe() -> None:
        try:
            box["vqe"] = run_vqe_session(endpoint, config.vqe)
        except BaseException as exc:  # handed to the main thread, which raises it
            box["vqe_error"] = exc

    vqe_thread = threading.Thread(target=vqe, daemon=True)

    def strike() -> None:
        running = vqe_thread.is_alive()
        try:
            box["chaos"] = {**_restart_and_time(stack, config), "vqe_running": running}
        except BaseException as exc:
            box["chaos_error"] = exc

    striker = threading.Thread(target=strike, daemon=True)
    vqe_thread.start()
    try:
        qec = run_qec(config.qec, endpoint, metrics=metrics, on_start=striker.start)
    finally:
        vqe_thread.join()
        if striker.ident is not None:
            striker.join()
    for key in ("vqe_error", "chaos_error"):
        if key in box:
            raise box[key]
    qec["workers"] = config.decoder_workers
    return {
        "endpoint": endpoint,
        "local_stack": True,
        "stack_start_s": stack_s,
        "vqe": box["vqe"],
        "qec": qec,
        "chaos": box.get("chaos", {"restarted": False}),
        "wall_s": time.perf_counter() - began,
    }


def _restart_and_time(stack: LocalStack, config: DemoConfig) -> dict[str, Any]:
    """Kill and restart the broker; time how long after the new READY a request to each
    service is served again (its workers registered again)."""
    from client import Client

    killed_ns, ready_ns = stack.restart_broker()
    with Client(stack.endpoint, timeout=10) as c:
        for service in (config.vqe.service, config.qec.decoder_service):
            deadline_ns = ready_ns + 10_000_000_000
            while not c.service_available(service, timeout=10):
                if time.monotonic_ns() >= deadline_ns:
                    raise TimeoutError(f"{service!r} had no worker 10 s after the restart")
                time.sleep(0.005)  # bounded: the workers' READY is on its way
    served_ns = time.monotonic_ns()
    return {
        "restarted": True,
        "down_ms": (ready_ns - killed_ns) / 1e6,
        "resume_ms": (served_ns - ready_ns) / 1e6,
    }


def format_chaos(summary: dict[str, Any]) -> str:
    """What the broker's restart cost, as ``demo --chaos`` prints it."""
    c, q, v = summary["chaos"], summary["qec"], summary["vqe"]
    if not c["restarted"]:
        return "chaos: both loops ended before the broker could be killed"
    return (
        f"chaos: broker SIGKILLed and restarted (down {c['down_ms']:.0f} ms); every service "
        f"served again {c['resume_ms']:.0f} ms after the new READY\n"
        f"  stream: sent {q['blocks_sent']}  decoded {q['blocks_decoded']}  lost {q['lost']}  "
        f"resent {q['resent']}  duplicates dropped {q['duplicates_dropped']}  "
        f"models restored {q['models_restored']}\n"
        f"  VQE: {'within' if v['chemically_accurate'] else 'NOT within'} chemical accuracy"
        f" ({'running' if c['vqe_running'] else 'done already'} at the kill)"
    )


def format_demo(summary: dict[str, Any]) -> str:
    """The readable summary the demo prints."""
    s = summary
    where = (
        f"local stack (broker, {s['qec']['workers']} decoder workers, 1 QPU worker) on "
        f"{s['endpoint']}, started in {s['stack_start_s']:.1f} s"
        if s["local_stack"]
        else f"broker at {s['endpoint']}"
    )
    verdict = "OK" if demo_ok(s) else "FAILED"
    return "\n".join(
        [
            f"nearloop demo: {where}",
            "",
            format_vqe(s["vqe"]),
            "",
            format_qec(s["qec"], workers=s["qec"]["workers"]),
            "",
            *([format_chaos(s), ""] if "chaos" in s else []),
            f"demo {verdict} in {s['wall_s']:.1f} s (needs: VQE within 1.6 mHa with the "
            f"exact estimator, every syndrome block decoded)",
        ]
    )


def demo_ok(summary: dict[str, Any]) -> bool:
    """True if VQE reached chemical accuracy (exact estimator) and every syndrome block
    was decoded: a block that failed fails the demo as much as one that was lost."""
    vqe = summary["vqe"]
    accurate = bool(vqe["chemically_accurate"]) or vqe["shots"] is not None
    return accurate and qec_ok(summary["qec"])


def needs(config: DemoConfig, endpoint: str) -> dict[str, str]:
    """The services a demo given ``endpoint`` needs there, and how to start a worker of each."""
    return {
        config.qec.decoder_service: f"nearloop decoders --connect {endpoint} "
        f"--service {config.qec.decoder_service} --decoder {config.decoder}",
        config.vqe.service: f"nearloop qpu --connect {endpoint} --service {config.vqe.service}",
    }
