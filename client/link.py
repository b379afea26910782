"""Watching a DEALER's connection to its broker: a ZeroMQ socket monitor that says when the
connection dropped (the broker was killed or restarted, the connection was reset) and when
it came back.

ZeroMQ reconnects a DEALER by itself, and says nothing to the application: a request sent
before the drop simply never gets its reply, because the broker that held it is gone. A
:class:`LinkWatch` reads the socket's monitor (an inproc PAIR that libzmq writes an event
to on each connection change, never per message), so that a client can fail or re-send the
requests in flight at the drop, and a worker can register again at once.

Polling it costs one ``getsockopt(EVENTS)`` on the monitor; its file descriptor can be
waited on beside the socket's (:attr:`LinkWatch.monitor`).
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Final

import zmq
from zmq.utils.monitor import parse_monitor_message

from client.wire.transport import poll

_WATCHED: Final = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)
_NOBLOCK: Final = int(zmq.NOBLOCK)
_DROP: Final = int(zmq.EVENT_DISCONNECTED)
_CONNECTED: Final = int(zmq.EVENT_CONNECTED)
_UP: Final = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_ids = itertools.count(1)


class LinkWatch:
    """The monitor of one connecting socket: :meth:`take` reads what happened since the
    last look.

    ``drops`` counts the connections that ended (``EVENT_DISCONNECTED``) after their ZMTP
    handshake had succeeded (one refused in its handshake, a CURVE key the broker does
    not know, carried nothing); ``ups`` the handshakes that succeeded; ``connected`` says
    whether a transport connection is up now (from ``EVENT_CONNECTED``).
    """

    def __init__(self, sock: zmq.Socket[bytes], context: zmq.Context[Any]) -> None:
        address = f"inproc://nearloop-link-{id(sock):x}-{next(_ids)}"
        sock.monitor(address, _WATCHED)
        mon: zmq.Socket[bytes] = context.socket(zmq.PAIR)
        mon.setsockopt(zmq.LINGER, 0)
        mon.connect(address)
        self.monitor = mon
        """The PAIR the events arrive on (poll it, or wait on its ``FD``, beside the socket)."""
        self.drops = 0
        self.ups = 0
        self.connected = False
        self._up = False  # a handshake succeeded since the last drop
        self._sock = sock

    def pending(self) -> bool:
        """True if an event waits to be read (one ``getsockopt``; never blocks)."""
        return bool(int(self.monitor.getsockopt(_EVENTS)) & _POLLIN)

    def take(self) -> tuple[int, int]:
        """Read every waiting event; returns (drops, handshakes) among them."""
        drops = ups = 0
        mon = self.monitor
        while poll([(mon, _POLLIN)], 0):
            try:
                event = parse_monitor_message(mon.recv_multipart(_NOBLOCK))["event"]
            except zmq.Again:
                break
            if event == _DROP:
                if self._up:
                    drops += 1
                self._up = self.connected = False
            elif event == _UP:
                ups += 1
                self._up = self.connected = True
            elif event == _CONNECTED:
                self.connected = True
        self.drops += drops
        self.ups += ups
        return drops, ups

    def close(self) -> None:
        """Stop monitoring and close the monitor's socket (before the watched one)."""
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self.monitor.close(linger=0)

    def __repr__(self) -> str:
        state = "up" if self.connected else "down"
        return f"LinkWatch({state}, drops={self.drops}, ups={self.ups})"
