"""Syndrome-source building blocks: codes and DEMs, stim and aer samplers, pacing, frames."""

from __future__ import annotations

import doctest
import importlib
import itertools
import math
import time
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pymatching  # type: ignore[import-untyped, unused-ignore]
import pytest
import stim  # type: ignore[import-untyped, unused-ignore]

from control_sim.qec.aer_repetition import (
    AerRepetitionSampler,
    memory_to_measurements,
    repetition_memory_circuit,
)
from control_sim.qec.codes import CodeSpec, build_circuit, detector_error_model
from control_sim.qec.pacing import PacingClock
from control_sim.qec.pauli_frame import LogicalFrame
from control_sim.qec.samplers import open_source
from control_sim.qec.source import (
    SyndromeSampler,
    SyndromeSource,
    iter_blocks,
)

NS_PER_US = 1_000


def unpack(packed: npt.NDArray[np.uint8], count: int) -> npt.NDArray[np.uint8]:
    return np.unpackbits(packed, axis=1, count=count, bitorder="little")


def decode_ler(source: SyndromeSource, shots: int) -> tuple[float, float]:
    """(undecoded observable flip rate, pymatching LER on the source's DEM) over one block."""
    dets, obs = source.sample_block(shots)
    matching = pymatching.Matching.from_detector_error_model(source.dem)
    predicted = matching.decode_batch(dets, bit_packed_shots=True, bit_packed_predictions=True)
    frame = LogicalFrame(source.num_observables)
    frame.apply(predicted, obs)
    return float(unpack(obs, source.num_observables).any(axis=1).mean()), frame.ler


# --- codes and detector error models ---------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("code", "distance", "rounds", "p"),
    [
        ("toric", 3, 3, 0.01),
        ("surface", 1, 3, 0.01),
        ("repetition", 3, 0, 0.01),
        ("surface", 3.0, 3, 0.01),
        ("surface", True, 3, 0.01),
        ("surface", 3, 3, -0.1),
        ("surface", 3, 3, 0.5),
        ("surface", 3, 3, math.nan),
        ("surface", 3, 3, "0.1"),
    ],
)
def test_code_spec_rejects_bad_arguments(code: str, distance: int, rounds: int, p: float) -> None:
    with pytest.raises(ValueError):
        CodeSpec(code, distance, rounds, p)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_circuit(code, distance, rounds, p)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("code", "task"),
    [("surface", "surface_code:rotated_memory_z"), ("repetition", "repetition_code:memory")],
)
def test_build_circuit_is_stims_generated_circuit(code: str, task: str) -> None:
    circuit = build_circuit(code, 3, 2, 0.001)  # type: ignore[arg-type]
    expected = stim.Circuit.generated(
        task,
        distance=3,
        rounds=2,
        after_clifford_depolarization=0.001,
        before_round_data_depolarization=0.001,
        before_measure_flip_probability=0.001,
        after_reset_flip_probability=0.001,
    )
    assert circuit == expected
    assert "DEPOLARIZE2(0.001)" in str(circuit)
    spec = CodeSpec(code, 3, 2, 0)  # type: ignore[arg-type]
    assert isinstance(spec.p, float)
    assert spec.circuit().num_detectors == circuit.num_detectors


@pytest.mark.timeout(20)
def test_dem_is_graphlike_and_compiles_for_matching_and_bp() -> None:
    from ldpc.ckt_noise.dem_matrices import detector_error_model_to_check_matrices

    circuit = build_circuit("surface", 3, 3, 0.005)
    dem = detector_error_model(circuit)
    for inst in dem.flattened():
        if inst.type != "error":
            continue
        pieces: list[list[int]] = [[]]
        for t in inst.targets_copy():
            if t.is_separator():
                pieces.append([])
            elif t.is_relative_detector_id():
                pieces[-1].append(t.val)
        assert all(len(piece) <= 2 for piece in pieces), inst
    matching = pymatching.Matching.from_detector_error_model(dem)
    assert matching.num_detectors == circuit.num_detectors
    # ldpc refuses undecomposed hyperedges unless told otherwise: this is the BP path.
    matrices = detector_error_model_to_check_matrices(dem)
    assert matrices.check_matrix.shape[0] == circuit.num_detectors
    assert matrices.observables_matrix.shape[0] == circuit.num_observables


