"""``python -m bench decoders``: bp-gpu on numpy vs CuPy, with PyMatching as the CPU reference.

Every peer decodes the same batches of stim samples (rotated surface-code memory, circuit
noise), at each batch size, interleaved batch by batch so that drift on a shared machine
hits all peers alike. A batch's time is one ``decode_batch`` call on host memory: upload,
BP, download and the CPU OSD fallback included, which is what a decoder worker pays.

Reported per peer and batch size: p50/p99/max batch time, throughput at p50 (shots/s),
and for bp-gpu the share of shots and of time that went to the CPU fallback. Ratios are
taken within one run: ``cupy vs numpy`` (numpy's p50 over CuPy's) and each peer vs
PyMatching.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.errors import BenchError
from bench.machine import describe_machine, library_versions
from bench.stats import LatencySummary, ratio
from client.arguments import DEFAULT_P, DEFAULT_SEED, check_distance, write_json

DEVICES: Final = ("cpu", "cuda", "both")
DEFAULT_BATCH_SHOTS: Final = (100, 1000, 10000)
DEFAULT_DISTANCE: Final = 5
DEFAULT_NOISE: Final = DEFAULT_P
DEFAULT_BATCHES: Final = 5
DEFAULT_BUDGET_S: Final = 30.0
LIBRARIES: Final = ("stim", "pymatching", "ldpc", "array-api-compat", "cupy-cuda12x")
"""Reported beside :data:`bench.machine.LIBRARIES` (numpy among them)."""

NUMPY_PEER: Final = "bp-gpu[numpy]"
CUPY_PEER: Final = "bp-gpu[cupy]"
PYMATCHING_PEER: Final = "pymatching"


@dataclass(frozen=True)
class DecodersBenchConfig:
    """What ``python -m bench decoders`` measures.

    Attributes:
        device: ``"cpu"`` (numpy only), ``"cuda"`` (CuPy only), or ``"both"`` (side by side;
            CuPy is reported as unavailable where there is no GPU).
        distance: surface-code distance (rounds = distance).
        noise: circuit-level depolarising / flip probability.
        batch_shots: batch sizes to measure.
        batches: timed batches per peer and size (fewer if one would overrun ``budget_s``).
        budget_s: wall time allowed per peer and batch size, timed batches together.
        seed: stim's sampling seed.
        float_dtype: bp-gpu's float type.
        json_path: where to write the results, if anywhere.
        plot_path: where to write the figure, if anywhere.
    """

    device: str = "both"
    distance: int = DEFAULT_DISTANCE
    noise: float = DEFAULT_NOISE
    batch_shots: tuple[int, ...] = DEFAULT_BATCH_SHOTS
    batches: int = DEFAULT_BATCHES
    budget_s: float = DEFAULT_BUDGET_S
    seed: int = DEFAULT_SEED
    float_dtype: str = "float64"
    json_path: Path | None = None
    plot_path: Path | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {DEVICES}, got {self.device!r}")
        check_distance(self.distance)
        if not 0 < self.noise < 0.5:
            raise ValueError(f"--p must lie in (0, 0.5), got {self.noise}")
        if not self.batch_shots or min(self.batch_shots) < 1:
            raise ValueError(f"--batch-shots must be positive sizes, got {self.batch_shots}")
        if self.batches < 1 or self.budget_s <= 0:
            raise ValueError("--batches must be >= 1 and --budget-s > 0")


def parse_batch_shots(text: str) -> tuple[int, ...]:
    """``"1000,10000"`` -> ``(1000, 10000)``."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ValueError(f"--batch-shots takes comma-separated ints, got {text!r}") from exc
    return sizes


