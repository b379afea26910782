"""The decoder service behind ``python -m decoders``: stream blocks in, predictions out.

:class:`DecoderService` is the batch handler a :class:`client.Worker` calls with the blocks
its dynamic batcher gathered. It compiles each noise model once (keyed by the hash the
blocks carry, fetching the text from the broker's model store on first sight), decodes
all the blocks of one model in one ``decode_batch`` call, and answers each block with
its own slice of the predictions. A block it cannot decode gets an error of its own; the
others in the batch are decoded as usual. Blocks and results are read and built with
:mod:`client.syndrome_block`, the schema the producer shares.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from client.messages import Message, Payload
from client.syndrome_block import BlockRequest, read_request, reply_body
from decoders.contract import CompiledDecoder, Decoder, check_block
from decoders.metrics import DecodeMetrics
from decoders.model_cache import ModelCache

log = logging.getLogger("nearloop.decoders")

ModelFetcher = Callable[[str], bytes]
"""Returns the text of the model with this hash; raises
:class:`client.errors.UnknownModel` if there is none."""


class DecoderService:
    """Decode stream blocks with one decoder; every model compiled once.

    ``fetch_model`` gets a model's text by hash (the broker's ``nl.model.get``).
    """

    def __init__(self, decoder: Decoder, fetch_model: ModelFetcher, *, max_models: int = 16):
        self.decoder = decoder
        self.fetch_model = fetch_model
        self.cache = ModelCache(decoder, max_models=max_models)
        self.blocks = 0
        self.batches = 0
        self.metrics = DecodeMetrics(decoder.name)
        """Decode time and batch size, for ``/metrics`` (:mod:`decoders.metrics`)."""

    def handle_batch(self, messages: list[Message]) -> list[Any]:
        """One Payload (or exception) per block, in order."""
        results: list[Any] = [None] * len(messages)
        groups: dict[str, list[tuple[int, BlockRequest]]] = {}
        for i, m in enumerate(messages):
            try:
                block = self._check(m)
            except Exception as exc:
                results[i] = exc
                continue
            groups.setdefault(block.model, []).append((i, block))
        for h, members in groups.items():
            self._decode_group(self.cache.peek(h), members, results)
        self.blocks += len(messages)
        self.batches += 1
        metrics = self.metrics
        metrics.blocks += len(messages)
        metrics.errors += sum(isinstance(r, BaseException) for r in results)
        return results

    def _check(self, m: Message) -> BlockRequest:
        # Each raises an error reply of its own type (client.errors.RemoteError): a body
        # that is not a block's, an unknown or unusable model, or a block of the wrong
        # width for it.
        block = read_request(m)
        compiled = self.cache.get_or_compile(block.model, lambda: self._fetch(block.model))
        dets = check_block(self.decoder.name, block.detections, compiled.num_detectors)
        return block._replace(detections=dets)

    def _fetch(self, h: str) -> bytes:
        text = self.fetch_model(h)
        log.info("compiling model %s (%d bytes)", h[:12], len(text))
        return text

    def _decode_group(
        self,
        compiled: CompiledDecoder,
        members: list[tuple[int, BlockRequest]],
        results: list[Any],
    ) -> None:
        blocks = [block.detections for _, block in members]
        dets = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        t0 = time.perf_counter_ns()
        try:
            predictions = compiled.decode_batch(dets)
        except Exception as exc:  # a decoder bug fails this model's blocks, not the worker
            for i, _ in members:
                results[i] = exc
            return
        decode_ns = time.perf_counter_ns() - t0
        self.metrics.decoded(ns=decode_ns, shots=int(dets.shape[0]))
        decode_us = decode_ns // 1000
        start = 0
        for i, block in members:
            end = start + block.detections.shape[0]
            body = reply_body(
                block,
                decoder=self.decoder.name,
                batch_shots=int(dets.shape[0]),
                batch_blocks=len(members),
                decode_us=decode_us,
            )
            results[i] = Payload(body=body, arrays=(predictions[start:end],))
            start = end

    def __repr__(self) -> str:
        return (
            f"DecoderService({self.decoder.name}, models={len(self.cache)}, "
            f"blocks={self.blocks}, batches={self.batches})"
        )


def block_shots(m: Message) -> int:
    """A block's weight for the dynamic batcher: its number of shots."""
    return int(m.arrays[0].shape[0]) if m.arrays and m.arrays[0].ndim else 1
