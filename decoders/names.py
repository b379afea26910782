"""The registered decoders' names, where each one's class lives, and the decoder service's
default name.

It imports nothing, so command lines offer the names without loading any decoder
library; :mod:`decoders.registry` builds the decoders.
"""

from __future__ import annotations

from typing import Final

DECODER_CLASSES: Final[dict[str, tuple[str, str]]] = {
    "pymatching": ("decoders.pymatching_decoder", "PyMatchingDecoder"),
    "bposd": ("decoders.bposd_decoder", "BpOsdDecoder"),
    "bp-gpu": ("decoders.bp_gpu", "BpGpuDecoder"),
}
"""``name -> (module, class name)`` of every registered decoder."""

DECODER_NAMES: Final[tuple[str, ...]] = tuple(DECODER_CLASSES)
"""Every registered decoder's name: ``"pymatching"``, ``"bposd"``, ``"bp-gpu"``."""

DEFAULT_DECODER_SERVICE: Final = "decode"
"""The service name decoder workers serve and streams send to, unless told otherwise."""
