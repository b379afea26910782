"""Integer arguments of the QEC runtime's constructors, checked: :func:`check_int`."""

from __future__ import annotations

import numpy as np


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
