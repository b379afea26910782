"""The decoders' errors: one base class, subclasses that carry their fields.

Every error names the decoder it came from (``decoder``). The ones a producer must hear
about are also the client's error reply of that type (:mod:`client.errors`): a worker
that raises :class:`InvalidBlock`, :class:`ModelNotFound` or :class:`ModelError` answers
the block with ``bad_block``, ``unknown_model`` or ``bad_model``, and the producer gets
:class:`client.errors.BadBlock`, :class:`~client.errors.UnknownModel` or
:class:`~client.errors.BadModel`.
"""

from __future__ import annotations

from collections.abc import Sequence

from client.errors import BadBlock, BadModel, UnknownModel
from client.syndrome_block import bad_block_message


class DecoderError(Exception):
    """Base of every error raised by :mod:`decoders`.

    Attributes:
        decoder: the decoder's registered name (``"pymatching"``, ``"bposd"``, ``"bp-gpu"``),
            or the name that was asked for when no such decoder exists.
    """

    def __init__(self, decoder: str, message: str) -> None:
        super().__init__(f"{decoder}: {message}")
        self.decoder = decoder


class InvalidBlock(DecoderError, BadBlock):
    """A block of detection events that is not what the compiled model expects.

    Raised before any decoding, so nothing was decoded.

    Attributes:
        what: which property is wrong: ``"type"``, ``"dtype"``, ``"ndim"`` or ``"width"``.
        expected: what the decoder wanted (a dtype name, an ndim, or ``(shots, width)``).
        got: what it received, in the same form.
    """

    def __init__(self, decoder: str, *, what: str, expected: object, got: object) -> None:
        super().__init__(decoder, bad_block_message(what, expected, got))
        self.what = what
        self.expected = expected
        self.got = got


class UndecodableBlock(DecoderError):
    """A well-formed block that the decoder could not decode under its model.

    For example, detection events that no error of the model can explain (PyMatching: "no
    perfect matching"), which means the block and the model do not belong together.

    Attributes:
        reason: what the underlying library said.
    """

    def __init__(self, decoder: str, *, reason: str) -> None:
        super().__init__(decoder, f"cannot decode the block under this model: {reason}")
        self.reason = reason


class BadPrediction(DecoderError):
    """A decoder produced predictions of the wrong dtype or shape (a decoder bug).

    Attributes:
        expected: ``("uint8", (shots, width))``.
        got: ``(dtype name, shape)`` of what the decoder returned.
    """

    def __init__(
        self,
        decoder: str,
        *,
        expected: tuple[str, tuple[int, ...]],
        got: tuple[str, tuple[int, ...]],
    ) -> None:
        super().__init__(decoder, f"decoder returned predictions {got!r}, expected {expected!r}")
        self.expected = expected
        self.got = got


class BadOption(DecoderError):
    """A decoder option that the decoder does not take, or a value it cannot use.

    Attributes:
        option: the keyword that was passed.
        value: its value.
        reason: why it was refused.
    """

    def __init__(self, decoder: str, *, option: str, value: object, reason: str) -> None:
        super().__init__(decoder, f"option {option}={value!r}: {reason}")
        self.option = option
        self.value = value
        self.reason = reason


class UnknownDecoder(DecoderError):
    """No decoder is registered under that name.

    Attributes:
        valid: the registered names.
    """

    def __init__(self, decoder: str, *, valid: Sequence[str]) -> None:
        super().__init__(
            decoder, f"no such decoder; valid names are {', '.join(repr(v) for v in valid)}"
        )
        self.valid = tuple(valid)


class ModelError(DecoderError, BadModel):
    """A detector error model that this decoder cannot compile.

    Attributes:
        reason: what the underlying library said.
    """

    def __init__(self, decoder: str, *, reason: str) -> None:
        super().__init__(decoder, f"cannot compile the detector error model: {reason}")
        self.reason = reason


class ModelNotFound(DecoderError, UnknownModel):
    """A block names a model hash whose text is not available.

    Attributes:
        model_hash: the sha256 hex the block carried.
    """

    def __init__(self, decoder: str, *, model_hash: str) -> None:
        super().__init__(decoder, f"unknown model {model_hash[:16]}…; send its text first")
        self.model_hash = model_hash


class ModelHashMismatch(ModelError):
    """A model's text does not hash to the hash it was announced under.

    Attributes:
        expected: the announced hash.
        got: the sha256 hex of the text that arrived.
    """

    def __init__(self, decoder: str, *, expected: str, got: str) -> None:
        reason = f"model text hashes to {got[:16]}…, but was announced as {expected[:16]}…"
        DecoderError.__init__(self, decoder, reason)
        self.reason = reason
        self.expected = expected
        self.got = got


class BackendUnavailable(DecoderError):
    """The array backend that was asked for cannot run here (no CuPy, or no GPU).

    Attributes:
        device: the device that was asked for.
        reason: why it is unavailable.
    """

    def __init__(self, decoder: str, *, device: str, reason: str) -> None:
        super().__init__(decoder, f"device {device!r} is unavailable: {reason}")
        self.device = device
        self.reason = reason
