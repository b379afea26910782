"""The embedded local stack: a broker and its workers as subprocesses on ipc://.

``python -m control_sim qec|vqe|demo`` without ``--connect`` run against one of these,
in a temporary directory that goes away with it:

>>> spec = StackSpec(decoder_workers=2, decoder="pymatching")     # doctest: +SKIP
>>> with LocalStack(spec) as stack:                                 # doctest: +SKIP
...     client = Client(stack.endpoint)
"""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from control_sim.errors import StackUnavailable
from control_sim.qpu.names import DEFAULT_SERVICE as DEFAULT_QPU_SERVICE
from control_sim.stack.processes import START_TIMEOUT_S, ServerGroup
from decoders.names import DEFAULT_DECODER_SERVICE

if TYPE_CHECKING:
    from client.wire.curve import CurveSpec

BROKER_ANSWER_TIMEOUT_S: Final = 3.0
"""How long a run given ``--connect`` waits for the broker to say which services it has."""


@dataclass(frozen=True, slots=True)
class StackSpec:
    """What a local stack runs: decoder workers of one service, and QPU workers."""

    decoder_workers: int = 0
    decoder: str = "pymatching"
    decoder_service: str = DEFAULT_DECODER_SERVICE
    decoder_args: tuple[str, ...] = ()
    """Extra ``python -m decoders`` options (``--max-wait-us``, ``--credit``, ...)."""
    qpu_workers: int = 0
    qpu_service: str = DEFAULT_QPU_SERVICE
    broker_args: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.decoder_workers < 0 or self.qpu_workers < 0:
            raise ValueError("worker counts must be >= 0")


class LocalStack:
    """Start the broker and the workers; leaving the ``with`` block stops them all."""

    def __init__(self, spec: StackSpec, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self.servers = ServerGroup()
        self._tmp = tempfile.TemporaryDirectory(prefix="nearloop-")
        self.endpoint = f"ipc://{self._tmp.name}/broker.sock"

    def start(self) -> LocalStack:
        """Start everything and wait until each worker has registered with the broker."""
        s = self.spec
        try:
            self.servers.start("broker", self._broker_command())
            self.servers.wait_ready(self.start_timeout_s)
            for i in range(s.decoder_workers):
                args = ["--connect", self.endpoint, "--service", s.decoder_service]
                args += ["--decoder", s.decoder, *s.decoder_args]
                self.servers.start(f"decoder-{i}", ["-m", "decoders", *args])
            for i in range(s.qpu_workers):
                args = ["qpu", "--connect", self.endpoint, "--service", s.qpu_service]
                self.servers.start(f"qpu-{i}", ["-m", "control_sim", *args])
            # A worker prints READY once the broker has answered its READY: registered.
            self.servers.wait_ready(self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _broker_command(self) -> list[str]:
        return ["-m", "broker", "--bind", self.endpoint, *self.spec.broker_args]

    def restart_broker(self) -> tuple[int, int]:
        """SIGKILL the broker and start a new one on the same endpoint (its ipc path is
        reused at once: see ``broker.endpoints``); returns when (``time.monotonic_ns()``)
        the old one was killed and the new one printed READY. The workers register again
        by themselves."""
        old = self.servers.process("broker")
        old.send_signal(signal.SIGKILL)
        killed_ns = time.monotonic_ns()
        old.wait(self.start_timeout_s)
        self.servers.start("broker", self._broker_command())
        self.servers.wait_ready(self.start_timeout_s)
        return killed_ns, time.monotonic_ns()

    def stop(self) -> None:
        """Stop every process and remove the temporary directory."""
        self.servers.stop()
        self._tmp.cleanup()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalStack({self.endpoint}, {self.servers!r})"


def require_services(
    endpoint: str,
    services: Mapping[str, str],
    *,
    timeout_s: float = BROKER_ANSWER_TIMEOUT_S,
    curve: CurveSpec | None = None,
) -> None:
    """Check that a broker answers at ``endpoint`` and that each service has a worker.

    A run given ``--connect`` calls this before it starts, so that a wrong endpoint or a
    missing worker is one clear error, not a timeout halfway through. ``curve`` is the
    CURVE keys for a tcp broker (:data:`client.wire.curve.CurveSpec`). ``services`` maps
    each service to the command that starts a worker for it, which the error quotes.

    Raises:
        StackUnavailable: no broker answered within ``timeout_s``, or a service has no
            worker.
    """
    from client import BrokerUnreachable, Client

    try:
        with Client(endpoint, timeout=timeout_s, curve=curve) as c:
            missing = [name for name in services if not c.service_available(name)]
    except BrokerUnreachable as exc:
        raise StackUnavailable(str(exc)) from None
    if missing:
        starts = "; ".join(services[name] for name in missing)
        names = ", ".join(repr(name) for name in missing)
        raise StackUnavailable(
            f"the broker at {endpoint} has no worker for {names}; start one with: {starts}"
        )
