"""Numpy arrays on the wire: their specs (dtype and shape), and how they become frames.

An array travels as a raw frame of its bytes, or, when small, inline in the header
(PROTOCOL.md §3.3); the header lists every array's spec either way. The receiver rebuilds
arrays as views over the received memory, without copying.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np

from client.wire.codec import short
from client.wire.errors import ProtocolError
from client.wire.frames import Frame
from client.wire.limits import (
    INLINE_ARRAY_MAX_BYTES,
    INLINE_TOTAL_MAX_BYTES,
    MAX_ARRAY_NDIM,
    MAX_ARRAYS,
)

ALLOWED_DTYPES: Final = frozenset(
    ["|b1", "|i1", "|u1"]
    + [f"{order}{kind}{size}" for order in "<>" for kind in "iu" for size in (2, 4, 8)]
    + [f"{order}{kind}" for order in "<>" for kind in ("f2", "f4", "f8", "c8", "c16")]
)
"""Canonical numpy ``dtype.str`` spellings on the wire: bool, integers, IEEE floats and
complex, either byte order. Never objects (no pickle, ever), never platform-sized types."""


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """dtype and shape of one raw array frame."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int = field(init=False, repr=False, compare=False)
    """Size in bytes of an array of this spec."""
    np_dtype: np.dtype[Any] = field(init=False, repr=False, compare=False)
    """The parsed numpy dtype."""

    def __post_init__(self) -> None:
        if self.dtype not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"dtype {self.dtype!r} is not one of the wire dtypes {sorted(ALLOWED_DTYPES)}"
            )
        dt = np.dtype(self.dtype)
        if len(self.shape) > MAX_ARRAY_NDIM:
            raise ProtocolError(f"array has {len(self.shape)} dimensions, max {MAX_ARRAY_NDIM}")
        if any(type(n) is not int or n < 0 for n in self.shape):
            raise ProtocolError(f"bad array shape {self.shape!r}")
        object.__setattr__(self, "nbytes", dt.itemsize * math.prod(self.shape))
        object.__setattr__(self, "np_dtype", dt)


_specs: dict[tuple[str, tuple[int, ...]], ArraySpec] = {}
_SPEC_CACHE_SIZE: Final = 4096


def array_spec(dtype: str, shape: tuple[int, ...]) -> ArraySpec:
    """A validated ArraySpec; loops send the same few specs, so they are validated once."""
    key = (dtype, shape)
    spec = _specs.get(key)
    if spec is None:
        spec = ArraySpec(dtype, shape)
        if len(_specs) >= _SPEC_CACHE_SIZE:
            _specs.clear()
        _specs[key] = spec
    return spec


def parse_specs(raw: Any) -> tuple[tuple[ArraySpec, ...], tuple[bytes | None, ...]]:
    """The header's ``arrays`` list as specs, and each array's inline bytes (None for a
    framed one; an empty tuple when none is inline). Raises ProtocolError."""
    if type(raw) is not list or len(raw) > MAX_ARRAYS:
        raise ProtocolError(f"header arrays must be a list of at most {MAX_ARRAYS}")
    specs = []
    inline: list[bytes | None] = []
    any_inline = False
    for a in raw:
        if type(a) is not list or not 2 <= len(a) <= 3 or type(a[1]) is not list:
            raise ProtocolError(f"bad array spec {short(a)}")
        key = (a[0], tuple(a[1]))  # unhashable parts raise TypeError: parse_header's guard
        spec = _specs.get(key)
        if spec is None:  # a spec not seen before: check it in full
            if type(a[0]) is not str or not all(type(n) is int for n in a[1]):
                raise ProtocolError(f"bad array spec {short(a)}")
            spec = array_spec(*key)
        specs.append(spec)
        if len(a) == 3:
            data = a[2]
            if type(data) is not bytes or len(data) != spec.nbytes:
                raise ProtocolError(
                    f"inline data of {spec.dtype}{list(spec.shape)} must be bin of "
                    f"{spec.nbytes} bytes, got {short(data)}"
                )
            any_inline = True
            inline.append(data)
        else:
            inline.append(None)
    return tuple(specs), (tuple(inline) if any_inline else ())


