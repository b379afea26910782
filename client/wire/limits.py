"""Every limit of the wire protocol, declared once; checked before anything is sent.

PROTOCOL.md §5 lists them with their reasons. Liveness defaults live here too: they are
limits on time.
"""

from __future__ import annotations

from typing import Final

# --- Sizes ---------------------------------------------------------------------------------

MAX_SERVICE_NAME_BYTES: Final = 255
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_ARRAYS: Final = 64
MAX_ARRAY_NDIM: Final = 32
MAX_FRAMES: Final = MAX_ARRAYS + 8
MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024
MAX_CREDIT: Final = 4096
MAX_ERROR_TEXT: Final = 4096
"""Characters of an error message, and of a traceback's tail, that an error reply carries."""
ZERO_COPY_THRESHOLD_BYTES: Final = 64 * 1024
INLINE_ARRAY_MAX_BYTES: Final = 4096
"""Arrays this small travel inside the header, not as frames of their own (§3.3)."""
INLINE_TOTAL_MAX_BYTES: Final = 16 * 1024
"""Bound on the inline array bytes of one header, well inside MAX_HEADER_BYTES."""
MAX_MODEL_BYTES: Final = 16 * 1024 * 1024
"""One noise model's text (a d=15 surface-code DEM is about 1.2 MB)."""
MAX_MODELS: Final = 64
MAX_MODEL_STORE_BYTES: Final = 256 * 1024 * 1024
"""What the broker's model store holds at most; the least recently used model goes first."""
MAX_SESSIONS: Final = 4096
"""Sessions one broker holds at most by default (``--max-sessions``), lost ones included."""

# --- Liveness ------------------------------------------------------------------------------

DEFAULT_HEARTBEAT_MS: Final = 250
DEFAULT_LIVENESS: Final = 3
PLAIN_PEER_HEARTBEAT_MS: Final = 2500
"""The RFC reference code heartbeats every 2.5 s; peers that declare nothing get this much."""
MIN_HEARTBEAT_MS: Final = 5
MAX_HEARTBEAT_MS: Final = 60_000
MAX_LIVENESS: Final = 100

# --- Lanes (PROTOCOL.md §3.10) --------------------------------------------------------------

MAX_HOST_ID_CHARS: Final = 128
"""A worker's declared host identity and each lane transport name are at most this long."""
MAX_LANE_TRANSPORTS: Final = 8
"""A worker declares at most this many lane transports."""
MAX_DECLARED_GIDS: Final = 256
"""A peer declares at most this many groups for lanes (its effective gid first)."""
MAX_UNIX_ID: Final = 2**32 - 1
"""The largest uid or gid a peer may declare."""
MAX_LANES_CLOSED: Final = 4096
"""A HEARTBEAT lists at most this many closed lane sessions."""
