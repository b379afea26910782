"""The decoders library: the contract, the three decoders, the model cache and the registry.

Everything runs on the CPU (bp-gpu on numpy); samples are seeded stim surface-code shots.
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pymatching
import pytest
import scipy.sparse
import stim
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ldpc.bp_decoder import BpDecoder as LdpcBp
from ldpc.bposd_decoder import BpOsdDecoder as LdpcBpOsd

from client.errors import BadBlock
from client.syndrome_block import pack_bits, packed_width, unpack_bits
from client.wire import model_hash
from decoders import (
    DECODER_NAMES,
    BackendUnavailable,
    BadOption,
    BpGpuDecoder,
    BpOsdDecoder,
    CompiledBpGpu,
    DecoderError,
    DemMatrices,
    InvalidBlock,
    ModelCache,
    ModelError,
    ModelHashMismatch,
    ModelNotFound,
    PyMatchingDecoder,
    UndecodableBlock,
    UnknownDecoder,
    make_decoder,
)
from decoders.array_backend import Backend, cuda_status, resolve_backend, xp_unpack_bits
from decoders.bp_gpu import TannerLayout, group_degrees
from decoders.bposd_decoder import BpOsdSettings

Samples = tuple[stim.DetectorErrorModel, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]

# Fast settings shared by bposd, bp-gpu and the ldpc references they are compared with.
FAST: dict[str, Any] = {
    "max_bp_iters": 20,
    "ms_scaling_factor": 0.625,
    "osd_method": "osd_cs",
    "osd_order": 4,
}


@cache
def surface_code(distance: int, p: float, shots: int, seed: int = 20260) -> Samples:
    """Rotated memory-z surface code, circuit-level noise ``p``: (dem, packed dets, packed obs)."""
    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=distance,
        rounds=distance,
        after_clifford_depolarization=p,
        before_round_data_depolarization=p,
        before_measure_flip_probability=p,
        after_reset_flip_probability=p,
    )
    dem = circuit.detector_error_model(decompose_errors=True)
    dets, obs = circuit.compile_detector_sampler(seed=seed).sample(
        shots, separate_observables=True, bit_packed=True
    )
    return dem, dets, obs


def logical_errors(predictions: npt.NDArray[np.uint8], obs: npt.NDArray[np.uint8]) -> int:
    return int(np.any(predictions != obs, axis=1).sum())


def ldpc_min_sum(cls: Any, m: DemMatrices, max_iter: int, scaling: float, **extra: Any) -> Any:
    """ldpc's ``cls`` (BpDecoder or BpOsdDecoder) running parallel min-sum BP on ``m``'s
    check matrix and priors, the rule bp-gpu implements; ``extra`` goes to ``cls``."""
    return cls(
        m.check_matrix,
        error_channel=list(m.priors),
        max_iter=max_iter,
        bp_method="minimum_sum",
        ms_scaling_factor=scaling,
        schedule="parallel",
        **extra,
    )


def ldpc_reference(dem: stim.DetectorErrorModel) -> tuple[DemMatrices, Any]:
    """ldpc's own BpOsdDecoder with the FAST settings, built directly (not via decoders)."""
    m = DemMatrices.from_detector_error_model(dem)
    ref = ldpc_min_sum(
        LdpcBpOsd,
        m,
        FAST["max_bp_iters"],
        FAST["ms_scaling_factor"],
        osd_method=FAST["osd_method"],
        osd_order=FAST["osd_order"],
    )
    return m, ref


# --- pymatching ---------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("distance", [3, 5])
def test_pymatching_is_bit_identical_to_matching_decode_batch(distance: int) -> None:
    dem, dets, obs = surface_code(distance, 0.005, 2000)
    compiled = make_decoder("pymatching").compile(dem)
    offline = pymatching.Matching.from_detector_error_model(dem).decode_batch(
        dets, bit_packed_shots=True, bit_packed_predictions=True
    )
    streamed = compiled.decode_batch(dets)
    assert streamed.dtype == np.uint8 and streamed.shape == (2000, 1)
    np.testing.assert_array_equal(streamed, offline)
    # Block boundaries change nothing: decoding in blocks of 37 gives the same bits.
    blocks = [compiled.decode_batch(dets[i : i + 37]) for i in range(0, 2000, 37)]
    np.testing.assert_array_equal(np.concatenate(blocks), offline)
    assert logical_errors(streamed, obs) < 0.2 * logical_errors(np.zeros_like(obs), obs)


