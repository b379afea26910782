"""Argument checks the control runtime's modules share."""

from __future__ import annotations

from typing import Final

import numpy as np

SEED_BOUND: Final = 2**31
"""Simulator seeds lie in ``[0, SEED_BOUND)``: aer's ``seed_simulator`` is a C++ int.
The evaluator, its clients and continuous runs all draw and wrap seeds in this range, so
one seed gives the same per-call seeds through the service as in-process."""


def check_int(name: str, value: object, minimum: int, *, unit: str = "") -> int:
    """``value`` as an ``int`` if it is an integer >= ``minimum``, else ``ValueError``.

    numpy integers pass (shot counts often come out of numpy); ``bool`` does not, since
    ``distance=True`` is a bug, not a distance of 1. ``unit`` (``"us"``) goes in the message.

    >>> check_int("shots", np.int64(5), 1)
    5
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        what = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be an int >= {minimum}{what}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{' ' + unit if unit else ''}, got {value}")
    return int(value)