@dataclass
class PeerPoint:
    """One peer at one batch size."""

    peer: str
    batch_shots: int
    batch_ns: list[int] = field(default_factory=list)
    skipped: str | None = None
    osd_fallback_frac: float | None = None
    fallback_time_frac: float | None = None
    mean_bp_iterations: float | None = None
    logical_error_rate: float | None = None

    def summary(self) -> LatencySummary | None:
        """Percentiles of the batch times, or None if nothing was timed."""
        if not self.batch_ns:
            return None
        return LatencySummary.of(np.asarray(self.batch_ns, dtype=np.int64))

    def shots_per_s(self) -> float | None:
        """Throughput at the p50 batch time."""
        s = self.summary()
        return None if s is None else self.batch_shots / (s.p50_us / 1e6)

    def bp_only_shots_per_s(self) -> float | None:
        """Throughput had the CPU fallback cost nothing: the ceiling a faster BP can reach.

        Estimated as p50 throughput over the share of time spent outside the fallback.
        """
        rate = self.shots_per_s()
        if rate is None or self.fallback_time_frac is None or self.fallback_time_frac >= 1:
            return None
        return rate / (1.0 - self.fallback_time_frac)


@dataclass
class DecodersBenchResult:
    """Everything one run measured, with the context to read it."""

    config: DecodersBenchConfig
    machine: dict[str, Any]
    libraries: dict[str, str | None]
    model: dict[str, Any]
    peers: list[str]
    unavailable: dict[str, str]
    points: list[PeerPoint]

    def point(self, peer: str, batch_shots: int) -> PeerPoint | None:
        """The measurement of ``peer`` at ``batch_shots``, if it ran."""
        for p in self.points:
            if p.peer == peer and p.batch_shots == batch_shots:
                return p
        return None


def _circuit(config: DecodersBenchConfig) -> Any:
    import stim

    p = config.noise
    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=config.distance,
        rounds=config.distance,
        after_clifford_depolarization=p,
        before_round_data_depolarization=p,
        before_measure_flip_probability=p,
        after_reset_flip_probability=p,
    )


def _build_peers(
    config: DecodersBenchConfig, dem: Any
) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """Compiled decoders by peer name, unavailable peers with why, and their reprs."""
    from decoders import BackendUnavailable, make_decoder

    peers: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    if config.device in ("cpu", "both"):
        peers[NUMPY_PEER] = make_decoder(
            "bp-gpu", device="cpu", float_dtype=config.float_dtype
        ).compile(dem)
    if config.device in ("cuda", "both"):
        try:
            gpu = make_decoder("bp-gpu", device="cuda", float_dtype=config.float_dtype)
        except BackendUnavailable as exc:
            if config.device == "cuda":
                raise BenchError(str(exc)) from exc
            unavailable[CUPY_PEER] = exc.reason
        else:
            peers[CUPY_PEER] = gpu.compile(dem)
    peers[PYMATCHING_PEER] = make_decoder("pymatching").compile(dem)
    return peers, unavailable, {name: repr(c) for name, c in peers.items()}


def _time_batch(compiled: Any, dets: npt.NDArray[np.uint8]) -> tuple[int, Any]:
    t0 = time.perf_counter_ns()
    predictions = compiled.decode_batch(dets)
    return time.perf_counter_ns() - t0, predictions