# --- bposd --------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_bposd_equals_ldpc_shot_by_shot() -> None:
    dem, dets, _ = surface_code(3, 0.005, 1500)
    compiled = make_decoder("bposd", **FAST).compile(dem)
    m, ref = ldpc_reference(dem)
    syndromes = unpack_bits(dets, dem.num_detectors)
    expected = np.array([m.observable_flips(ref.decode(s)[None, :])[0] for s in syndromes])
    np.testing.assert_array_equal(compiled.decode_batch(dets), pack_bits(expected))


# --- bp-gpu (on numpy) --------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("distance", "p", "shots"), [(3, 0.01, 8000), (5, 0.005, 1000)])
def test_bp_gpu_logical_error_rate_matches_ldpc_bposd(distance: int, p: float, shots: int) -> None:
    """Two-proportion test: bp-gpu's LER is within 4 pooled sigma of ldpc's BP+OSD's.

    At d=3, p=0.01 the LERs are ~5% against ~18% without decoding; at d=5, p=0.005 ~1.5%
    against ~23%. 4 sigma (about 1.4 and 2.2 percentage points) is far below the gap a
    broken decoder would leave, and a do-nothing decoder fails the last assertion.
    """
    dem, dets, obs = surface_code(distance, p, shots)
    gpu: Any = BpGpuDecoder(device="cpu", **FAST).compile(dem)
    m, ref = ldpc_reference(dem)
    syndromes = unpack_bits(dets, dem.num_detectors)
    ref_flips = np.array([m.observable_flips(ref.decode(s)[None, :])[0] for s in syndromes])

    k_gpu = logical_errors(gpu.decode_batch(dets), obs)
    k_ref = logical_errors(pack_bits(ref_flips), obs)
    k_none = logical_errors(np.zeros_like(obs), obs)
    pooled = (k_gpu + k_ref) / (2 * shots)
    sigma = math.sqrt(pooled * (1 - pooled) * 2 / shots)
    print(
        f"LER bp-gpu {k_gpu / shots:.4f}, ldpc bposd {k_ref / shots:.4f}, "
        f"no decoding {k_none / shots:.4f}, sigma {sigma:.4f}; {gpu.stats}"
    )
    assert abs(k_gpu - k_ref) / shots <= 4 * sigma
    assert k_gpu < 0.4 * k_none  # the test has teeth: a do-nothing decoder fails it
    assert gpu.stats.osd_fallbacks > 0 and gpu.stats.bp_converged > 0


@pytest.mark.timeout(30)
def test_bp_gpu_min_sum_reproduces_ldpc_bp_iteration_for_iteration() -> None:
    """The batched BP is ldpc's parallel min-sum: same hard decisions, same convergence."""
    dem, dets, _ = surface_code(5, 0.005, 150)
    gpu = BpGpuDecoder(device="cpu", **FAST).compile(dem)
    assert isinstance(gpu, CompiledBpGpu)
    m = gpu.matrices
    ref = ldpc_min_sum(LdpcBp, m, FAST["max_bp_iters"], FAST["ms_scaling_factor"])
    syndromes = unpack_bits(dets, dem.num_detectors)
    result = gpu.bp(syndromes)
    same = 0
    for i, syn in enumerate(syndromes):
        decision = ref.decode(syn)
        same += bool(
            np.array_equal(decision, result.decisions[i])
            and ref.converge == result.converged[i]
            and (ref.iter == result.iterations[i] or not syn.any())
        )
    # Identical on this machine; the slack allows a last-bit float difference elsewhere.
    assert same >= 0.98 * len(syndromes)


