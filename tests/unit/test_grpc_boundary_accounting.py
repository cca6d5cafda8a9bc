"""`grpc.boundary.guarded` counts every call once, with the status its client sees, however it ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from service.errors import InvalidInputError, ModelNotFoundError
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc.boundary import api_of
from tests.unit.boundary_helpers import Context, Edge

REQUEST = tg.GenerateRequest(prompt="Hello", model_name="lm").SerializeToString()
DELTA = tg.GenerateResponse(delta=tg.TextDelta(text="a"))
FINISHED = tg.GenerateResponse(finished=tg.GenerationFinished(model_name="lm", model_version="3"))


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
