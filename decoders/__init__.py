"""nearloop decoders: the compile-once, decode-many contract and its implementations.

``pymatching`` (MWPM), ``bposd`` (ldpc BP+OSD) and ``bp-gpu`` (batched min-sum BP on
CuPy or numpy, with ldpc's OSD as fallback) all decode bit-packed blocks of detection
events into bit-packed observable predictions; see :mod:`decoders.contract`.

Names are imported on first use (``decoders/__init__.pyi`` lists them), so the command
line and :mod:`decoders.registry` load no decoder library until one is built.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
