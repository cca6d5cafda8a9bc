"""`grpc.tasks.streaming`: each streamed call is counted once, with the status its client sees, however it ends.

gRPC cancels a call (client cancel, client gone, deadline) by cancelling the task that runs the handler. A
handler that is computing gets the CancelledError; one that is suspended at a `yield` while gRPC writes the
message gets nothing and is closed (GeneratorExit) by the guard's write loop, or dropped by a loop that does
not close it. These tests drive the handler as `requests.guarded` and grpc.aio do, with a context whose
`write` stalls like a client that stopped reading, so each ending happens every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from service.config import Task
from service.errors import InvalidInputError, ModelNotFoundError
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc.backpressure import PendingResponses
from service.grpc.requests import guarded
from service.grpc.tasks import _Servicer, streaming

REQUEST = tg.GenerateRequest(prompt="Hello", model_name="lm")
DELTA = tg.GenerateResponse(delta=tg.TextDelta(text="a"))
FINISHED = tg.GenerateResponse(finished=tg.GenerationFinished(model_name="lm", model_version="3"))
Script = Callable[[], AsyncIterator[tg.GenerateResponse]]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    def record(self, model: str, version: str, api: str, code: str, seconds: float) -> None:
        self.calls.append((model, version, api, code))


class Core:
    """The one model, `lm` version 3, is the default for generation; a call that ends without naming the model
    that answered is counted under it (named or not)."""

    def choose(self, kind: Task, model: str = "", version: str = "") -> SimpleNamespace:
        if model not in ("", "lm") or version not in ("", "3"):
            raise ModelNotFoundError(f"unknown model {model!r}")
        return SimpleNamespace(name="lm", version="3")


class Context:
    """What the wrapper and the write loops use of grpc.aio's ServicerContext. Writes after the first
    `writes` stall (the client stopped reading); `done()` runs the done callbacks, as gRPC does when the
    call's task is done."""

    def __init__(self, remaining: float | None = None, writes: int = 1) -> None:
        self.remaining, self.writes = remaining, writes
        self.written: list[Any] = []
        self.stalled = asyncio.Event()
        self.code: grpc.StatusCode | None = None
        self._callbacks: list[Callable[[Context], None]] = []

    def time_remaining(self) -> float | None:
        return self.remaining

    def peer(self) -> str:
        return "ipv4:127.0.0.1:5000"

    def add_done_callback(self, callback: Callable[[Context], None]) -> None:
        self._callbacks.append(callback)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        pass

    async def write(self, message: Any) -> None:
        self.written.append(message)
        if len(self.written) > self.writes:
            self.stalled.set()
            await asyncio.Event().wait()

    def done(self) -> None:
        for callback in self._callbacks:
            callback(self)


class Servicer(_Servicer):
    task = Task.TEXT_GENERATION

    def __init__(self, script: Script) -> None:
        super().__init__(Core(), Recorder(), PendingResponses(1 << 30, 1 << 30))  # type: ignore[arg-type]
        self.script = script

    @streaming("generate")
    async def Generate(self, request: Any, context: Any) -> AsyncIterator[tg.GenerateResponse]:
        async for message in self.script():
            yield message

    @property
    def counted(self) -> list[tuple[str, str, str, str]]:
        return self.recorder.calls  # type: ignore[attr-defined, no-any-return]


def guarded_call(servicer: Servicer) -> Callable[[Any, Any], Any]:
    """The behaviour gRPC runs for the method once `requests.add_service` has registered it."""
    handler = grpc.unary_stream_rpc_method_handler(
        servicer.Generate, tg.GenerateRequest.FromString, tg.GenerateResponse.SerializeToString
    )
    call = guarded(handler, "/deepserve.v1.TextGenerator/Generate", lambda method, reason: None).unary_stream
    assert call is not None
    return call  # type: ignore[no-any-return]


async def endless() -> AsyncIterator[tg.GenerateResponse]:
    while True:
        yield DELTA