def run(config: DecodersBenchConfig) -> DecodersBenchResult:
    """Measure every peer at every batch size; see the module docstring."""
    circuit = _circuit(config)
    dem = circuit.detector_error_model(decompose_errors=True)
    peers, unavailable, reprs = _build_peers(config, dem)
    sampler = circuit.compile_detector_sampler(seed=config.seed)
    points: list[PeerPoint] = []
    for size in config.batch_shots:
        # One untimed warm-up batch (kernel compilation, caches), then the timed ones.
        dets, obs = sampler.sample(
            size * (config.batches + 1), separate_observables=True, bit_packed=True
        )
        batches = [dets[i * size : (i + 1) * size] for i in range(config.batches + 1)]
        truth = [obs[i * size : (i + 1) * size] for i in range(config.batches + 1)]
        here = {name: PeerPoint(name, size) for name in peers}
        allowed: dict[str, int] = {}
        for name, compiled in peers.items():
            warm_ns, _ = _time_batch(compiled, batches[0])
            if warm_ns / 1e9 > config.budget_s:
                here[
                    name
                ].skipped = f"one batch took {warm_ns / 1e9:.1f} s > budget {config.budget_s} s"
                allowed[name] = 0
            else:
                allowed[name] = max(1, min(config.batches, int(config.budget_s * 1e9 // warm_ns)))
            if hasattr(compiled, "reset_stats"):
                compiled.reset_stats()
        errors = dict.fromkeys(peers, 0)
        for i in range(1, config.batches + 1):
            for name, compiled in peers.items():
                if i > allowed[name]:
                    continue
                ns, predictions = _time_batch(compiled, batches[i])
                here[name].batch_ns.append(ns)
                errors[name] += int(np.any(predictions != truth[i], axis=1).sum())
        for name, compiled in peers.items():
            point = here[name]
            timed = len(point.batch_ns)
            if timed:
                point.logical_error_rate = errors[name] / (timed * size)
            if timed and hasattr(compiled, "stats"):
                st = compiled.stats
                point.osd_fallback_frac = st.osd_fallbacks / max(st.shots, 1)
                point.fallback_time_frac = st.fallback_ns / max(sum(point.batch_ns), 1)
                point.mean_bp_iterations = st.bp_iterations / max(st.shots - st.trivial_shots, 1)
            points.append(point)
            _progress(point)
    return DecodersBenchResult(
        config=config,
        machine=describe_machine(),
        libraries=library_versions(extra=LIBRARIES),
        model={
            "circuit": "surface_code:rotated_memory_z",
            "distance": config.distance,
            "rounds": config.distance,
            "noise": config.noise,
            "num_detectors": dem.num_detectors,
            "num_observables": dem.num_observables,
            "decoders": reprs,
        },
        peers=list(peers),
        unavailable=unavailable,
        points=points,
    )


def _progress(point: PeerPoint) -> None:
    s = point.summary()
    if s is None:
        print(
            f"  {point.peer:>14} {point.batch_shots:>7} shots: skipped ({point.skipped})",
            file=sys.stderr,
        )
        return
    print(
        f"  {point.peer:>14} {point.batch_shots:>7} shots: p50 {s.p50_us / 1e3:9.2f} ms"
        f"  ({point.shots_per_s() or 0:10.0f} shots/s, {len(point.batch_ns)} batches)",
        file=sys.stderr,
    )


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value * scale`` formatted with ``spec`` (``"8.2f"``), or a dash as wide."""
    if value is None:
        return "—".rjust(int(spec.split(".")[0]))
    return format(value * scale, spec)


def format_table(result: DecodersBenchResult) -> str:
    """The results as a text table, peers side by side per batch size, with ratios."""
    lines = [
        f"bp-gpu vs pymatching: d={result.config.distance} rounds={result.config.distance} "
        f"p={result.config.noise} ({result.model['num_detectors']} detectors)",
        f"{'batch':>7} {'peer':>14} {'p50 ms':>10} {'p99 ms':>10} {'shots/s':>11} "
        f"{'vs numpy':>9} {'vs pm':>8} {'osd %':>6} {'osd time %':>10} {'LER':>8}",
    ]
    for size in result.config.batch_shots:
        base = result.point(NUMPY_PEER, size)
        pm = result.point(PYMATCHING_PEER, size)
        base_rate = base.shots_per_s() if base else None
        pm_rate = pm.shots_per_s() if pm else None
        for peer in result.peers:
            p = result.point(peer, size)
            if p is None:
                continue
            s = p.summary()
            rate = p.shots_per_s()
            lines.append(
                f"{size:>7} {peer:>14} "
                f"{_fmt(s.p50_us / 1e3 if s else None, '10.2f')} "
                f"{_fmt(s.p99_us / 1e3 if s else None, '10.2f')} "
                f"{_fmt(rate, '11.0f')} "
                f"{_fmt(ratio(rate, base_rate) if rate else None, '8.2f')}x "
                f"{_fmt(ratio(rate, pm_rate) if rate else None, '7.2g')}x "
                f"{_fmt(p.osd_fallback_frac, '6.1f', 100)} "
                f"{_fmt(p.fallback_time_frac, '10.1f', 100)} "
                f"{_fmt(p.logical_error_rate, '8.4f')}"
                + (f"  skipped: {p.skipped}" if p.skipped and not s else "")
            )
    for peer, why in result.unavailable.items():
        lines.append(f"{peer}: not measured, {why}")
    return "\n".join(lines)


def to_json_doc(result: DecodersBenchResult) -> dict[str, Any]:
    """A JSON-ready document: method, machine, versions, model, and every point."""
    config = asdict(result.config)
    config["json_path"] = str(result.config.json_path) if result.config.json_path else None
    config["plot_path"] = str(result.config.plot_path) if result.config.plot_path else None
    points = []
    for p in result.points:
        s = p.summary()
        base = result.point(NUMPY_PEER, p.batch_shots)
        pm = result.point(PYMATCHING_PEER, p.batch_shots)
        rate = p.shots_per_s()
        points.append(
            {
                "peer": p.peer,
                "batch_shots": p.batch_shots,
                "batches_timed": len(p.batch_ns),
                "skipped": p.skipped,
                "batch_us": s.brief() if s else None,
                "shots_per_s_p50": rate,
                "shots_per_s_without_fallback": p.bp_only_shots_per_s(),
                "vs_numpy": ratio(rate, base.shots_per_s() if base else None) if rate else None,
                "vs_pymatching": ratio(rate, pm.shots_per_s() if pm else None) if rate else None,
                "osd_fallback_frac": p.osd_fallback_frac,
                "fallback_time_frac": p.fallback_time_frac,
                "mean_bp_iterations": p.mean_bp_iterations,
                "logical_error_rate": p.logical_error_rate,
                "batch_ns": p.batch_ns,
            }
        )
    return {
        "benchmark": "decoders",
        "method": __doc__,
        "config": config,
        "machine": result.machine,
        "libraries": result.libraries,
        "model": result.model,
        "unavailable": result.unavailable,
        "points": points,
    }


def plot_throughput(ax: Any, result: DecodersBenchResult) -> None:
    """Throughput (shots/s at p50) against batch size, one line per peer, log-log.

    For bp-gpu a dashed line of the same colour shows the rate without the CPU fallback.
    """
    for peer in result.peers:
        xs, ys, xs_bp, ys_bp = [], [], [], []
        for size in result.config.batch_shots:
            p = result.point(peer, size)
            rate = p.shots_per_s() if p else None
            if rate:
                xs.append(size)
                ys.append(rate)
            bp_rate = p.bp_only_shots_per_s() if p else None
            if bp_rate:
                xs_bp.append(size)
                ys_bp.append(bp_rate)
        (line,) = ax.plot(xs, ys, "o-", label=peer, linewidth=1.4)
        if xs_bp:
            ax.plot(
                xs_bp, ys_bp, "--", color=line.get_color(), linewidth=1.0,
                label=f"{peer} without CPU fallback",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (shots)")
    ax.set_ylabel("shots/s (at p50 batch time)")
    ax.set_title("throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot_batch_time(ax: Any, result: DecodersBenchResult) -> None:
    """p50 batch time with a bar up to p99, against batch size, one line per peer."""
    for peer in result.peers:
        xs, p50, p99 = [], [], []
        for size in result.config.batch_shots:
            p = result.point(peer, size)
            s = p.summary() if p else None
            if s:
                xs.append(size)
                p50.append(s.p50_us / 1e3)
                p99.append(s.p99_us / 1e3)
        lower = np.zeros(len(xs))
        upper = np.asarray(p99) - np.asarray(p50)
        ax.errorbar(xs, p50, yerr=[lower, upper], fmt="o-", capsize=3, label=peer)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size (shots)")
    ax.set_ylabel("batch time, ms (dot p50, bar to p99)")
    ax.set_title("decode_batch time")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(path: Path, result: DecodersBenchResult) -> None:
    """Both panels side by side, with the run's context in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    plot_throughput(left, result)
    plot_batch_time(right, result)
    m = result.model
    fig.suptitle(
        f"bp-gpu (numpy vs CuPy) and pymatching, rotated surface code d={m['distance']}, "
        f"p={m['noise']}; {result.machine.get('cpu_model', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: DecodersBenchConfig) -> int:
    """Run, print the table, write JSON and plot if asked; returns the exit status."""
    result = run(config)
    print(format_table(result))
    if config.json_path is not None:
        write_json(config.json_path, to_json_doc(result))
    if config.plot_path is not None:
        save_figure(config.plot_path, result)
    return 0
