"""nearloop decoders: the compile-once, decode-many contract and its implementations.

``pymatching`` (MWPM), ``bposd`` (ldpc BP+OSD) and ``bp-gpu`` (batched min-sum BP on
CuPy or numpy, with ldpc's OSD as fallback) all decode bit-packed blocks of detection
events into bit-packed observable predictions; see :mod:`decoders.contract`.
"""

from decoders.bp_gpu import BpGpuDecoder, BpGpuStats, BpResult, CompiledBpGpu
from decoders.bposd_decoder import BpOsdDecoder, BpOsdSettings, CompiledBpOsd
from decoders.contract import (
    CompiledDecoder,
    Decoder,
    model_hash,
    pack_bits,
    packed_width,
    unpack_bits,
)
from decoders.dem_matrices import DemMatrices
from decoders.errors import (
    BackendUnavailable,
    BadBlock,
    BadOption,
    BadPrediction,
    DecoderError,
    ModelError,
    ModelHashMismatch,
    UndecodableBlock,
    UnknownDecoder,
    UnknownModel,
)
from decoders.model_cache import CacheStats, ModelCache
from decoders.pymatching_decoder import CompiledPyMatching, PyMatchingDecoder
from decoders.registry import DECODERS, decoder_options, make_decoder

__all__ = [
    "DECODERS",
    "BackendUnavailable",
    "BadBlock",
    "BadOption",
    "BadPrediction",
    "BpGpuDecoder",
    "BpGpuStats",
    "BpOsdDecoder",
    "BpOsdSettings",
    "BpResult",
    "CacheStats",
    "CompiledBpGpu",
    "CompiledBpOsd",
    "CompiledDecoder",
    "CompiledPyMatching",
    "Decoder",
    "DecoderError",
    "DemMatrices",
    "ModelCache",
    "ModelError",
    "ModelHashMismatch",
    "PyMatchingDecoder",
    "UndecodableBlock",
    "UnknownDecoder",
    "UnknownModel",
    "decoder_options",
    "make_decoder",
    "model_hash",
    "pack_bits",
    "packed_width",
    "unpack_bits",
]
