"""The registered decoders, by name, and :func:`make_decoder`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from decoders.bp_gpu import BpGpuDecoder
from decoders.bposd_decoder import BpOsdDecoder
from decoders.contract import Decoder
from decoders.errors import BadOption, UnknownDecoder
from decoders.pymatching_decoder import PyMatchingDecoder

DECODERS: Final[Mapping[str, type[Decoder]]] = MappingProxyType(
    {cls.name: cls for cls in (PyMatchingDecoder, BpOsdDecoder, BpGpuDecoder)}
)
"""Decoder classes by registered name: ``"pymatching"``, ``"bposd"``, ``"bp-gpu"``."""


def decoder_options(name: str) -> tuple[str, ...]:
    """The keyword options that decoder ``name`` takes.

    Raises:
        UnknownDecoder: no decoder is registered under ``name``.
    """
    try:
        cls = DECODERS[name]
    except KeyError:
        raise UnknownDecoder(name, valid=sorted(DECODERS)) from None
    params = inspect.signature(cls).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_decoder(name: str, /, **options: object) -> Decoder:
    """Build the decoder registered as ``name`` with keyword ``options``.

    >>> make_decoder("bposd", osd_method="osd0", osd_order=0).options()["osd_method"]
    'osd0'

    Raises:
        UnknownDecoder: no decoder is registered under ``name`` (the error lists the names).
        BadOption: an option the decoder does not take, or a value it refuses.
        BackendUnavailable: ``bp-gpu`` with ``device="cuda"`` where there is no GPU.
    """
    accepted = decoder_options(name)
    for option, value in options.items():
        if option not in accepted:
            raise BadOption(
                name,
                option=option,
                value=value,
                reason=f"not an option of {name}; it takes {', '.join(accepted) or 'none'}",
            )
    decoder: Decoder = DECODERS[name](**options)
    return decoder
