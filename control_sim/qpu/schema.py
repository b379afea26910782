"""The ``qpu`` service's wire schema: its ops, and the fields of their bodies.

One home for what docs/QPU_SERVICE.md describes: the service, the client, sessions and
continuous mode all build and read bodies through this module.
"""

from __future__ import annotations

from typing import Final

DEFAULT_SERVICE: Final = "qpu"
"""The service name a QPU worker registers under unless told otherwise."""

SEED_BOUND: Final = 2**31
"""Simulator seeds lie in ``[0, SEED_BOUND)``: aer's ``seed_simulator`` is a C++ int.
The evaluator, its clients and continuous runs all draw and wrap seeds in this range, so
one seed gives the same per-call seeds through the service as in-process."""