@pytest.mark.timeout(30)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    m=st.integers(1, 10),
    n=st.integers(2, 24),
    density=st.floats(0.1, 0.6),
    seed=st.integers(0, 2**32 - 1),
)
def test_bp_gpu_equals_ldpc_bp_on_random_codes(m: int, n: int, density: float, seed: int) -> None:
    """Random check matrices (empty rows and columns too) and random priors.

    Checks of degree 1 are left out: ldpc sends ``alpha * DBL_MAX`` from them and its sums
    then depend on float absorption, where bp-gpu caps the message instead.
    """
    rng = np.random.default_rng(seed)
    h = (rng.random((m, n)) < density).astype(np.uint8)
    priors = rng.uniform(0.01, 0.3, size=n)
    text = "\n".join(
        f"error({p:.6f}) " + " ".join(f"D{d}" for d in np.flatnonzero(h[:, j])) + " L0"
        for j, p in enumerate(priors)
    )
    dem = stim.DetectorErrorModel(text + f"\ndetector D{m - 1}")
    gpu: Any = BpGpuDecoder(device="cpu", max_bp_iters=12, ms_scaling_factor=0.75).compile(dem)
    mats = gpu.matrices  # identical columns are merged here, so check degrees can drop
    assume(mats.num_errors > 0 and not np.any(np.diff(mats.check_matrix.indptr) == 1))
    ref = ldpc_min_sum(LdpcBp, mats, 12, 0.75, input_vector_type="syndrome")
    syndromes = rng.integers(0, 2, size=(16, m), dtype=np.uint8)
    result = gpu.bp(syndromes)
    for i, syn in enumerate(syndromes):
        np.testing.assert_array_equal(ref.decode(syn), result.decisions[i])
        assert ref.converge == result.converged[i]


@pytest.mark.timeout(30)
def test_bp_gpu_converged_shots_satisfy_the_syndrome_and_the_rest_go_to_osd() -> None:
    dem, dets, _ = surface_code(3, 0.01, 600)
    gpu = BpGpuDecoder(device="cpu", chunk_shots=64, **FAST).compile(dem)
    assert isinstance(gpu, CompiledBpGpu)
    syndromes = unpack_bits(dets, dem.num_detectors)
    result = gpu.bp(syndromes)
    ok = result.converged
    np.testing.assert_array_equal(gpu.matrices.syndromes(result.decisions[ok]), syndromes[ok])
    assert 0 < ok.sum() < len(syndromes)
    assert not np.array_equal(gpu.matrices.syndromes(result.decisions[~ok]), syndromes[~ok]), (
        "unconverged decisions should not all satisfy their syndromes"
    )

    gpu.decode_batch(dets)
    stats = gpu.stats
    trivial = int((~dets.any(axis=1)).sum())
    assert stats.shots == len(dets) and stats.trivial_shots == trivial
    assert stats.osd_fallbacks == int((~ok).sum()) > 0
    assert stats.bp_converged == int(ok.sum()) - trivial
    assert stats.fallback_ns > 0
    assert gpu.reset_stats() == stats and gpu.stats.shots == 0


@pytest.mark.timeout(30)
def test_bp_gpu_float32_and_chunking_do_not_change_the_error_rate_much() -> None:
    dem, dets, obs = surface_code(3, 0.01, 1500)
    base = make_decoder("bp-gpu", device="cpu", **FAST).compile(dem).decode_batch(dets)
    other = make_decoder(
        "bp-gpu", device="cpu", float_dtype="float32", chunk_shots=100, max_groups=1, **FAST
    ).compile(dem)
    got = other.decode_batch(dets)
    assert np.mean(np.all(got == base, axis=1)) > 0.99
    assert abs(logical_errors(got, obs) - logical_errors(base, obs)) <= 10


@pytest.mark.timeout(30)
def test_bp_gpu_uses_only_the_array_api_standard() -> None:
    """bp-gpu on array-api-strict (the standard and nothing more) decodes exactly as on numpy.

    This is what keeps the CuPy path honest on machines without a GPU.
    """
    xps = pytest.importorskip("array_api_strict")
    dem, dets, _ = surface_code(3, 0.01, 300)
    reference = BpGpuDecoder(device="cpu", **FAST).compile(dem).decode_batch(dets)
    strict = BpGpuDecoder(device="cpu", **FAST)
    strict.backend = Backend("array-api-strict", xps, "cpu")  # swap the namespace under it
    compiled: Any = strict.compile(dem)
    np.testing.assert_array_equal(compiled.decode_batch(dets), reference)
    assert compiled.stats.osd_fallbacks > 0


