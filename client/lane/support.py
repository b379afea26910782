"""Whether this process can use lanes, asked without importing iceoryx2 until needed."""

from __future__ import annotations

import os
from typing import Final

NO_LANE_ENV: Final = "NEARLOOP_NO_LANE"
"""Set (to anything but empty) to act as if the lane extra were missing."""


def lane_support_missing() -> str | None:
    """Why this process cannot open lanes (the lane extra is not installed, or
    ``NEARLOOP_NO_LANE`` is set), or None if it can."""
    if os.environ.get(NO_LANE_ENV):
        return f"{NO_LANE_ENV} is set"
    from client.lane.iox import iceoryx2_missing

    return iceoryx2_missing()
