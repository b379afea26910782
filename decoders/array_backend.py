"""The array backend of ``bp-gpu``: numpy on the CPU, CuPy on a CUDA GPU.

``bp-gpu`` is written once against the array API standard through ``array_api_compat``
(``array_namespace``); this module is the one place that knows which library is behind it
and papers over what the standard leaves out:

- **Choosing and reaching a device.** The standard has no "is a GPU here?"; we import CuPy
  and ask the CUDA runtime for a device count.
- **Host <-> device copies.** ``xp.asarray(numpy_array)`` uploads on CuPy; the way back is
  ``array_api_compat.to_device(x, "cpu")`` (CuPy's ``.get()``), since CuPy refuses the
  implicit ``np.asarray`` and ``np.from_dlpack`` of device memory; other CPU namespaces go
  through ``np.from_dlpack``.
- **Synchronising** for honest timings: CuPy's kernels are asynchronous.
- **Scatter-add** (numpy ``np.add.at``, CuPy ``cupyx.scatter_add``) is not in the standard.
  ``bp-gpu`` needs none: its Tanner graph is laid out as padded per-check and per-bit index
  tables, so every reduction is a gather (``xp.take``) followed by ``xp.sum``/``xp.min``
  along an axis, which is deterministic as well (no atomics).
- **Bit unpacking** (``np.unpackbits``) is not in the standard either: done here with
  shifts, so packed bytes (8x fewer) are what crosses the bus.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from array_api_compat import array_namespace, to_device

from decoders.errors import BackendUnavailable, BadOption

Array = Any
"""An array of whichever namespace the backend uses (numpy or CuPy)."""

DeviceName = Literal["auto", "cpu", "cuda"]
DEVICES: Final[tuple[str, ...]] = ("auto", "cpu", "cuda")


def cuda_status() -> tuple[bool, str]:
    """``(True, device description)`` if CuPy imports and sees a GPU, else ``(False, why)``."""
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        return False, f"cupy is not installed ({exc})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError when there is no driver or no device
        return False, f"CUDA runtime error: {exc}"
    if count < 1:
        return False, "no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return True, name.decode() if isinstance(name, bytes) else str(name)


@dataclass(frozen=True)
class Backend:
    """An array namespace and how to reach its device.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array-API namespace (``array_api_compat.numpy`` or ``array_api_compat.cupy``).
        description: the device, in words (CPU, or the GPU's name).
    """

    name: str
    xp: Any
    description: str

    @property
    def is_gpu(self) -> bool:
        """Whether arrays live on a GPU."""
        return self.name == "cupy"

    def asarray(self, host: npt.NDArray[Any]) -> Array:
        """Copy a host numpy array to the backend's device (no copy on numpy)."""
        return self.xp.asarray(host)

    def to_host(self, x: Array) -> npt.NDArray[Any]:
        """Copy an array of this backend back to a host numpy array (no copy on numpy)."""
        if self.is_gpu:
            return np.asarray(to_device(x, "cpu"))
        if self.name == "numpy":
            return np.asarray(x)
        return np.from_dlpack(x)  # any other CPU namespace, e.g. array-api-strict in tests

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on numpy)."""
        if self.is_gpu:
            cupy = importlib.import_module("cupy")
            cupy.cuda.get_current_stream().synchronize()


def resolve_backend(device: DeviceName | str, *, decoder: str) -> Backend:
    """The backend for ``device``: ``"cpu"`` numpy, ``"cuda"`` CuPy, ``"auto"`` CuPy if usable.

    Args:
        device: one of :data:`DEVICES`.
        decoder: the decoder asking, named in the errors.

    Raises:
        BadOption: ``device`` is not one of :data:`DEVICES`.
        BackendUnavailable: ``"cuda"`` was asked for and CuPy or a GPU is missing.
    """
    if device not in DEVICES:
        raise BadOption(decoder, option="device", value=device, reason=f"one of {DEVICES}")
    if device in ("cuda", "auto"):
        ok, why = cuda_status()
        if ok:
            cupy = importlib.import_module("cupy")
            return Backend("cupy", array_namespace(cupy.empty(0)), why)
        if device == "cuda":
            raise BackendUnavailable(decoder, device=device, reason=why)
    return Backend("numpy", array_namespace(np.empty(0)), "cpu")


def xp_unpack_bits(xp: Any, packed: Array, num_bits: int) -> Array:
    """``(shots, bytes)`` uint8 in stim's little bit order -> ``(shots, num_bits)`` bool."""
    shifts = xp.asarray(np.arange(8, dtype=np.uint8))
    bits = xp.bitwise_and(
        xp.bitwise_right_shift(packed[:, :, None], shifts), xp.asarray(1, dtype=xp.uint8)
    )
    bits = xp.reshape(bits, (packed.shape[0], packed.shape[1] * 8))
    return bits[:, :num_bits] == 1
