"""Build a registered decoder by name: :func:`make_decoder`.

Each decoder's class is imported when it is first asked for (:mod:`decoders.names` says
where it lives), so building one loads only that decoder's library.
"""

from __future__ import annotations

import importlib
import inspect

from decoders.contract import Decoder
from decoders.errors import BadOption, UnknownDecoder
from decoders.names import DECODER_CLASSES, DECODER_NAMES


def decoder_class(name: str) -> type[Decoder]:
    """The class registered as ``name`` (imported now).

    Raises:
        UnknownDecoder: no decoder is registered under ``name`` (the error lists the names).
    """
    try:
        module, attr = DECODER_CLASSES[name]
    except KeyError:
        raise UnknownDecoder(name, valid=sorted(DECODER_NAMES)) from None
    cls: type[Decoder] = getattr(importlib.import_module(module), attr)
    return cls


def decoder_options(name: str) -> tuple[str, ...]:
    """The keyword options that decoder ``name`` takes.

    Raises:
        UnknownDecoder: no decoder is registered under ``name``.
    """
    params = inspect.signature(decoder_class(name)).parameters.values()
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
    decoder: Decoder = decoder_class(name)(**options)
    return decoder
