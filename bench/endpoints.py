"""Endpoints for benchmark servers: ipc:// files in a temp dir, or free tcp ports."""

from __future__ import annotations

import socket
from pathlib import Path


def endpoint(transport: str, tmpdir: Path, name: str) -> str:
    """A fresh endpoint: ``ipc://TMPDIR/NAME.sock``, or ``tcp://127.0.0.1:PORT`` (free now)."""
    if transport == "ipc":
        return f"ipc://{tmpdir / name}.sock"
    if transport == "tcp":
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        return f"tcp://127.0.0.1:{port}"
    raise ValueError(f"transport must be ipc or tcp, got {transport!r}")
