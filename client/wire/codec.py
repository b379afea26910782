"""msgpack in and out of the wire, within its limits, and bounded texts for its errors.

The header frame and the READY options frame are msgpack maps; both are decoded here, so
that every msgpack frame is refused the same way.
"""

from __future__ import annotations

import reprlib
from typing import Any, Final

import msgpack

from client.wire.errors import ProtocolError
from client.wire.limits import MAX_HEADER_BYTES

packer: Final = msgpack.Packer(use_bin_type=True)
"""The one packer for header-like frames (``bin`` for bytes, ``str`` for text)."""


def unpack(frame: Any, what: str) -> Any:
    """Decode one msgpack frame of at most MAX_HEADER_BYTES; ProtocolError names ``what``."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(f"{what} of {len(frame)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ProtocolError(f"{what} is not valid msgpack: {exc}") from exc


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxdict = 3, 40, 40, 6, 6


def short(value: Any) -> str:
    """A bounded repr for error texts: never huge, never recursing deep.

    >>> short("x" * 100)
    "'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'"
    """
    return _repr.repr(value)


def text(s: str) -> str:
    """A string msgpack can always encode (lone surrogates escaped)."""
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


def int_field(value: Any, name: str) -> int:
    """``value`` if it is exactly an ``int``, else ProtocolError naming the field."""
    if type(value) is not int:
        raise ProtocolError(f"{name} must be an integer, got {type(value).__name__}")
    return value
