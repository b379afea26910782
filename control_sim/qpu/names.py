"""The ``qpu`` service's default name.

It imports nothing, so command lines show it without loading numpy (the schema,
:mod:`control_sim.qpu.schema`, does); :mod:`decoders.names` is its twin for decoders.
"""

from __future__ import annotations

from typing import Final

DEFAULT_SERVICE: Final = "qpu"
"""The service name a QPU worker registers under, and its clients call, unless told
otherwise."""
