"""Compiled decoders by model hash: each model is compiled once, the last few are kept.

A worker calls :meth:`ModelCache.get_or_compile` on every block with the block's model hash;
only a hash it has not seen (or has evicted) costs a compile, and only then is the model's
text asked for. The noise model can therefore change mid-stream without a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import stim

from client.wire import model_hash
from decoders.contract import CompiledDecoder, Decoder
from decoders.errors import ModelError, ModelHashMismatch, ModelNotFound

ModelSource = str | bytes | stim.DetectorErrorModel
"""What a text provider may return: the model's text (verified against the hash), or the
model already parsed from that text (trusted to be the model of that hash)."""

DEFAULT_MAX_MODELS: Final = 16
"""Compiled models kept per decoder before the least recently used is evicted."""


@dataclass(frozen=True)
class CacheStats:
    """Counts of a :class:`ModelCache`.

    Attributes:
        compiles: models compiled (misses that found their text).
        hits: lookups served from the cache.
        evictions: compiled models dropped to stay within ``max_models``.
        size: compiled models held now.
    """

    compiles: int
    hits: int
    evictions: int
    size: int


class ModelCache:
    """A bounded LRU of one decoder's compiled models, keyed by content hash.

    Not thread-safe: a worker owns one and calls it from its decode loop.

    Args:
        decoder: the decoder that compiles the models.
        max_models: how many compiled models to keep (>= 1).
    """

    def __init__(self, decoder: Decoder, *, max_models: int = DEFAULT_MAX_MODELS) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        self.decoder = decoder
        self.max_models = max_models
        self._compiled: OrderedDict[str, CompiledDecoder] = OrderedDict()
        self._compiles = 0
        self._hits = 0
        self._evictions = 0

    def get(self, model_hash: str) -> CompiledDecoder | None:
        """The compiled model for ``model_hash``, or None; a hit counts and refreshes it."""
        compiled = self._compiled.get(model_hash)
        if compiled is not None:
            self._compiled.move_to_end(model_hash)
            self._hits += 1
        return compiled

    def peek(self, model_hash: str) -> CompiledDecoder:
        """The compiled model for ``model_hash``, without counting a hit or refreshing it.

        Raises:
            KeyError: it is not in the cache.
        """
        return self._compiled[model_hash]

    def get_or_compile(
        self, model_hash: str, text_provider: Callable[[], ModelSource | None]
    ) -> CompiledDecoder:
        """The compiled model for ``model_hash``, compiling it on a miss.

        Args:
            model_hash: the sha256 hex the block carries (:func:`client.wire.model_hash`).
            text_provider: called only on a miss; returns the model's text (``str`` or UTF-8
                ``bytes``, checked against ``model_hash``), the model parsed from that text,
                or None if the model is not known.

        Raises:
            ModelNotFound: a miss, and ``text_provider`` returned None.
            ModelHashMismatch: the text does not hash to ``model_hash``.
            ModelError: the text does not parse, or the decoder cannot compile the model.
        """
        compiled = self.get(model_hash)
        if compiled is not None:
            return compiled
        source = text_provider()
        if source is None:
            raise ModelNotFound(self.decoder.name, model_hash=model_hash)
        return self._add(model_hash, source)

    def add_text(self, dem_text: str) -> CompiledDecoder:
        """Compile a model announced by its text (once), and return it."""
        key = model_hash(dem_text)
        return self.get(key) or self._add(key, dem_text)

    def _add(self, key: str, source: ModelSource) -> CompiledDecoder:
        if isinstance(source, stim.DetectorErrorModel):
            compiled = self.decoder.compile_dem(source, model_hash=key)
        else:
            got = model_hash(source)
            if got != key:
                raise ModelHashMismatch(self.decoder.name, expected=key, got=got)
            try:
                text = source.decode("utf-8") if isinstance(source, bytes) else source
            except UnicodeDecodeError as exc:
                raise ModelError(self.decoder.name, reason=f"text is not UTF-8: {exc}") from exc
            compiled = self.decoder.compile_text(text)
        self._compiles += 1
        self._compiled[key] = compiled
        while len(self._compiled) > self.max_models:
            self._compiled.popitem(last=False)
            self._evictions += 1
        return compiled

    @property
    def stats(self) -> CacheStats:
        """Compiles, hits, evictions and size, now."""
        return CacheStats(self._compiles, self._hits, self._evictions, len(self._compiled))

    def __contains__(self, model_hash: object) -> bool:
        return model_hash in self._compiled

    def __len__(self) -> int:
        return len(self._compiled)

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<ModelCache {self.decoder.name} {s.size}/{self.max_models} models "
            f"compiles={s.compiles} hits={s.hits} evictions={s.evictions}>"
        )
