"""CURVE keys for a peer (ZeroMQ RFC 26): what ``curve=(client_cert, broker_public_key)`` means.

A peer (client, worker, stream, decoder, QPU worker) that talks to a broker's CURVE
endpoint needs three keys: its own public and secret key, from its *secret* certificate
file (``NAME.key_secret``, which holds both, as ``zmq.auth.create_certificates`` writes
it), and the broker's public key, from the broker's *public* certificate file
(``NAME.key``) or given directly as its 40-character Z85 text. :func:`load_curve` reads
them once, with ``zmq.auth``'s own reader, and :func:`apply_curve` sets them on a socket
before it connects (``client.wire.transport.connect_dealer(..., curve=...)``).

Every failure is a :class:`KeyFileError` (a ``ValueError``) that names the file and says
what is wrong with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeAlias

import zmq
import zmq.auth
from zmq.utils import z85

Z85_KEY_CHARS: Final = 40
"""The length of a CURVE key in Z85 text (32 bytes of key)."""

KeyPath: TypeAlias = str | os.PathLike[str]
CurveSpec: TypeAlias = tuple[str | os.PathLike[str], str | os.PathLike[str] | bytes]
"""``(client_cert, broker_public_key)``: the path of the peer's secret certificate
(``NAME.key_secret``), and the broker's public certificate (``NAME.key``) as a path, or
its public key as 40 bytes of Z85."""


class KeyFileError(ValueError):
    """A certificate file that is missing, unreadable, not a certificate, or of the wrong
    kind (public where a secret one is needed). The message names the file."""

    def __init__(self, path: KeyPath | bytes, problem: str) -> None:
        shown = path.decode(errors="replace") if isinstance(path, bytes) else os.fspath(path)
        super().__init__(f"{shown}: {problem}")
        self.path = shown
        self.problem = problem


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """A peer's CURVE keys, each 40 bytes of Z85: its own pair and the broker's public key."""

    public: bytes
    secret: bytes
    server: bytes

    def __post_init__(self) -> None:
        for name in ("public", "secret", "server"):
            if not _is_z85_key(getattr(self, name)):
                raise ValueError(f"{name} must be a {Z85_KEY_CHARS}-character Z85 key")

    def __repr__(self) -> str:  # never print the secret key
        return f"CurveKeys(public={self.public.decode()!r}, server={self.server.decode()!r})"


def _is_z85_key(key: bytes) -> bool:
    if len(key) != Z85_KEY_CHARS:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def read_certificate(path: KeyPath) -> tuple[bytes, bytes | None]:
    """``(public_key, secret_key or None)`` of the certificate file at ``path``, each Z85.

    Raises :class:`KeyFileError` if the file is missing, unreadable, or holds no valid
    public key.
    """
    p = Path(path)
    if not p.exists():
        raise KeyFileError(path, "no such certificate file")
    if not p.is_file():
        raise KeyFileError(path, "not a file")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except OSError as exc:
        raise KeyFileError(path, f"cannot read it: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(path, "not a ZeroMQ certificate (no public-key line)") from None
    if not _is_z85_key(public):
        raise KeyFileError(path, "not a ZeroMQ certificate (its public key is not Z85)")
    if secret is not None and not _is_z85_key(secret):
        raise KeyFileError(path, "not a ZeroMQ certificate (its secret key is not Z85)")
    return public, secret


def read_secret_certificate(path: KeyPath) -> tuple[bytes, bytes]:
    """``(public_key, secret_key)`` from a secret certificate (``NAME.key_secret``)."""
    public, secret = read_certificate(path)
    if secret is None:
        raise KeyFileError(
            path, "a public certificate, where a secret one (NAME.key_secret) is needed"
        )
    return public, secret


def read_public_key(key: KeyPath | bytes) -> bytes:
    """A public key: 40 bytes of Z85 as given, or read from a certificate file."""
    if isinstance(key, bytes):
        if not _is_z85_key(key):
            raise KeyFileError(key[:60], f"not a {Z85_KEY_CHARS}-character Z85 public key")
        return key
    return read_certificate(key)[0]


def load_curve(spec: CurveSpec) -> CurveKeys:
    """Read ``(client_cert, broker_public_key)`` (:data:`CurveSpec`) into :class:`CurveKeys`.

    >>> load_curve(("/nonexistent/me.key_secret", b"x"))
    Traceback (most recent call last):
    ...
    client.wire.curve.KeyFileError: /nonexistent/me.key_secret: no such certificate file
    """
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(
            f"curve must be (client_cert, broker_public_key), got {type(spec).__name__}"
        )
    public, secret = read_secret_certificate(spec[0])
    return CurveKeys(public=public, secret=secret, server=read_public_key(spec[1]))


def apply_curve(sock: zmq.Socket[Any], keys: CurveKeys) -> None:
    """Make ``sock`` a CURVE client of the server whose public key ``keys`` holds; set it
    before ``connect``."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
