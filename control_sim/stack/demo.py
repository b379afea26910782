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
) -> dict[str, Any]:
    """Run both loops (on a local stack unless ``connect`` names a broker, talked to with
    CURVE keys ``curve`` if given); the summary. ``metrics``: a registry the QEC stream's
    reaction time and backlog are exported from."""
    began = time.perf_counter()
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