# --- the stim sampler ------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_stim_sampler_layout_and_seeding() -> None:
    spec = CodeSpec("repetition", 4, 2, 0.05)
    a = SyndromeSampler(spec, seed=42)
    b = SyndromeSampler(spec, seed=42)
    c = SyndromeSampler(spec, seed=43)
    assert a.num_detectors == spec.circuit().num_detectors == 3 * 3
    assert a.num_detectors % 8  # so the padding check below means something
    assert (a.detector_bytes, a.observable_bytes) == (2, 1)
    for _ in range(2):  # the stream continues identically, not just the first block
        dets_a, obs_a = a.sample_block(500)
        dets_b, obs_b = b.sample_block(500)
        dets_c, _ = c.sample_block(500)
        assert dets_a.dtype == obs_a.dtype == np.uint8
        assert dets_a.shape == (500, 2) and obs_a.shape == (500, 1)
        assert np.array_equal(dets_a, dets_b) and np.array_equal(obs_a, obs_b)
        assert not np.array_equal(dets_a, dets_c)
        assert dets_a.any()
        # Padding bits past the last detector/observable stay zero.
        assert not (dets_a[:, -1] >> (a.num_detectors % 8)).any()
        assert not (obs_a[:, -1] >> 1).any()
    assert stim.DetectorErrorModel(a.dem_text) == a.dem
    assert "seed=42" in repr(a) and "detectors=9" in repr(a)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("shots", [0, -1, True, 2.0])
def test_sample_block_rejects_bad_shot_counts(shots: int) -> None:
    source = SyndromeSampler(CodeSpec("repetition", 3, 1, 0.0), seed=0)
    with pytest.raises(ValueError):
        source.sample_block(shots)
    assert source.sample_block(np.int64(2))[0].shape == (2, 1)  # type: ignore[arg-type, unused-ignore]
    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            SyndromeSampler(source.spec, seed=seed)


@pytest.mark.timeout(20)
def test_stim_surface_code_decodes_below_the_undecoded_flip_rate() -> None:
    raw, ler = decode_ler(SyndromeSampler(CodeSpec("surface", 3, 3, 0.01), seed=5), 4000)
    assert raw > 0.05
    assert ler < raw / 2


@pytest.mark.timeout(10)
def test_open_source_picks_the_backend() -> None:
    rep = CodeSpec("repetition", 3, 2, 0.01)
    assert isinstance(open_source(rep, seed=1), SyndromeSampler)
    assert isinstance(open_source(rep, backend="aer", seed=1), AerRepetitionSampler)
    with pytest.raises(ValueError, match="repetition"):
        open_source(CodeSpec("surface", 3, 2, 0.01), backend="aer", seed=1)
    with pytest.raises(ValueError, match="backend"):
        open_source(rep, backend="cirq", seed=1)  # type: ignore[arg-type]


@pytest.mark.timeout(10)
def test_iter_blocks_splits_shots_and_paces_them() -> None:
    source = SyndromeSampler(CodeSpec("repetition", 3, 2, 0.05), seed=9)
    clock = PacingClock(1_000)
    blocks = list(iter_blocks(source, shots=10, block_shots=4, clock=clock))
    assert [b.seq for b in blocks] == [0, 1, 2]
    assert [b.shots for b in blocks] == [4, 4, 2]
    assert clock.ticks == 3 and clock.start_ns is not None
    for k, block in enumerate(blocks):
        assert block.emitted_ns >= clock.start_ns + k * 1_000 * NS_PER_US
        assert block.obs_packed.shape == (block.shots, 1)
    with pytest.raises(ValueError):
        next(iter_blocks(source, shots=10, block_shots=0, clock=clock))


# --- the aer repetition code -----------------------------------------------------------


def stim_with_x_flips(spec: CodeSpec, flips: Iterable[tuple[int, int]]) -> stim.Circuit:
    """stim's circuit, noise removed, with a certain X on data qubit j where round r's data
    depolarization was. It must be X_ERROR(1), not X: stim reports detection events against
    the noiseless reference sample, which would absorb a plain X gate."""
    by_round: dict[int, list[int]] = {}
    for r, j in flips:
        by_round.setdefault(r, []).append(2 * j)
    out = stim.Circuit()
    round_index = 0
    for inst in spec.circuit().flattened():
        if inst.name == "DEPOLARIZE1":
            if by_round.get(round_index):
                out.append("X_ERROR", by_round[round_index], 1.0)
            round_index += 1
        elif inst.name not in ("DEPOLARIZE2", "X_ERROR"):
            out.append(inst)
    assert round_index == spec.rounds
    return out


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "flips",
    [
        [(0, 0)],  # first round, boundary data qubit
        [(2, 2)],  # middle data qubit: two neighbouring ancillas fire
        [(3, 4)],  # last round, last data qubit: the observable flips
        [(1, 1), (1, 3), (2, 1)],  # several at once, one undone a round later
    ],
)
def test_aer_injected_x_fires_the_same_detectors_as_stim(flips: list[tuple[int, int]]) -> None:
    spec = CodeSpec("repetition", 5, 4, 0.01)  # p is dropped on both sides
    expected = stim_with_x_flips(spec, flips).compile_detector_sampler(seed=0)
    want_dets, want_obs = expected.sample(1, separate_observables=True, bit_packed=True)
    aer = AerRepetitionSampler(CodeSpec("repetition", 5, 4, 0.0), seed=0, x_flips=flips)
    dets, obs = aer.sample_block(3)
    assert dets.any()  # the injection did something
    assert np.array_equal(dets, np.repeat(want_dets, 3, axis=0))
    assert np.array_equal(obs, np.repeat(want_obs, 3, axis=0))


