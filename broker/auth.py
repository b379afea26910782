"""The broker's CURVE authentication: its key, the allow-lists, the ZAP handler, the roles.

With a secret key (``--curve-secret``) every tcp endpoint the broker binds is a CURVE
server (ZeroMQ RFC 26); its ipc and inproc endpoints stay NULL, guarded by the file
system. Each CURVE handshake asks the ZAP handler (RFC 27), which pyzmq's
``ThreadAuthenticator`` runs in a thread of its own, with :meth:`BrokerAuth.callback` as
its credentials provider: a key in neither allow-list is refused there, and counted, so a
bad key never reaches the broker's loop.

A key that passes gets its Z85 text as the connection's ZAP User-Id, which libzmq attaches
to every message on it (``zmq_msg_gets(3)``). The loop reads it only where a role matters,
a worker's READY (:meth:`BrokerAuth.refuses_ready`): a key that is not in a worker
allow-list for that service is refused there. Any admitted key may send client requests:
a worker is trusted with other users' requests anyway, and the decoder workers fetch their
noise models as clients, with the same key.

The allow-lists reload on SIGHUP (:meth:`BrokerAuth.reload`), in a thread of their own:
the new lists are built aside and then swapped in whole, one reference, so the ZAP
thread and the loop each see either the old lists or the new. Connections that passed
their handshake stay up: ZAP runs once per connection, so a removed key is refused on its
next connection. The broker's own secret key is not reloaded: every peer holds its public
key, so changing it means handing peers a new one, which is a restart, not a reload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from client.wire.curve import KeyFileError, read_secret_certificate

log = logging.getLogger("nearloop.broker.auth")

ZAP_DOMAIN: Final = "nearloop"
"""The ZAP domain of the broker's CURVE endpoints."""
CURVE: Final = "CURVE"
"""``Broker.auth_refused`` key: CURVE handshakes whose key is in neither allow-list."""
MISMATCH: Final = "mismatch"
"""``Broker.auth_refused`` key: handshakes on a CURVE endpoint from a peer that speaks
another mechanism (a plaintext NULL peer, say), as libzmq reports them to a socket
monitor."""
ABORTED: Final = "aborted"
"""``Broker.auth_refused`` key: handshakes on a CURVE endpoint that the peer broke off
(libzmq's ``HANDSHAKE_FAILED_NO_DETAIL``). A plaintext peer that reads the broker's CURVE
greeting before the broker reads its NULL one hangs up, and is counted here, not under
:data:`MISMATCH`: which side notices first is a race."""
_LOG_EVERY: Final = 1000
_MAX_LOGGED_KEYS: Final = 1024


@dataclass(frozen=True, slots=True)
class AllowLists:
    """Public keys (Z85) admitted as clients, as workers of any service, and as workers of
    one service each."""

    clients: frozenset[bytes] = frozenset()
    workers: frozenset[bytes] = frozenset()
    """Worker keys for every service."""
    service_workers: Mapping[bytes, frozenset[bytes]] = field(default_factory=dict)
    """Worker keys by the one service (name as bytes) they may serve."""

    @classmethod
    def load(
        cls, clients_dir: str | None, workers: tuple[tuple[str | None, str], ...]
    ) -> AllowLists:
        """Read every ``*.key`` in the directories; raises :class:`KeyFileError`."""
        clients = _load_dir(clients_dir) if clients_dir is not None else frozenset()
        any_service: set[bytes] = set()
        by_service: dict[bytes, set[bytes]] = {}
        for service, directory in workers:
            keys = _load_dir(directory)
            if service is None:
                any_service |= keys
            else:
                by_service.setdefault(service.encode(), set()).update(keys)
        return cls(
            clients=clients,
            workers=frozenset(any_service),
            service_workers={s: frozenset(k) for s, k in by_service.items()},
        )

    def admits(self, key: bytes) -> bool:
        """Whether ``key`` may connect at all."""
        return (
            key in self.clients
            or key in self.workers
            or any(key in keys for keys in self.service_workers.values())
        )

    def may_serve(self, key: bytes, service: bytes) -> bool:
        """Whether ``key`` may register as a worker of ``service``."""
        return key in self.workers or key in self.service_workers.get(service, ())

    def __len__(self) -> int:
        return len(self.clients | self.workers.union(*self.service_workers.values()))


def _load_dir(directory: str) -> frozenset[bytes]:
    if not os.path.isdir(directory):
        raise KeyFileError(directory, "no such directory of public certificates")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise KeyFileError(directory, "cannot read this directory")
    try:
        return frozenset(zmq.auth.load_certificates(directory))
    except OSError as exc:
        raise KeyFileError(directory, f"cannot read a certificate in it: {exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            directory, f"holds a .key file that is not a certificate: {exc}"
        ) from None


