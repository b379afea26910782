"""What the broker checks before it binds an endpoint, and what it owns once it has.

- **tcp off loopback needs CURVE.** A tcp endpoint that other hosts can reach (``*``,
  ``0.0.0.0``, ``::``, any address outside 127.0.0.0/8 and ::1, an interface or host name
  other than ``localhost``) is refused unless the broker has a CURVE key or is told
  ``insecure``: without CURVE anyone who reaches the port can send requests or register
  as a worker. Any transport other than tcp, ipc and inproc counts as a network one.
- **ipc sockets are for their owner** (mode 0600) or for one group (0660, ``ipc_group``).
  The socket is created under a umask that leaves it 0600, then given to the group, so
  it is never wider than asked for. An abstract socket (``ipc://@name``, Linux) has no
  file and no mode: any process in the same network namespace can connect to it.
- **No takeover.** ZeroMQ removes whatever file lies at an ipc path before it binds, so
  a second broker on a live broker's path would make the first unreachable. Each broker
  holds an ``flock`` on ``PATH.lock`` for its life (:class:`IpcClaim`): a second one is
  refused while the first lives, and two started at once cannot both win. A socket file
  with nobody behind it (its broker was SIGKILLed) is removed and bound again; one that
  accepts connections (some process that takes no lock) is refused. At exit the broker
  removes its socket file and its lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import ipaddress
import os
import socket
import stat
from collections.abc import Iterator
from typing import Final

from broker.errors import BrokerError

IPC_MODE: Final = 0o600
IPC_GROUP_MODE: Final = 0o660
_OWNER_ONLY_UMASK: Final = 0o177
LOCK_SUFFIX: Final = ".lock"
_PROBE_TIMEOUT_S: Final = 1.0
_LOCAL_TRANSPORTS: Final = ("ipc", "inproc")


class EndpointRefused(BrokerError, ValueError):
    """The broker will not bind ``endpoint``: ``why`` says what is wrong and the way out."""

    def __init__(self, endpoint: str, why: str) -> None:
        super().__init__(f"refusing to bind {endpoint}: {why}")
        self.endpoint = endpoint
        self.why = why


class IpcPathTaken(EndpointRefused):
    """Another live process holds the ipc path ``path``."""

    def __init__(self, endpoint: str, path: str, why: str) -> None:
        super().__init__(endpoint, why)
        self.path = path


# --- tcp: who can reach it --------------------------------------------------------------


def exposure(endpoint: str) -> str | None:
    """Why other hosts could reach ``endpoint`` once bound, or None if only this host can.

    >>> exposure("tcp://127.0.0.1:5555") is None, exposure("tcp://[::1]:*") is None
    (True, True)
    >>> exposure("tcp://localhost:5555") is None, exposure("ipc:///tmp/b.sock") is None
    (True, True)
    >>> exposure("tcp://*:5555")
    "'*' binds every interface"
    >>> exposure("tcp://eth0:5555")
    "'eth0' is an interface or host name other than localhost"
    """
    scheme, _, rest = endpoint.partition("://")
    if scheme in _LOCAL_TRANSPORTS:
        return None
    if scheme != "tcp":
        return f"{scheme} is a network transport"
    host = rest.rpartition(":")[0] if ":" in rest else rest
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return None
    if host in ("*", "0.0.0.0", "::"):
        return f"{host!r} binds every interface"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return f"{host!r} is an interface or host name other than localhost"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return None
    return f"{host} is not a loopback address"


def check_exposure(endpoint: str, *, curve: bool, insecure: bool) -> None:
    """Raise :class:`EndpointRefused` for an endpoint other hosts can reach, unless the
    broker authenticates them (``curve``) or was told to accept it (``insecure``)."""
    why = exposure(endpoint)
    if why is None or curve or insecure:
        return
    raise EndpointRefused(
        endpoint,
        f"{why}, and without CURVE any peer that reaches it can send requests or register "
        "as a worker; give the broker a CURVE key (--curve-secret FILE, curve_secret) or "
        "accept an open endpoint (--insecure, insecure=True), or bind a loopback address "
        "(tcp://127.0.0.1:PORT) or an ipc path",
    )


# --- ipc: mode, group and ownership of the path -----------------------------------------


def resolve_group(group: str) -> int:
    """The gid of ``group``, a group name or a numeric gid; ValueError if there is none.

    >>> resolve_group("0")
    0
    >>> resolve_group("no-such-group-here")
    Traceback (most recent call last):
    ...
    ValueError: ipc group 'no-such-group-here': no such group on this host
    """
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        pass
    if group.isdigit():
        gid = int(group)
        try:
            grp.getgrgid(gid)
        except KeyError:
            raise ValueError(f"ipc group {group!r}: no such gid on this host") from None
        return gid
    raise ValueError(f"ipc group {group!r}: no such group on this host")


def ipc_path(endpoint: str) -> str | None:
    """The file an ipc endpoint binds, or None: another transport, an abstract socket
    (``ipc://@name``) or a ZeroMQ wildcard (``ipc://*``, a fresh private path).

    >>> ipc_path("ipc:///tmp/b.sock"), ipc_path("ipc://@b"), ipc_path("tcp://127.0.0.1:1")
    ('/tmp/b.sock', None, None)
    """
    scheme, _, path = endpoint.partition("://")
    if scheme != "ipc" or not path or path.startswith("@") or path == "*":
        return None
    return path


@contextlib.contextmanager
def owner_only_umask() -> Iterator[None]:
    """Files created inside are at most 0600. The umask is process-wide: the broker binds
    before it starts any thread that creates files."""
    old = os.umask(_OWNER_ONLY_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class IpcClaim:
    """This broker's hold on an ipc path: an ``flock`` on ``PATH.lock`` for the broker's
    life, and the socket file it bound there, which :meth:`release` removes.

    Lock files are removed by their holder while it still holds the lock, so one that a
    later broker opened just before may be gone from the path: :meth:`take` checks that
    the file it locked is the one at the path, and tries again if not.
    """

    def __init__(self, endpoint: str, path: str, lock_fd: int) -> None:
        self.endpoint = endpoint
        self.path = path
        self.lock_path = path + LOCK_SUFFIX
        self._lock_fd: int | None = lock_fd
        self._socket_file: os.stat_result | None = None

    @classmethod
    def take(cls, endpoint: str, path: str) -> IpcClaim:
        """Lock ``path`` for this process, and clear a stale socket file there. Raises
        :class:`IpcPathTaken` if a live process holds it, :class:`EndpointRefused` if the
        path holds something that is not a socket or cannot be checked."""
        lock_path = path + LOCK_SUFFIX
        while True:
            try:
                fd = os.open(
                    lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, IPC_MODE
                )
            except OSError as exc:
                raise EndpointRefused(
                    endpoint, f"cannot open its lock file {lock_path}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f" (pid {holder})" if holder else ""
                raise IpcPathTaken(
                    endpoint, path,
                    f"another broker{by} holds {path} (it holds the lock {lock_path}); "
                    "stop it first or bind another path",
                ) from None  # fmt: skip
            try:
                same = _same_file(os.fstat(fd), os.stat(lock_path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it as we opened it: lock the new one
        claim = cls(endpoint, path, fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            claim._clear_stale()
        except BaseException:
            claim.release()
            raise
        return claim

    def _clear_stale(self) -> None:
        """Remove a socket file nobody accepts on; refuse one somebody does."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise EndpointRefused(
                self.endpoint,
                f"{self.path} exists and is not a socket; remove it or bind another path",
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(_PROBE_TIMEOUT_S)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            os.unlink(self.path)  # stale: its broker died without removing it
            return
        except OSError as exc:
            raise EndpointRefused(
                self.endpoint, f"cannot check whether a process holds {self.path}: {exc}"
            ) from None
        finally:
            probe.close()
        raise IpcPathTaken(
            self.endpoint, self.path,
            f"a live process that is not a nearloop broker accepts connections on {self.path}; "
            "stop it first or bind another path",
        )  # fmt: skip

    def bound(self, gid: int | None) -> None:
        """The socket is bound at the path (0600, under :func:`owner_only_umask`): give it
        to group ``gid`` (0660) if one is asked for, and note which file is ours."""
        st = os.stat(self.path, follow_symlinks=False)
        if gid is not None:
            try:
                os.chown(self.path, -1, gid, follow_symlinks=False)
            except PermissionError:
                raise EndpointRefused(
                    self.endpoint,
                    f"cannot give {self.path} to group {gid}: this user is not in that group",
                ) from None
            os.chmod(self.path, IPC_GROUP_MODE, follow_symlinks=False)
        self._socket_file = st

    def release(self) -> None:
        """Remove the socket file if it is still the one this broker bound, then the lock
        file, while still holding the lock; then let go of the lock. Idempotent."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        try:
            if self._socket_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    if _same_file(os.stat(self.path, follow_symlinks=False), self._socket_file):
                        os.unlink(self.path)
            with contextlib.suppress(FileNotFoundError):
                if _same_file(os.stat(self.lock_path, follow_symlinks=False), os.fstat(fd)):
                    os.unlink(self.lock_path)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        held = "held" if self._lock_fd is not None else "released"
        return f"IpcClaim({self.path!r}, {held})"


def _read_pid(fd: int) -> int | None:
    """The pid a lock's holder wrote into it, if it reads as one."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def check_group_member(gid: int) -> None:
    """ValueError unless this process may give files to group ``gid`` (root, or a
    member)."""
    if os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups():
        return
    raise ValueError(
        f"ipc group {gid}: this user is not in that group, so it cannot give sockets to it"
    )