class PackedArrays(NamedTuple):
    """Arrays ready to send: the header's specs and inline bytes, and the frames after it."""

    specs: tuple[ArraySpec, ...]
    inline: tuple[bytes | None, ...]
    """As :attr:`client.wire.header.Header.inline`: empty when no array is inline."""
    frames: list[memoryview]


def arrays_to_frames(arrays: Sequence[Any]) -> PackedArrays:
    """Describe numpy arrays and expose their memory, copying only to make them
    C-contiguous. Arrays of at most INLINE_ARRAY_MAX_BYTES go inside the header, up to
    INLINE_TOTAL_MAX_BYTES in all (each frame costs every process hop a little); the
    others become frames."""
    if len(arrays) > MAX_ARRAYS:
        raise ProtocolError(f"{len(arrays)} arrays, max {MAX_ARRAYS}")
    specs = []
    inline: list[bytes | None] = []
    frames = []
    inline_left = INLINE_TOTAL_MAX_BYTES
    for a in arrays:
        arr = a if type(a) is np.ndarray else np.asarray(a)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")  # (np.ascontiguousarray would turn 0-d into 1-d)
        spec = array_spec(arr.dtype.str, arr.shape)
        specs.append(spec)
        nbytes = spec.nbytes
        if nbytes <= INLINE_ARRAY_MAX_BYTES and nbytes <= inline_left:
            inline_left -= nbytes
            inline.append(arr.tobytes())  # small: a copy costs less than a memoryview
        else:
            inline.append(None)
            frames.append(arr.reshape(-1).data.cast("B") if nbytes else memoryview(b""))
    if len(frames) == len(specs):
        return PackedArrays(tuple(specs), (), frames)  # nothing went inline
    return PackedArrays(tuple(specs), tuple(inline), frames)


def frames_to_arrays(
    specs: Sequence[ArraySpec], frames: Sequence[Frame], inline: Sequence[bytes | None] = ()
) -> tuple[Any, ...]:
    """Rebuild arrays as views over the received frames' memory (or the header's inline
    bytes), without copying. ``inline`` is
    :attr:`client.wire.header.Header.inline`."""
    if inline:
        return _with_inline(specs, frames, inline)
    if len(specs) != len(frames):
        raise ProtocolError(f"header lists {len(specs)} arrays but {len(frames)} frames follow")
    out = []
    for spec, frame in zip(specs, frames):  # noqa: B905 (lengths checked above)
        size = len(frame)
        if size != spec.nbytes:
            raise ProtocolError(
                f"array frame of {size} bytes does not match {spec.dtype}{list(spec.shape)} "
                f"({spec.nbytes} bytes)"
            )
        a = np.frombuffer(getattr(frame, "buffer", frame), dtype=spec.np_dtype)
        out.append(a if len(spec.shape) == 1 else a.reshape(spec.shape))
    return tuple(out)


def _with_inline(
    specs: Sequence[ArraySpec], frames: Sequence[Frame], inline: Sequence[bytes | None]
) -> tuple[Any, ...]:
    n_framed = len(specs) - (len(inline) - inline.count(None))
    if n_framed != len(frames):
        raise ProtocolError(f"header lists {n_framed} arrays but {len(frames)} frames follow")
    out = []
    i = 0
    for spec, data in zip(specs, inline, strict=True):
        if data is None:
            out.append(frames_to_arrays((spec,), (frames[i],))[0])
            i += 1
            continue
        # Its length was checked by parse_header; a copy, writable like a frame's.
        a = np.frombuffer(bytearray(data), dtype=spec.np_dtype)
        out.append(a if len(spec.shape) == 1 else a.reshape(spec.shape))
    return tuple(out)
