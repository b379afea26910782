"""Endpoints for benchmark servers: ipc:// files in a temp dir, or free tcp ports."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    """A tcp port on 127.0.0.1 that is free now (another process may take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def endpoint(transport: str, tmpdir: Path, name: str) -> str:
    """A fresh endpoint: ``ipc://TMPDIR/NAME.sock``, or ``tcp://127.0.0.1:PORT`` (free now)."""
    if transport == "ipc":
        return f"ipc://{tmpdir / name}.sock"
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_port()}"
    raise ValueError(f"transport must be ipc or tcp, got {transport!r}")