@pytest.mark.timeout(20)
def test_tanner_layout_holds_every_edge_once() -> None:
    rng = np.random.default_rng(5)
    h = scipy.sparse.csr_matrix((rng.random((30, 80)) < 0.1).astype(np.uint8))
    for groups in (1, 2, 4):
        lay = TannerLayout.from_check_matrix(h, max_groups=groups)
        edges = set()
        for g in lay.groups:
            r, c = np.nonzero(g.slot_valid)
            edges |= set(zip(g.checks[r].tolist(), g.slot_bit[r, c].tolist(), strict=True))
        assert edges == set(zip(*h.nonzero(), strict=True))
        assert lay.num_edges == h.nnz and len(lay.groups) <= groups
        slot_bit = np.concatenate([g.slot_bit.reshape(-1) for g in lay.groups])
        bits, _ = np.nonzero(lay.bit_valid)
        np.testing.assert_array_equal(slot_bit[lay.bit_slot[lay.bit_valid]], bits)
    assert group_degrees(np.array([3, 3, 4, 40, 41, 80]), 3) == [4, 41, 80]


# --- the contract: checks, zero shots, errors ---------------------------------------------


@pytest.fixture(scope="module", params=sorted(DECODER_NAMES))
def compiled(request: pytest.FixtureRequest) -> Any:
    dem, _, _ = surface_code(3, 0.005, 10)
    options = {"device": "cpu"} if request.param == "bp-gpu" else {}
    return make_decoder(request.param, **options).compile(dem)


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("block", "what"),
    [
        (np.zeros((4, 3), dtype=np.int64), "dtype"),
        (np.zeros((4, 3), dtype=np.bool_), "dtype"),
        (np.zeros(3, dtype=np.uint8), "ndim"),
        (np.zeros((2, 4, 3), dtype=np.uint8), "ndim"),
        (np.zeros((4, 4), dtype=np.uint8), "width"),
        (np.zeros((4, 24), dtype=np.uint8), "width"),  # unpacked bits, not packed
        ([[0, 0, 0]], "type"),
    ],
)
def test_bad_blocks_raise_bad_block_naming_the_decoder(
    compiled: Any, block: Any, what: str
) -> None:
    with pytest.raises(InvalidBlock) as info:
        compiled.decode_batch(block)
    err = info.value
    assert isinstance(err, DecoderError) and isinstance(err, BadBlock)  # bad_block on the wire
    assert err.decoder == compiled.decoder_name and err.what == what
    assert str(err).startswith(f"[bad_block] {compiled.decoder_name}: ")
    if what == "width":
        assert err.expected == (block.shape[0], 3) and err.got == block.shape


@pytest.mark.timeout(10)
def test_zero_shots_and_read_only_blocks(compiled: Any) -> None:
    out = compiled.decode_batch(np.zeros((0, 3), dtype=np.uint8))
    assert out.shape == (0, 1) and out.dtype == np.uint8
    _, dets, _ = surface_code(3, 0.005, 10)
    frozen = dets.copy()
    frozen.setflags(write=False)  # a zero-copy frame off the wire is read-only
    np.testing.assert_array_equal(compiled.decode_batch(frozen), compiled.decode_batch(dets))
    strided = np.asfortranarray(dets)
    np.testing.assert_array_equal(compiled.decode_batch(strided), compiled.decode_batch(dets))


@pytest.mark.timeout(10)
def test_compiled_attributes_and_reprs(compiled: Any) -> None:
    dem, _, _ = surface_code(3, 0.005, 10)
    assert compiled.num_detectors == dem.num_detectors == 24
    assert compiled.num_observables == 1
    assert compiled.model_hash == model_hash(str(dem))
    text = repr(compiled)
    assert compiled.decoder_name in text and compiled.model_hash[:12] in text
    assert "detectors=24" in text


@pytest.mark.timeout(10)
def test_decoder_reprs_show_their_options() -> None:
    assert repr(make_decoder("pymatching")) == "PyMatchingDecoder()"
    text = repr(make_decoder("bp-gpu", device="cpu", osd_method="osd0", osd_order=0))
    assert "osd_method='osd0'" in text and "device='cpu'" in text


