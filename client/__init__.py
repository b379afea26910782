"""nearloop's client library: Client, AsyncClient, Worker, sessions and streams.

Names are imported on first use (``client/__init__.pyi`` lists them), so a process that
needs only the wire layer (:mod:`client.wire`), such as the broker, loads nothing else.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
