"""nearloop client library: the wire protocol, Client, AsyncClient and Worker."""

from client.async_client import AsyncClient, run
from client.errors import (
    BrokerShutdown,
    ClientClosed,
    MalformedRequest,
    NearloopError,
    PayloadTooLarge,
    ProtocolError,
    QueueFull,
    RemoteError,
    RemotePayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    WorkerError,
    WorkerLost,
)
from client.messages import Message, Payload
from client.sync_client import Client, PendingReply
from client.worker import Handler, Worker, WorkerState, run_worker

__all__ = [
    "AsyncClient",
    "BrokerShutdown",
    "Client",
    "ClientClosed",
    "Handler",
    "MalformedRequest",
    "Message",
    "NearloopError",
    "Payload",
    "PayloadTooLarge",
    "PendingReply",
    "ProtocolError",
    "QueueFull",
    "RemoteError",
    "RemotePayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "Worker",
    "WorkerError",
    "WorkerLost",
    "WorkerState",
    "run",
    "run_worker",
]