async def cancel(task: asyncio.Task, context: Context) -> None:
    """Cancel the call's task as gRPC does, wait for it, then run the call's done callbacks."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    context.done()


@pytest.mark.parametrize(
    ("remaining", "code"),
    [(None, "CANCELLED"), (30.0, "CANCELLED"), (0.0, "DEADLINE_EXCEEDED")],
    ids=["client-gone", "client-cancel", "deadline"],
)
async def test_cancelled_while_a_message_is_written_counts_once_as_the_client_sees_it(
    remaining: float | None, code: str
) -> None:
    servicer, context = Servicer(endless), Context(remaining)
    task = asyncio.create_task(guarded_call(servicer)(REQUEST, context))
    await context.stalled.wait()  # the handler is suspended at its `yield`, gRPC is writing
    await cancel(task, context)
    assert servicer.counted == [("lm", "3", "generate", code)]


@pytest.mark.parametrize(("remaining", "code"), [(30.0, "CANCELLED"), (0.0, "DEADLINE_EXCEEDED")])
async def test_cancelled_while_computing_counts_once(remaining: float, code: str) -> None:
    computing = asyncio.Event()

    async def stuck() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        computing.set()
        await asyncio.Event().wait()
        yield DELTA

    servicer, context = Servicer(stuck), Context(remaining)
    task = asyncio.create_task(guarded_call(servicer)(REQUEST, context))
    await computing.wait()
    await cancel(task, context)
    assert servicer.counted == [("lm", "3", "generate", code)]


async def test_a_handler_dropped_at_a_yield_is_counted_when_the_call_is_done_and_only_then() -> None:
    """grpc.aio's own loop (`async for` over the generator, then write) does not close the generator when
    its write is cancelled: the call is counted when gRPC is done with it, not when (or if) the garbage
    collector finalizes the generator."""
    servicer, context = Servicer(endless), Context(30.0)
    responses = servicer.Generate(REQUEST, context)

    async def grpc_aio_loop() -> None:
        async for response in responses:
            await context.write(response)

    task = asyncio.create_task(grpc_aio_loop())
    await context.stalled.wait()
    await cancel(task, context)
    assert servicer.counted == [("lm", "3", "generate", "CANCELLED")]
    await responses.aclose()  # what the finalizer does, later
    assert servicer.counted == [("lm", "3", "generate", "CANCELLED")]


async def test_a_stream_that_ends_counts_once_as_ok_by_the_model_that_answered_before_the_call_is_done() -> None:
    async def finishes() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        yield FINISHED

    servicer, context = Servicer(finishes), Context(writes=2)
    assert await guarded_call(servicer)(REQUEST, context) is None
    assert context.written == [DELTA, FINISHED]
    assert servicer.counted == [("lm", "3", "generate", "OK")]
    context.done()
    assert servicer.counted == [("lm", "3", "generate", "OK")]


async def test_an_unknown_model_counts_as_unknown() -> None:
    async def fails() -> AsyncIterator[tg.GenerateResponse]:
        raise ModelNotFoundError("unknown model 'nope'")
        yield DELTA

    servicer, context = Servicer(fails), Context()
    assert await guarded_call(servicer)(tg.GenerateRequest(prompt="Hello", model_name="nope"), context) is None
    assert servicer.counted == [("_unknown", "", "generate", "NOT_FOUND")]


async def test_an_error_counts_once_with_its_status() -> None:
    async def fails() -> AsyncIterator[tg.GenerateResponse]:
        yield DELTA
        raise InvalidInputError("bad stop sequence")

    servicer, context = Servicer(fails), Context()
    assert await guarded_call(servicer)(REQUEST, context) is None
    assert context.code is grpc.StatusCode.INVALID_ARGUMENT
    context.done()
    assert servicer.counted == [("lm", "3", "generate", "INVALID_ARGUMENT")]
