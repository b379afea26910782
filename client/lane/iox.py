"""iceoryx2, imported only when a lane is used: the process's node, a lane's services,
and the clean-up after peers that died.

A lane named ``n`` is three iceoryx2 services: ``n`` (request-response of
``Slice[c_uint8]`` both ways, one client, one server) and two events, ``n/w`` that wakes
the worker and ``n/c`` that wakes the client. The worker creates them; the client opens
them. Every process has one iceoryx2 node for all its lanes.

iceoryx2 keeps its state in ``/dev/shm`` and under ``/tmp/iceoryx2``. A process killed
with SIGKILL cannot remove its part; iceoryx2 marks its node dead, and the survivor of a
lane removes the dead node's resources (:func:`remove_dead_nodes`), so nothing is left.
"""

from __future__ import annotations

import atexit
import ctypes
import threading
from types import ModuleType
from typing import Any, Final, NamedTuple

from client.errors import LaneUnavailable

MAX_IN_FLIGHT: Final = 64
"""Requests one lane client may have in flight (a stream's credit is at most this)."""
MAX_RESPONSES_BUFFERED: Final = 8
"""Replies (PARTIALs and the FINAL) of one request that the worker may have sent and the
client not yet read; a worker sending more waits for the client."""
INITIAL_SLICE_BYTES: Final = 4096
"""Each side's first guess at a message's size; larger ones grow the pool (powers of 2).
iceoryx2 sizes a lane's segments by the product of these three numbers, so they stay
small: with 256, 256 and 64 KiB, a client could not connect to its worker at all."""

_lock = threading.Lock()
_module: ModuleType | None = None
_missing: str | None = None
_node: Any = None


def iceoryx2_missing() -> str | None:
    """Why this process cannot open lanes, or None if it can (iceoryx2 imports)."""
    global _module, _missing
    with _lock:
        if _module is None and _missing is None:
            try:
                import iceoryx2
            except ImportError as exc:
                _missing = (
                    f"the lane extra is not installed (import iceoryx2: {exc}); "
                    "pip install 'nearloop[lane]'"
                )
            else:
                iceoryx2.set_log_level(iceoryx2.LogLevel.Error)
                _module = iceoryx2
        return _missing


def iox() -> Any:
    """The iceoryx2 module; raises :class:`LaneUnavailable` if it does not import."""
    missing = iceoryx2_missing()
    if missing is not None:
        raise LaneUnavailable(missing)
    return _module


def process_node() -> Any:
    """This process's iceoryx2 node, made on first use and dropped at exit.

    Its signal handling is off: nearloop's processes handle SIGINT and SIGTERM themselves.
    """
    global _node
    iceoryx2 = iox()
    with _lock:
        if _node is None:
            _node = (
                iceoryx2.NodeBuilder.new()
                .signal_handling_mode(iceoryx2.SignalHandlingMode.Disabled)
                .create(iceoryx2.ServiceType.Ipc)
            )
            atexit.register(_drop_node)
        return _node


def _drop_node() -> None:
    # iceoryx2 removes a node's files when the node is dropped; at exit Python may never
    # collect a module global, so drop the last reference here.
    global _node
    with _lock:
        _node = None


class LaneServices(NamedTuple):
    """The three iceoryx2 services of one lane."""

    calls: Any
    """Request-response: requests to the worker, PARTIAL and FINAL replies back."""
    wake_worker: Any
    wake_client: Any


def lane_services(name: str, *, create: bool) -> LaneServices:
    """Create (the worker) or open (the client) the services of lane ``name``.

    Creating fails if the name exists: a lane name is used once. The services last while
    some process holds a reference; drop every port made from them first.
    """
    iceoryx2 = iox()
    node = process_node()
    u8 = iceoryx2.Slice[ctypes.c_uint8]
    calls = (
        node.service_builder(iceoryx2.ServiceName.new(name))
        .request_response(u8, u8)
        .max_clients(1)
        .max_servers(1)
        .max_nodes(2)
        .max_active_requests_per_client(MAX_IN_FLIGHT)
        .max_response_buffer_size(MAX_RESPONSES_BUFFERED)
        .enable_safe_overflow_for_requests(False)
        .enable_safe_overflow_for_responses(False)
    )
    events = [
        node.service_builder(iceoryx2.ServiceName.new(f"{name}/{end}"))
        .event()
        .max_listeners(1)
        .max_notifiers(1)
        .max_nodes(2)
        for end in ("w", "c")
    ]
    if create:
        return LaneServices(calls.create(), events[0].create(), events[1].create())
    return LaneServices(calls.open(), events[0].open(), events[1].open())


def peer_dead(service: Any) -> bool:
    """True if a node attached to ``service`` (a lane's request-response) has died; its
    resources are removed on the way, so nothing of it is left behind."""
    iceoryx2 = iox()
    dead = False
    for state in service.nodes:
        if isinstance(state, iceoryx2.NodeState.Dead):
            dead = True
            state[0].try_remove_stale_resources()
    return dead


def remove_dead_nodes() -> int:
    """Remove what dead iceoryx2 nodes (of any process on this host) left behind; how
    many there were."""
    iceoryx2 = iox()
    found = 0
    for state in iceoryx2.Node.list(iceoryx2.ServiceType.Ipc, iceoryx2.config.global_config()):
        if isinstance(state, iceoryx2.NodeState.Dead):
            found += 1
            state[0].try_remove_stale_resources()
    return found
