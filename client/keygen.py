"""``nearloop keygen DIR NAME``: write a CURVE key pair as ZeroMQ certificate files.

The pair is ``DIR/NAME.key`` (the public certificate, to hand to the other side: a
broker's to its peers, a peer's to the broker's allow-list) and ``DIR/NAME.key_secret``
(both keys, mode 0600, never to leave its owner), written by
``zmq.auth.create_certificates``. ``DIR`` is created with mode 0700 if it does not exist;
an existing pair is never overwritten.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import zmq.auth

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


class KeygenError(ValueError):
    """The pair cannot be written: it exists already, or ``DIR`` is not usable."""


def keygen(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` and ``DIR/NAME.key_secret``; returns their paths (public,
    secret).

    The files are written in a private temporary folder inside ``DIR`` and linked into
    place, so another process never sees a half-written file or a secret file with a
    wider mode, and an existing file is never replaced (``os.link`` refuses).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     public, secret = keygen(Path(tmp) / "keys", "alice")
    ...     oct(secret.stat().st_mode & 0o777), public.name
    ('0o600', 'alice.key')
    """
    if not name or "/" in name or name.startswith("."):
        raise KeygenError(f"{name!r} is not a key name: use letters, digits, '-' or '_'")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    try:
        folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeygenError(f"cannot create {folder}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise KeygenError(f"{folder} is not a directory")
    for path in (public, secret):
        if path.exists():
            raise KeygenError(f"{path} exists already: keygen never overwrites a key")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder))
    except OSError as exc:
        raise KeygenError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        new_public, new_secret = map(Path, zmq.auth.create_certificates(staging, name))
        new_secret.chmod(SECRET_MODE)
        new_public.chmod(PUBLIC_MODE)
        linked: list[Path] = []
        try:
            for new, path in ((new_secret, secret), (new_public, public)):
                os.link(new, path)
                linked.append(path)
        except FileExistsError:
            for path in linked:
                path.unlink()
            raise KeygenError(
                f"{folder}/{name}.key* appeared while writing: keygen never overwrites a key"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public, secret