class BrokerAuth:
    """The broker's key, its allow-lists and its ZAP handler thread.

    ``refused`` is the broker's ``auth_refused`` dict: the ZAP thread and the monitor
    thread each add to their own keys of it (:data:`CURVE`; :data:`MISMATCH`, :data:`ABORTED`).
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        *,
        secret_file: str,
        allow_clients: str | None,
        allow_workers: tuple[tuple[str | None, str], ...],
        refused: dict[str, int],
    ) -> None:
        self.public_key, self._secret_key = read_secret_certificate(secret_file)
        self._allow_clients = allow_clients
        self._allow_workers = allow_workers
        self.lists = AllowLists.load(allow_clients, allow_workers)
        """The allow-lists in force; :meth:`reload` replaces them whole."""
        self.refused = refused
        refused[CURVE] = refused.get(CURVE, 0)
        refused[MISMATCH] = refused.get(MISMATCH, 0)
        refused[ABORTED] = refused.get(ABORTED, 0)
        self.reloads = 0
        """Reloads that took effect."""
        self.reload_failures = 0
        self._context = context
        self._authenticator: ThreadAuthenticator | None = None
        self._monitor: threading.Thread | None = None
        self._refused_logged: set[bytes] = set()
        self._reload_lock = threading.Lock()

    def start(self) -> None:
        """Start the ZAP handler; before the broker binds, so no handshake goes unchecked."""
        auth = ThreadAuthenticator(self._context, log=logging.getLogger("nearloop.broker.zap"))
        auth.start()
        auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)
        self._authenticator = auth
        log.info(
            "CURVE on tcp endpoints; broker key %s; %d key(s) allowed",
            self.public_key.decode(), len(self.lists),
        )  # fmt: skip

    def callback(self, domain: str, key: bytes) -> bool:
        """The ZAP credentials provider: whether the Z85 public ``key`` may connect.

        Runs on the ZAP thread, never on the broker's loop."""
        if self.lists.admits(key):
            return True
        n = self.refused[CURVE] = self.refused[CURVE] + 1
        if n <= 10 or n % _LOG_EVERY == 0:
            log.warning("CURVE handshake #%d refused: key %s is in no allow-list", n, key.decode())
        return False

    def curve_server(self, sock: zmq.Socket[Any]) -> None:
        """Make the endpoints ``sock`` binds from now on CURVE servers with this key, which
        ask the ZAP handler; idempotent.

        Bind the NULL endpoints before the first call: libzmq takes a listener's security
        from the socket's options at bind time, and a NULL listener with a ZAP domain would
        ask the ZAP handler too (which admits any NULL peer, and names it "anonymous"),
        while a ZAP domain cannot be set back to empty.
        """
        if not sock.getsockopt(zmq.CURVE_SERVER):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._secret_key)
            sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)

    def watch(self, sock: zmq.Socket[Any]) -> None:
        """Count mechanism mismatches on ``sock`` from a socket monitor, in a thread of its
        own (call on the socket's own thread, before it binds).

        The monitor's PAIR socket is connected here, before the thread starts and before
        any bind: a monitor whose reader connected later, from its thread, lost every event
        in about one broker start of three (libzmq 4.3.5)."""
        pair: zmq.Socket[bytes] = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_MONITOR_STOPPED
        )
        # The socket moves to the thread: starting it is the memory barrier ZeroMQ asks for.
        self._monitor = threading.Thread(
            target=self._count_mismatches, args=(pair,), name="nearloop-auth-monitor",
            daemon=True,
        )  # fmt: skip
        self._monitor.start()

    def _count_mismatches(self, pair: zmq.Socket[bytes]) -> None:
        try:
            while True:
                event = recv_monitor_message(pair)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                if not event["endpoint"].startswith(b"tcp://"):
                    continue  # a NULL endpoint's: not an authentication matter
                if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                    key = ABORTED
                elif event["value"] == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    key = MISMATCH
                else:
                    continue
                n = self.refused[key] = self.refused[key] + 1
                if n <= 10 or n % _LOG_EVERY == 0:
                    log.warning(
                        "handshake #%d refused on %s: %s", n, event["endpoint"].decode(),
                        "the peer spoke another mechanism than CURVE" if key == MISMATCH
                        else "the peer broke it off (a plaintext peer does)",
                    )  # fmt: skip
        except zmq.ContextTerminated:
            return
        finally:
            pair.close(linger=0)

    def refuses_ready(self, identity_frame: zmq.Frame, service: bytes) -> bytes | None:
        """The key (Z85) that sent a READY for ``service`` it may not serve, else None.

        ``identity_frame`` is a frame of the READY message: its User-Id is the sender's
        key. A message with none came through a NULL endpoint (ipc, inproc), which has
        no keys to check: it is let through, as before CURVE.
        """
        try:
            user_id = identity_frame.get("User-Id")
        except zmq.ZMQError:
            return None
        key = user_id.encode() if isinstance(user_id, str) else bytes(user_id)
        if self.lists.may_serve(key, service):
            return None
        return key

    def first_refusal(self, key: bytes) -> bool:
        """True the first time ``key`` is refused a role (log it then, not every time)."""
        if key in self._refused_logged or len(self._refused_logged) >= _MAX_LOGGED_KEYS:
            return False
        self._refused_logged.add(key)
        return True

    def reload(self) -> bool:
        """Read the allow-lists again and swap them in; on failure keep the old lists and
        log an error. Connected peers stay connected. Returns whether it took effect."""
        with self._reload_lock:
            try:
                lists = AllowLists.load(self._allow_clients, self._allow_workers)
            except KeyFileError as exc:
                self.reload_failures += 1
                log.error("allow-lists not reloaded, the old ones stay in force: %s", exc)
                return False
            self.lists = lists
            self.reloads += 1
            log.warning(
                "allow-lists reloaded (#%d): %d client key(s), %d key(s) in all",
                self.reloads, len(lists.clients), len(lists),
            )  # fmt: skip
            return True

    def reload_in_background(self) -> None:
        """:meth:`reload` on a thread of its own: what SIGHUP does, so that reading the
        directories never stalls the broker's loop."""
        threading.Thread(target=self.reload, name="nearloop-auth-reload", daemon=True).start()

    def snapshot(self) -> dict[str, int]:
        """What ``mmi.stats`` shows of authentication, beside ``auth_refused``."""
        return {"auth_reloads": self.reloads, "auth_reload_failures": self.reload_failures}

    def close(self, sock: zmq.Socket[Any]) -> None:
        """Stop the monitor of ``sock`` (still open) and the ZAP handler."""
        if self._monitor is not None:
            sock.disable_monitor()
            self._monitor.join(timeout=5)
            self._monitor = None
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
