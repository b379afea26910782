"""Which processes can share a lane: the host identity a worker declares at READY.

Two processes can share iceoryx2's shared memory when they run on the same booted kernel
and see the same ``/dev/shm``: a container or a mount namespace of its own does not, even
on the same machine. So the identity is a hash of the kernel's boot id and the device and
inode of ``/dev/shm`` as this process sees them (where there is no ``/dev/shm``, of the
temporary directory iceoryx2 uses instead), plus the host name.
``NEARLOOP_HOST_ID`` overrides it, for a test or a site that knows better.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Final

HOST_ID_ENV: Final = "NEARLOOP_HOST_ID"


@functools.cache
def host_identity() -> str:
    """This process's host identity: 32 hex characters, or ``NEARLOOP_HOST_ID``.

    >>> host_identity() == host_identity() and len(host_identity()) > 0
    True
    """
    override = os.environ.get(HOST_ID_ENV)
    if override:
        return override
    parts = [socket.gethostname()]
    boot_id = Path("/proc/sys/kernel/random/boot_id")
    if boot_id.exists():
        parts.append(boot_id.read_text().strip())
    shm = Path("/dev/shm")
    st = os.stat(shm if shm.is_dir() else tempfile.gettempdir())
    parts.append(f"{st.st_dev}:{st.st_ino}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
