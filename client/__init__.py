"""nearloop client library: the wire protocol, Client, AsyncClient and Worker."""

from client.async_client import AsyncClient, run
from client.errors import (
    BadBlock,
    BadModel,
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
    UnknownModel,
    WorkerError,
    WorkerLost,
)
from client.messages import Message, Payload
from client.stream import BlockResult, Stream, StreamStats, WindowFull
from client.sync_client import Client, PendingReply
from client.worker import BatchHandler, Handler, Worker, WorkerState, run_worker

__all__ = [
    "AsyncClient",
    "BadBlock",
    "BadModel",
    "BatchHandler",
    "BlockResult",
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
    "Stream",
    "StreamStats",
    "UnknownModel",
    "WindowFull",
    "Worker",
    "WorkerError",
    "WorkerLost",
    "WorkerState",
    "run",
    "run_worker",
]
