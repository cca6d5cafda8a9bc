"""`grpc.boundary.guarded`, the one wrapper around every gRPC method: requests that do not parse are refused with
INVALID_ARGUMENT, and every call is counted once, with the status its client sees, however it ends.

gRPC cancels a call (client cancel, client gone, deadline) by cancelling the task that runs the handler. A streaming
handler that is computing gets the CancelledError; one suspended at a `yield` while the boundary writes its message
gets it at the write. These tests drive the wrapped behaviour as grpc.aio does, with a context whose `write` stalls
like a client that stopped reading, so each ending happens every time. The accounting is the real one, on a real
metrics registry; the model registry is a stand-in with one model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from service.accounting import Accounting
from service.errors import InvalidInputError, ModelNotFoundError
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc.backpressure import PendingResponses
from service.grpc.boundary import Boundary, api_of, guarded
from service.grpc.parsing import Unparsable
from service.metrics import Metrics, RequestRecorder

GENERATE = "/deepserve.v1.TextGenerator/Generate"
REQUEST = tg.GenerateRequest(prompt="Hello", model_name="lm").SerializeToString()
DELTA = tg.GenerateResponse(delta=tg.TextDelta(text="a"))
FINISHED = tg.GenerateResponse(finished=tg.GenerationFinished(model_name="lm", model_version="3"))
Check = health_pb2.HealthCheckRequest
GOOD = Check(service="v2").SerializeToString()
GARBAGE = b"\xff\xff\xff"
LATIN1 = b"\x0a\x04caf\xe9"  # service = b"caf\xe9"


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


async def endless() -> AsyncIterator[tg.GenerateResponse]:
    while True:
        yield DELTA


async def cancel(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---- accounting -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("remaining", "code"),
    [(None, "CANCELLED"), (30.0, "CANCELLED"), (0.0, "DEADLINE_EXCEEDED")],
    ids=["client-gone", "client-cancel", "deadline"],
)
async def test_cancelled_while_a_message_is_written_counts_once_as_the_client_sees_it(
    remaining: float | None, code: str
) -> None:
    edge, context = Edge(), Context(remaining)
    task = asyncio.create_task(edge.generate(endless)(REQUEST, context))
    await context.stalled.wait()  # the handler is suspended at its `yield`, the boundary is writing
    await cancel(task)
    assert edge.counted() == [("lm", "3", "generate", code, 1.0)]


@pytest.mark.parametrize(("remaining", "code"), [(30.0, "CANCELLED"), (0.0, "DEADLINE_EXCEEDED")])
async def test_cancelled_while_computing_counts_once(remaining: float, code: str) -> None:
    computing = asyncio.Event()

    async def stuck() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        computing.set()
        await asyncio.Event().wait()
        yield DELTA

    edge, context = Edge(), Context(remaining)
    task = asyncio.create_task(edge.generate(stuck)(REQUEST, context))
    await computing.wait()
    await cancel(task)
    assert edge.counted() == [("lm", "3", "generate", code, 1.0)]


async def test_a_stream_that_ends_counts_once_as_ok_under_its_model() -> None:
    async def finishes() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        yield FINISHED

    edge, context = Edge(), Context(writes=2)
    assert await edge.generate(finishes)(REQUEST, context) is None
    assert context.written == [DELTA, FINISHED]
    assert edge.counted() == [("lm", "3", "generate", "OK", 1.0)]


async def test_an_unknown_model_counts_as_unknown() -> None:
    async def fails() -> AsyncIterator[tg.GenerateResponse]:
        raise ModelNotFoundError("unknown model 'nope'")
        yield DELTA

    edge, context = Edge(), Context()
    request = tg.GenerateRequest(prompt="Hello", model_name="nope").SerializeToString()
    assert await edge.generate(fails)(request, context) is None
    assert context.status is grpc.StatusCode.NOT_FOUND
    assert edge.counted() == [("_unknown", "", "generate", "NOT_FOUND", 1.0)]


async def test_an_error_counts_once_with_its_status_under_the_default_model() -> None:
    async def fails() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        raise InvalidInputError("bad stop sequence")

    edge, context = Edge(), Context()
    assert await edge.generate(fails)(tg.GenerateRequest(prompt="Hi").SerializeToString(), context) is None
    assert (context.status, context.details) == (grpc.StatusCode.INVALID_ARGUMENT, "bad stop sequence")
    assert edge.counted() == [("lm", "3", "generate", "INVALID_ARGUMENT", 1.0)]


async def test_a_unary_call_that_aborts_is_counted_with_the_status_it_set() -> None:
    async def refuses(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no")

    edge, context = Edge(), Context()
    method = grpc.unary_unary_rpc_method_handler(refuses, pb.ModelReadyRequest.FromString)
    with pytest.raises(grpc.aio.AbortError):
        await edge.behaviour("/inference.GRPCInferenceService/ModelReady", method)(
            pb.ModelReadyRequest(name="lm").SerializeToString(), context
        )
    assert edge.counted() == [("lm", "3", "model_ready", "UNIMPLEMENTED", 1.0)]


async def test_a_request_about_no_model_is_counted_under_no_model() -> None:
    async def live(request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    edge = Edge()
    method = grpc.unary_unary_rpc_method_handler(live, pb.ServerLiveRequest.FromString)
    await edge.behaviour("/inference.GRPCInferenceService/ServerLive", method)(b"", Context())
    assert edge.counted() == [("", "", "server_live", "OK", 1.0)]


def test_api_labels() -> None:
    assert api_of("/inference.GRPCInferenceService/ModelInfer") == ("v2", None)
    assert api_of("/inference.GRPCInferenceService/RepositoryModelLoad") == ("repository_model_load", None)
    assert api_of("/grpc.health.v1.Health/Check") == ("health", None)
    assert api_of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") == ("server_reflection", None)


# ---- requests that do not parse ---------------------------------------------------------------------------
async def echo(request: Any, context: Any) -> str:
    return request.service  # type: ignore[no-any-return]


async def echo_twice(request: Any, context: Any) -> AsyncIterator[str]:
    yield request.service
    yield request.service


async def echo_each(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[str]:
    async for request in requests:
        yield request.service


async def payloads(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def check(behaviour: Any = echo) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour, Check.FromString, Check.SerializeToString)


async def test_a_parsed_request_reaches_the_behaviour() -> None:
    assert await Edge().behaviour("/h/Check", check())(GOOD, Context()) == "v2"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (GARBAGE, "the request is not a valid grpc.health.v1.HealthCheckRequest message"),
        (LATIN1, "service is not valid UTF-8 (byte 0xe9 at offset 3); send text encoded as UTF-8"),
    ],
)
async def test_an_unparsable_request_is_invalid_argument_and_counted(payload: bytes, message: str) -> None:
    edge, context = Edge(), Context()
    assert await edge.behaviour("/h/Check", check())(payload, context) is None
    assert (context.status, context.details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert edge.refusals.calls == [("/h/Check", message)]
    assert edge.counted() == [("", "", "h", "INVALID_ARGUMENT", 1.0)]


async def test_server_streaming_async_generator_writes_each_response() -> None:
    edge = Edge()
    method = grpc.unary_stream_rpc_method_handler(echo_twice, Check.FromString, Check.SerializeToString)
    context = Context(writes=2)
    assert await edge.behaviour("/h/W", method)(GOOD, context) is None
    assert context.written == ["v2", "v2"]
    garbage = Context()
    assert await edge.behaviour("/h/W", method)(GARBAGE, garbage) is None
    assert garbage.status is grpc.StatusCode.INVALID_ARGUMENT and garbage.written == []


async def test_streamed_requests_end_the_call_at_the_first_that_does_not_parse() -> None:
    edge = Edge()
    method = grpc.stream_stream_rpc_method_handler(echo_each, Check.FromString, Check.SerializeToString)
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await edge.behaviour("/r/I", method)(payloads(GOOD, LATIN1, GOOD), context)
    assert context.written == ["v2"]
    assert context.status is grpc.StatusCode.INVALID_ARGUMENT
    assert [method for method, _ in edge.refusals.calls] == ["/r/I"]
    assert edge.counted() == [("", "", "r", "INVALID_ARGUMENT", 1.0)]


async def test_other_deserializers_that_raise_give_a_generic_message() -> None:
    def strict(data: bytes) -> str:
        return data.decode("ascii")

    async def same(request: str, context: Any) -> str:
        return request

    edge = Edge()
    behaviour = edge.behaviour("/x/Y", grpc.unary_unary_rpc_method_handler(same, strict, None))
    assert await behaviour(b"ok", Context()) == "ok"
    context = Context()
    assert await behaviour(b"\xff", context) is None
    assert context.details == Unparsable("the request could not be parsed").message


def test_synchronous_handlers_and_raw_ones_on_an_uncounted_server_are_left_alone() -> None:
    raw = grpc.unary_unary_rpc_method_handler(echo)
    sync = grpc.unary_unary_rpc_method_handler(lambda r, c: r, Check.FromString)
    assert guarded(raw, "/x/Raw", Boundary()) is raw
    assert guarded(sync, "/x/Sync", Boundary()) is sync
    assert guarded(sync, "/x/Sync", Edge().boundary) is sync
