"""CURVE keys for benchmark runs: a broker, a client and a worker, each with its own pair.

Made with :func:`zmq.auth.create_certificates` in the run's temporary folder, laid out as a
deployment would be: the broker's secret, and one allow-list folder each for clients and
workers holding only their public certificates.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from zmq.auth import create_certificates


@dataclass(frozen=True, slots=True)
class BenchKeys:
    """Where each certificate of a run lies."""

    broker_secret: Path
    broker_public: Path
    client_secret: Path
    worker_secret: Path
    clients_dir: Path
    workers_dir: Path

    @classmethod
    def create(cls, root: Path) -> BenchKeys:
        """Make the three key pairs and the two allow-lists under ``root``."""
        secrets, clients, workers = root / "secrets", root / "clients", root / "workers"
        for d in (secrets, clients, workers):
            d.mkdir(parents=True, mode=0o700)
        broker_public, broker_secret = create_certificates(secrets, "broker")
        client_public, client_secret = create_certificates(secrets, "client")
        worker_public, worker_secret = create_certificates(secrets, "worker")
        shutil.copy(client_public, clients)
        shutil.copy(worker_public, workers)
        return cls(
            Path(broker_secret), Path(broker_public), Path(client_secret), Path(worker_secret),
            clients, workers,
        )  # fmt: skip

    def broker_args(self) -> list[str]:
        """The broker's command-line options for these keys."""
        return [
            "--curve-secret", str(self.broker_secret),
            "--allow-clients", str(self.clients_dir),
            "--allow-workers", str(self.workers_dir),
        ]  # fmt: skip

    def client_curve(self) -> tuple[str, str]:
        """``curve=`` for a client."""
        return str(self.client_secret), str(self.broker_public)

    def worker_args(self) -> list[str]:
        """A worker's ``--curve`` option."""
        return ["--curve", str(self.worker_secret), str(self.broker_public)]