@pytest.mark.timeout(10)
def test_aer_injected_x_fires_the_neighbouring_ancillas() -> None:
    # Spelled out once by hand from stim's coordinates: DETECTOR(x, t), ancilla x = 2i + 1.
    aer = AerRepetitionSampler(CodeSpec("repetition", 5, 4, 0.0), seed=0, x_flips=[(2, 2)])
    dets, obs = aer.sample_block(1)
    fired = np.flatnonzero(unpack(dets, aer.num_detectors)[0])
    coords = aer.circuit.get_detector_coordinates()
    assert sorted(tuple(coords[int(k)]) for k in fired) == [(3.0, 2.0), (5.0, 2.0)]
    assert not obs.any()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("distance", "rounds"), [(2, 1), (3, 3), (5, 2)])
def test_aer_without_noise_has_no_events(distance: int, rounds: int) -> None:
    aer = AerRepetitionSampler(CodeSpec("repetition", distance, rounds, 0.0), seed=2)
    dets, obs = aer.sample_block(200)
    assert dets.shape == (200, aer.detector_bytes) and obs.shape == (200, 1)
    assert not dets.any() and not obs.any()


@pytest.mark.timeout(30)
def test_aer_event_rates_match_stim_at_the_same_noise() -> None:
    spec = CodeSpec("repetition", 3, 3, 0.02)
    shots = 4000
    aer_dets, aer_obs = AerRepetitionSampler(spec, seed=21).sample_block(shots)
    stim_dets, stim_obs = SyndromeSampler(spec, seed=21).sample_block(shots)
    n = spec.circuit().num_detectors
    rate_aer = unpack(aer_dets, n).mean(axis=0)
    rate_stim = unpack(stim_dets, n).mean(axis=0)
    assert rate_stim.min() > 0.05  # every detector sees events at this p
    # Two independent binomial estimates: the difference has sd sqrt(2 q (1 - q) / shots).
    sd = np.sqrt(2 * rate_stim * (1 - rate_stim) / shots)
    assert np.all(np.abs(rate_aer - rate_stim) < 5 * sd), (rate_aer, rate_stim)
    flip_aer, flip_stim = aer_obs.mean(), stim_obs.mean()
    assert abs(flip_aer - flip_stim) < 5 * math.sqrt(2 * flip_stim * (1 - flip_stim) / shots)


@pytest.mark.timeout(30)
def test_aer_samples_decode_with_stims_dem() -> None:
    spec = CodeSpec("repetition", 5, 3, 0.03)
    raw, ler = decode_ler(AerRepetitionSampler(spec, seed=8), 3000)
    assert raw > 0.1
    assert ler < raw / 3


@pytest.mark.timeout(20)
def test_aer_sampler_is_seeded() -> None:
    spec = CodeSpec("repetition", 3, 2, 0.05)
    a, b = AerRepetitionSampler(spec, seed=4), AerRepetitionSampler(spec, seed=4)
    c = AerRepetitionSampler(spec, seed=5)
    for _ in range(2):
        block_a, block_b, block_c = a.sample_block(300), b.sample_block(300), c.sample_block(300)
        assert all(np.array_equal(x, y) for x, y in zip(block_a, block_b, strict=True))
        assert not np.array_equal(block_a[0], block_c[0])


@pytest.mark.timeout(10)
def test_aer_circuit_and_memory_layout() -> None:
    qc = repetition_memory_circuit(3, 2)
    assert qc.num_qubits == 5 and qc.num_clbits == 2 * 2 + 3
    assert qc.count_ops()["cx"] == 2 * 2 * 2
    # Aer prints clbit 0 last.
    bits = memory_to_measurements(["0000001", "1000000"], 7)
    assert bits.tolist() == [[True] + [False] * 6, [False] * 6 + [True]]
    with pytest.raises(ValueError, match="one register"):
        memory_to_measurements(["01 1"], 3)
    with pytest.raises(ValueError):
        repetition_memory_circuit(3, 2, x_flips=[(2, 0)])


# --- the pacing clock ------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_unpaced_clock_returns_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"an unpaced clock slept {seconds} s")

    monkeypatch.setattr(time, "sleep", no_sleep)
    clock = PacingClock(None)
    t0 = time.perf_counter_ns()
    times = [clock.wait_next() for _ in range(1000)]
    assert times == sorted(times) and times[0] >= t0
    assert clock.ticks == 1000 and clock.late_ticks == 0 and clock.slip_us_max == 0.0
    assert clock.next_due_ns is None


