"""The client side of the wire: a typed Python client for the task APIs (`tasks.py`) and the `deepserve
classify | sentiment | generate` commands built on it (`commands.py`). Like any gRPC client it uses the
stubs generated from protos/ (service/grpc/_generated); nothing else of the server."""

from service.client.tasks import (
    DEFAULT_TARGET,
    Classifications,
    ClientError,
    GenerationStream,
    GenerationSummary,
    LabelScore,
    Sentiment,
    Sentiments,
    TaskClient,
)

__all__ = [
    "DEFAULT_TARGET",
    "Classifications",
    "ClientError",
    "GenerationStream",
    "GenerationSummary",
    "LabelScore",
    "Sentiment",
    "Sentiments",
    "TaskClient",
]
