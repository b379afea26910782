"""The broker's content-addressed store of noise models (``nl.model.put`` / ``nl.model.get``).

A stream registers its model here once; blocks carry only the model's hash, and a
decoder worker that meets a hash it has not compiled fetches the text from here, once.
The store is bounded in models and bytes, and lets the least recently used model go.
"""

from __future__ import annotations

from collections import OrderedDict

from broker.errors import ModelRefused
from client.wire import MAX_MODEL_BYTES, MAX_MODEL_STORE_BYTES, MAX_MODELS, model_hash


class ModelStore:
    """Model texts by content hash, least recently used first out.

    >>> s = ModelStore()
    >>> h = s.put(model_hash(b"error(0.1) D0"), b"error(0.1) D0")
    >>> s.get(h)
    b'error(0.1) D0'
    """

    def __init__(
        self, *, max_models: int = MAX_MODELS, max_bytes: int = MAX_MODEL_STORE_BYTES
    ) -> None:
        if max_models < 1 or max_bytes < 1:
            raise ValueError("the model store needs room for at least one model")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._models: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def put(self, claimed_hash: str, text: bytes) -> str:
        """Store ``text`` under its hash, which must equal ``claimed_hash``; returns it."""
        if len(text) > min(MAX_MODEL_BYTES, self.max_bytes):
            raise ModelRefused(
                f"model of {len(text)} bytes exceeds {min(MAX_MODEL_BYTES, self.max_bytes)}"
            )
        actual = model_hash(text)
        if actual != claimed_hash:
            raise ModelRefused(f"model text hashes to {actual}, not the claimed {claimed_hash}")
        if actual in self._models:
            self._models.move_to_end(actual)
            return actual
        self._models[actual] = text
        self._bytes += len(text)
        while len(self._models) > self.max_models or self._bytes > self.max_bytes:
            _, old = self._models.popitem(last=False)
            self._bytes -= len(old)
            self.evicted += 1
        return actual

    def get(self, h: str) -> bytes | None:
        """The text stored under hash ``h``, or None."""
        text = self._models.get(h)
        if text is not None:
            self._models.move_to_end(h)
        return text

    def __len__(self) -> int:
        return len(self._models)

    @property
    def nbytes(self) -> int:
        """Bytes of model text held."""
        return self._bytes

    def __repr__(self) -> str:
        return f"ModelStore({len(self)} models, {self._bytes} bytes, evicted={self.evicted})"