@pytest.mark.timeout(10)
@pytest.mark.parametrize("period_us", [100, 5_000])  # the spin-only and sleep-then-spin paths
def test_paced_clock_keeps_its_schedule(period_us: int) -> None:
    ticks = 40 if period_us == 100 else 5
    clock = PacingClock(period_us)
    times = [clock.wait_next() for _ in range(ticks)]
    assert clock.start_ns == times[0]
    period_ns = period_us * NS_PER_US
    for k, t in enumerate(times):
        assert t >= clock.start_ns + k * period_ns  # never released early
    assert all(b > a for a, b in itertools.pairwise(times))
    assert clock.next_due_ns == clock.start_ns + ticks * period_ns
    stats = clock.stats()
    assert stats.ticks == ticks and 0 <= stats.late_ticks < ticks
    assert 0.0 <= stats.slip_us_mean <= stats.slip_us_max
    # Loose: a loaded 2-core machine may preempt us, but not for a second per tick.
    assert times[-1] - times[0] < (ticks - 1) * period_ns + ticks * 1_000_000_000


@pytest.mark.timeout(10)
def test_clock_that_is_behind_records_slip_and_does_not_shift() -> None:
    period_us = 1_000
    period_ns = period_us * NS_PER_US
    start_ns = time.perf_counter_ns() - 10 * period_ns  # ten ticks in the past
    clock = PacingClock(period_us, start_ns=start_ns)
    times = [clock.wait_next() for _ in range(14)]
    assert clock.late_ticks >= 10
    assert clock.slip_us_max >= 10 * period_us  # tick 0 was ten periods late
    assert clock.start_ns == start_ns
    for k, t in enumerate(times):
        assert t >= start_ns + k * period_ns
    # Catching up released the late ticks back to back: waiting a period each would take
    # 9 ms from tick 0 to tick 9.
    assert times[9] - times[0] < 6 * period_ns


@pytest.mark.timeout(10)
@pytest.mark.parametrize("period_us", [0, -5, 1.5, True])
def test_clock_rejects_bad_periods(period_us: int) -> None:
    with pytest.raises(ValueError):
        PacingClock(period_us)
    with pytest.raises(ValueError):
        PacingClock(100, spin_us=-1)


# --- the logical frame -----------------------------------------------------------------


@pytest.mark.timeout(10)
def test_logical_frame_counts_mismatched_shots() -> None:
    frame = LogicalFrame(3)
    assert math.isnan(frame.ler)
    predicted = np.array([[0b000], [0b101], [0b010], [0b111]], dtype=np.uint8)
    true_obs = np.array([[0b000], [0b101], [0b011], [0b000]], dtype=np.uint8)
    assert frame.apply(predicted, true_obs) == 2
    # Garbage in the padding bits (past observable 2) is not a logical error.
    assert frame.apply(np.array([[0b1111_1000]], np.uint8), np.array([[0]], np.uint8)) == 0
    assert (frame.logical_errors, frame.shots) == (2, 5)
    assert frame.ler == pytest.approx(2 / 5)
    assert frame.observable_errors.tolist() == [2, 1, 1]


@pytest.mark.timeout(10)
def test_logical_frame_with_more_than_eight_observables() -> None:
    frame = LogicalFrame(10)
    assert frame.observable_bytes == 2
    predicted = np.zeros((4, 2), dtype=np.uint8)
    true_obs = np.zeros((4, 2), dtype=np.uint8)
    true_obs[1, 1] = 0b10  # observable 9
    true_obs[3, 0] = 0b1  # observable 0
    predicted[3, 0] = 0b1  # ... predicted correctly
    assert frame.apply(predicted, true_obs) == 1
    assert frame.observable_errors.tolist() == [0] * 9 + [1]


@pytest.mark.timeout(10)
def test_logical_frame_rejects_bad_arrays() -> None:
    frame = LogicalFrame(1)
    good = np.zeros((3, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        frame.apply(good.astype(np.int64), good)  # type: ignore[arg-type, unused-ignore]
    with pytest.raises(ValueError, match="bytes per shot"):
        frame.apply(np.zeros((3, 2), np.uint8), np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="shot counts"):
        frame.apply(good, good[:2])
    with pytest.raises(ValueError):
        LogicalFrame(0)
    assert frame.shots == 0


# --- docstring examples ----------------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "name",
    [
        "control_sim.qec.codes",
        "control_sim.qec.source",
        "control_sim.qec.aer_repetition",
        "control_sim.qec.pacing",
        "control_sim.qec.pauli_frame",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
