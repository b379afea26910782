"""The wire layer: frames, header, arrays, limits, wire errors and transport helpers.

Everything here is pure (encode, parse, check) except :mod:`client.wire.transport`, the
socket plumbing. The broker imports this subpackage alone; the client library, the
workers and the control runtime build on it. ``docs/PROTOCOL.md`` is the normative
description; these modules are its executable twin.

Names are imported on first use (``client/wire/__init__.pyi`` lists them), so a command
line that needs only the limits (its defaults) loads neither numpy nor ZeroMQ.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