@pytest.mark.timeout(10)
def test_models_decoders_cannot_take_raise_model_error() -> None:
    with pytest.raises(ModelError) as info:
        make_decoder("bposd").compile_text("this is not a detector error model")
    assert info.value.decoder == "bposd"
    lonely = stim.DetectorErrorModel("detector D0\nerror(0.1) D1 L0")
    with pytest.raises(UndecodableBlock) as undecodable:
        make_decoder("pymatching").compile(lonely).decode_batch(np.array([[1]], dtype=np.uint8))
    assert undecodable.value.decoder == "pymatching"


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", sorted(DECODER_NAMES))
def test_tiny_and_empty_models_never_crash(name: str) -> None:
    options = {"device": "cpu"} if name == "bp-gpu" else {}
    decoder = make_decoder(name, **options)
    # Full-rank H with more OSD order than free columns used to segfault inside ldpc.
    square = decoder.compile(stim.DetectorErrorModel("error(0.1) D0 D1\nerror(0.1) D0"))
    assert square.decode_batch(np.array([[3], [1], [0]], dtype=np.uint8)).shape == (3, 0)
    if name != "pymatching":  # pymatching rightly refuses a detector no error can flip
        empty = decoder.compile(stim.DetectorErrorModel("detector D0\nlogical_observable L0"))
        out = empty.decode_batch(np.array([[1], [0]], dtype=np.uint8))
        np.testing.assert_array_equal(out, np.zeros((2, 1), dtype=np.uint8))


# --- registry and options ----------------------------------------------------------------


@pytest.mark.timeout(10)
def test_registry_names_and_errors() -> None:
    assert set(DECODER_NAMES) == {"pymatching", "bposd", "bp-gpu"}
    assert isinstance(make_decoder("pymatching"), PyMatchingDecoder)
    assert isinstance(make_decoder("bposd", osd_method="osd0", osd_order=0), BpOsdDecoder)
    with pytest.raises(UnknownDecoder) as unknown:
        make_decoder("mwpm")
    assert unknown.value.decoder == "mwpm"
    assert unknown.value.valid == ("bp-gpu", "bposd", "pymatching")
    assert "'bposd'" in str(unknown.value)
    with pytest.raises(BadOption) as typo:
        make_decoder("bp-gpu", devise="cpu")
    assert typo.value.decoder == "bp-gpu" and typo.value.option == "devise"
    assert "device" in typo.value.reason


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("name", "option", "value"),
    [
        ("bposd", "max_bp_iters", 0),
        ("bposd", "bp_method", "belief"),
        ("bposd", "ms_scaling_factor", 1.5),
        ("bposd", "osd_method", "osd9"),
        ("bposd", "osd_order", -1),
        ("bp-gpu", "float_dtype", "float16"),
        ("bp-gpu", "device", "tpu"),
        ("bp-gpu", "chunk_shots", 0),
        ("bp-gpu", "max_groups", 0),
    ],
)
def test_bad_option_values_are_refused_at_construction(name: str, option: str, value: Any) -> None:
    with pytest.raises(BadOption) as info:
        make_decoder(name, **{option: value})
    assert (info.value.decoder, info.value.option, info.value.value) == (name, option, value)


@pytest.mark.timeout(10)
def test_cuda_device_without_a_gpu_is_a_typed_error() -> None:
    ok, why = cuda_status()
    if ok:
        pytest.skip(f"a GPU is here: {why}")
    with pytest.raises(BackendUnavailable) as info:
        make_decoder("bp-gpu", device="cuda")
    assert info.value.decoder == "bp-gpu" and info.value.device == "cuda"
    assert make_decoder("bp-gpu", device="auto").options()["device"] == "auto"
    assert resolve_backend("auto", decoder="bp-gpu").name == "numpy"


@pytest.mark.timeout(10)
def test_osd_order_is_capped_at_the_free_columns() -> None:
    m = DemMatrices.from_detector_error_model(
        stim.DetectorErrorModel("error(0.1) D0 D1\nerror(0.1) D0\nerror(0.1) D1")
    )
    assert BpOsdSettings(osd_order=7).osd_order_for(m) == 1
    assert BpOsdSettings(osd_method="osd0", osd_order=0).osd_order_for(m) == 0


# --- model hash and cache -----------------------------------------------------------------


