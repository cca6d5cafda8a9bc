"""What the tests of `grpc.boundary.guarded` share: a stand-in model registry with one model, a servicer context,
and a boundary with real accounting on a real metrics registry.

gRPC cancels a call (client cancel, client gone, deadline) by cancelling the task that runs the handler. A streaming
handler that is computing gets the CancelledError; one suspended at a `yield` while the boundary writes its message
gets it at the write. The tests drive the wrapped behaviour as grpc.aio does, with a context whose `write` stalls
like a client that stopped reading, so each ending happens every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import grpc

from service.accounting import Accounting
from service.errors import ModelNotFoundError
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc.backpressure import PendingResponses
from service.grpc.boundary import Boundary, guarded
from service.metrics import Metrics, RequestRecorder

GENERATE = "/deepserve.v1.TextGenerator/Generate"


class Registry:
    """One model, `lm` version 3, the default for every task."""

    def get(self, name: str, version: str = "") -> SimpleNamespace:
        if name != "lm" or version not in ("", "3"):
            raise ModelNotFoundError(f"unknown model {name!r}")
        return SimpleNamespace(name="lm", version="3")

    def by_task(self, task: str) -> SimpleNamespace:
        return self.get("lm")


class Context:
    """What the boundary uses of grpc.aio's ServicerContext. Writes after the first `writes` stall (the client
    stopped reading)."""

    def __init__(self, remaining: float | None = None, writes: int = 1) -> None:
        self.remaining, self.writes = remaining, writes
        self.written: list[Any] = []
        self.stalled = asyncio.Event()
        self.status: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return self.remaining

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def add_done_callback(self, callback: Callable[[Context], None]) -> None:
        pass

    def set_code(self, code: grpc.StatusCode) -> None:
        self.status = code

    def code(self) -> grpc.StatusCode | None:
        return self.status

    def set_details(self, details: str) -> None:
        self.details = details

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status, self.details = code, details
        raise grpc.aio.AbortError()

    async def write(self, message: Any) -> None:
        self.written.append(message)
        if len(self.written) > self.writes:
            self.stalled.set()
            await asyncio.Event().wait()


class Refusals:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, reason: str) -> None:
        self.calls.append((method, reason))


class Edge:
    """A boundary with real accounting on its own metrics registry."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.refusals = Refusals()
        accounting = Accounting(RequestRecorder(self.metrics), Registry())  # type: ignore[arg-type]
        self.boundary = Boundary(self.refusals, accounting, PendingResponses(1 << 30, 1 << 30))

    def behaviour(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        wrapped = guarded(handler, method, self.boundary)
        assert wrapped.request_deserializer is None  # the boundary parses, after authorizing
        return wrapped.unary_unary or wrapped.unary_stream or wrapped.stream_unary or wrapped.stream_stream

    def generate(self, script: Callable[[], AsyncIterator[tg.GenerateResponse]]) -> Any:
        async def handler(request: tg.GenerateRequest, context: Any) -> AsyncIterator[tg.GenerateResponse]:
            async for message in script():
                yield message

        method = grpc.unary_stream_rpc_method_handler(
            handler, tg.GenerateRequest.FromString, tg.GenerateResponse.SerializeToString
        )
        return self.behaviour(GENERATE, method)

    def counted(self) -> list[tuple[str, str, str, str, float]]:
        return [
            (s.labels["model"], s.labels["version"], s.labels["api"], s.labels["code"], s.value)
            for family in self.metrics.registry.collect()
            if family.name == "deepserve_requests"
            for s in family.samples
            if s.name == "deepserve_requests_total"
        ]
