"""nearloop broker: a Majordomo (MDP/0.1 + MDP/0.2) hub with credit, liveness and bounded queues.

Names are imported on first use (``broker/__init__.pyi`` lists them), so ``python -m
broker --help`` loads no ZeroMQ.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