@pytest.mark.timeout(20)
def test_model_cache_compiles_each_model_once() -> None:
    dem3, _, _ = surface_code(3, 0.005, 10)
    texts = [str(dem3), str(surface_code(3, 0.002, 10)[0]), str(surface_code(3, 0.001, 10)[0])]
    hashes = [model_hash(t) for t in texts]
    assert len(set(hashes)) == 3 and all(len(h) == 64 for h in hashes)

    cache_ = ModelCache(make_decoder("pymatching"), max_models=2)
    asked: list[str] = []

    def provider(i: int) -> Any:
        def give() -> str:
            asked.append(hashes[i])
            return texts[i]

        return give

    first = cache_.get_or_compile(hashes[0], provider(0))
    for _ in range(5):
        assert cache_.get_or_compile(hashes[0], provider(0)) is first
    assert asked == [hashes[0]]
    assert cache_.stats.compiles == 1 and cache_.stats.hits == 5
    assert first.model_hash == hashes[0]

    cache_.get_or_compile(hashes[1], provider(1))
    cache_.get_or_compile(hashes[0], provider(0))  # refresh: hashes[1] is now the oldest
    cache_.get_or_compile(hashes[2], provider(2))  # evicts hashes[1]
    assert hashes[1] not in cache_ and hashes[0] in cache_ and len(cache_) == 2
    assert cache_.stats.evictions == 1 and cache_.stats.compiles == 3
    assert cache_.peek(hashes[0]) is first

    with pytest.raises(ModelNotFound) as unknown:
        cache_.get_or_compile("0" * 64, lambda: None)
    assert unknown.value.model_hash == "0" * 64 and unknown.value.decoder == "pymatching"
    with pytest.raises(ModelHashMismatch) as mismatch:
        cache_.get_or_compile("1" * 64, lambda: texts[0])
    assert mismatch.value.got == hashes[0]
    # A model parsed from its text by the caller is trusted under the given hash.
    parsed = cache_.get_or_compile(hashes[1], lambda: stim.DetectorErrorModel(texts[1]))
    assert parsed.model_hash == hashes[1]
    assert cache_.add_text(texts[1]) is parsed
    assert cache_.get_or_compile(hashes[1], lambda: texts[1].encode()) is parsed  # a hit
    bad = b"\xff\xfe not utf-8"
    with pytest.raises(ModelError):
        cache_.get_or_compile(model_hash(bad), lambda: bad)
    assert model_hash(texts[0].encode()) == hashes[0]  # str or its UTF-8 bytes: one hash
    assert "pymatching" in repr(cache_)


# --- bit packing --------------------------------------------------------------------------


@pytest.mark.timeout(30)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    shots=st.integers(0, 6),
    num_bits=st.integers(0, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_round_trip_in_stims_layout(shots: int, num_bits: int, seed: int) -> None:
    bits = np.random.default_rng(seed).integers(0, 2, size=(shots, num_bits), dtype=np.uint8)
    packed = pack_bits(bits)
    assert packed.shape == (shots, packed_width(num_bits)) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_bits(packed, num_bits), bits)
    for shot in range(shots):
        for b in range(num_bits):
            assert (packed[shot, b // 8] >> (b % 8)) & 1 == bits[shot, b]  # stim's bit order
    xp = resolve_backend("cpu", decoder="bp-gpu").xp
    np.testing.assert_array_equal(xp_unpack_bits(xp, packed, num_bits), bits.astype(bool))


@pytest.mark.timeout(10)
def test_packing_matches_stims_own_bit_packed_sampler() -> None:
    circuit = stim.Circuit.generated(
        "repetition_code:memory", distance=5, rounds=3, before_round_data_depolarization=0.2
    )
    packed: Any = circuit.compile_detector_sampler(seed=3).sample(50, bit_packed=True)
    unpacked: Any = circuit.compile_detector_sampler(seed=3).sample(50)
    np.testing.assert_array_equal(unpack_bits(packed, circuit.num_detectors), unpacked)
    np.testing.assert_array_equal(pack_bits(unpacked), packed)


# --- docstrings and the benchmark ---------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("module", ["decoders.contract", "decoders.registry", "decoders.bp_gpu"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.timeout(30)
def test_bench_decoders_runs_and_writes_json_and_plot(tmp_path: Path) -> None:
    from bench.cli import main

    out, png = tmp_path / "d.json", tmp_path / "d.png"
    argv = ["decoders", "--device", "both", "--distance", "3", "--batch-shots", "20,50"]
    argv += ["--batches", "2", "--json", str(out), "--plot", str(png)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    peers = {(p["peer"], p["batch_shots"]) for p in doc["points"]}
    assert {("bp-gpu[numpy]", 20), ("pymatching", 50)} <= peers
    assert all(p["shots_per_s_p50"] > 0 for p in doc["points"])
    assert doc["libraries"]["stim"] and doc["machine"]["python"]
    if not cuda_status()[0]:
        assert "bp-gpu[cupy]" in doc["unavailable"]
    assert png.stat().st_size > 1000
