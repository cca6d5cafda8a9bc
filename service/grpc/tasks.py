"""The task APIs over gRPC (`deepserve.v1`): ImageClassifier, SentimentAnalyzer, TextGenerator.

Thin adapters: take the request apart, call `TaskAPIs`, build the response. Errors become statuses through
`errors.status_of` (the one table), applied by one decorator for unary calls and one for streams, which
also record the request metrics. Services register through `requests.add_service`, which guards their
handlers: a request that does not parse (invalid UTF-8 in a text field, say) is refused with
INVALID_ARGUMENT naming the field before it reaches a servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from service.config import Task
from service.errors import DeepserveError
from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc.backpressure import PendingResponses
from service.grpc.errors import cancelled_status, fail
from service.grpc.requests import GuardedServer, add_service
from service.metrics import UNKNOWN_MODEL, RequestRecorder
from service.task_apis import GenerationDone, TaskAPIs
from service.types import FinishReason, GenerationRequest, TextChunk

INLINE_ITEMS = 16
SERVICES: dict[str, Task] = {
    ic.DESCRIPTOR.services_by_name["ImageClassifier"].full_name: Task.IMAGE_CLASSIFICATION,
    sa.DESCRIPTOR.services_by_name["SentimentAnalyzer"].full_name: Task.SENTIMENT,
    tg.DESCRIPTOR.services_by_name["TextGenerator"].full_name: Task.TEXT_GENERATION,
}
"""gRPC service → the task its default model must serve (its health follows that model's readiness)."""
FINISH_REASONS = {
    FinishReason.LENGTH: tg.FINISH_REASON_LENGTH,
    FinishReason.STOP: tg.FINISH_REASON_STOP,
    FinishReason.EOS: tg.FINISH_REASON_EOS,
    FinishReason.CONTEXT: tg.FINISH_REASON_CONTEXT,
    FinishReason.CANCELLED: tg.FINISH_REASON_CANCELLED,
}


class _Servicer:
    task: Task
    """The task of the service's default model."""

    def __init__(self, core: TaskAPIs, recorder: RequestRecorder, pending: PendingResponses) -> None:
        self.core = core
        self.recorder = recorder
        self.pending = pending

    def _record(self, request: Any, model: str, version: str, api: str, code: str, seconds: float) -> None:
        """Metrics by the model that answered. A call that ended without an answer naming it (an error, a deadline,
        a cancel) counts under the model it went to: the one it names, or the task's default, if loaded (only
        loaded names and versions, so labels stay bounded); else under `_unknown`."""
        if not model:
            model, version = self._chosen(request)
        self.recorder.record(model or UNKNOWN_MODEL, version, api, code, seconds)

    def _chosen(self, request: Any) -> tuple[str, str]:
        try:
            pipeline = self.core.choose(self.task, request.model_name, request.model_version)
        except DeepserveError:
            return "", ""
        return pipeline.name, pipeline.version


def unary(api: str) -> Callable:
    """Error mapping and request metrics for a unary method."""

    def wrap(method: Callable[[Any, Any, Any], Awaitable[Any]]) -> Callable:
        @functools.wraps(method)
        async def handler(self: _Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, code, model, version = time.perf_counter(), "OK", "", ""
            try:
                self.pending.admit(context)
                response = await method(self, request, context)
                model, version = response.model_name, response.model_version
                self.pending.hold(context, response.ByteSize())
                return response
            except asyncio.CancelledError:
                code = cancelled_status(context).name
                raise
            except Exception as err:  # noqa: BLE001 - every failure gets a status
                code = fail(context, err)
                return None
            finally:
                self._record(request, model, version, api, code, time.perf_counter() - start)

        return handler

    return wrap


class _StreamOutcome:
    """The request metric of one streamed call, recorded exactly once (`record`; later calls do nothing)."""

    __slots__ = ("api", "model", "request", "servicer", "start", "version")

    def __init__(self, servicer: _Servicer, request: Any, api: str) -> None:
        self.servicer, self.request, self.api = servicer, request, api
        self.start, self.model, self.version = time.perf_counter(), "", ""

    def record(self, code: str) -> None:
        request, self.request = self.request, None  # let go: gRPC keeps the done callback in a reference cycle
        if request is not None:
            self.servicer._record(request, self.model, self.version, self.api, code, time.perf_counter() - self.start)

    def call_done(self, context: grpc.aio.ServicerContext) -> None:
        """gRPC is done with the call: if the handler was dropped without being closed, it was cancelled."""
        if self.request is not None:
            self.record(cancelled_status(context).name)


def streaming(api: str) -> Callable:
    """Error mapping and request metrics for a server-streaming method (an async generator).

    gRPC cancels a call by cancelling the task that runs the handler. While the handler is computing, it
    gets the CancelledError; while gRPC is writing a message it yielded, it is suspended at that `yield`
    and gets nothing: the loop that writes (`requests.guarded`) then closes it (GeneratorExit), and one that
    does not close it (grpc.aio's own) leaves it to the garbage collector. Either way the call ended before
    the handler did, which is the client cancelling or the deadline (`cancelled_status`), never OK. The
    outcome is recorded when the handler ends, and from the call's done callback if it has not ended by
    then, once either way."""

    def wrap(method: Callable[[Any, Any, Any], AsyncGenerator[Any, None]]) -> Callable:
        @functools.wraps(method)
        async def handler(self: _Servicer, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            outcome, code = _StreamOutcome(self, request, api), None
            context.add_done_callback(outcome.call_done)
            try:
                self.pending.admit(context)
                async with contextlib.aclosing(method(self, request, context)) as messages:
                    async for message in messages:
                        if message.WhichOneof("event") == "finished":
                            outcome.model = message.finished.model_name
                            outcome.version = message.finished.model_version
                        yield message
                code = "OK"
            except Exception as err:  # noqa: BLE001 - every failure gets a status
                code = fail(context, err)
            finally:  # no code: cancelled (CancelledError) or closed at a `yield` (GeneratorExit)
                outcome.record(code or cancelled_status(context).name)

        return handler

    return wrap


async def _values(request: Any, field: str) -> list[Any]:
    """A repeated field as a list. Turning megabytes of strings into Python objects takes milliseconds, so a
    request with many of them does it in a worker thread, where the event loop gets the GIL between items.
    (Counting is free; sizes are not: `ByteSize()` walks the strings.)"""
    values = getattr(request, field)
    if len(values) <= INLINE_ITEMS:
        return list(values)
    return await asyncio.to_thread(list, values)


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class ImageClassifierServicer(_Servicer):
    task = Task.IMAGE_CLASSIFICATION

    @unary("classify")
    async def Classify(self, request: ic.ClassifyRequest, context: grpc.aio.ServicerContext) -> ic.ClassifyResponse:
        result = await self.core.classify(
            await _values(request, "images"),
            request.top_k,
            request.model_name,
            request.model_version,
            _deadline(context),
        )
        return ic.ClassifyResponse(
            model_name=result.model,
            model_version=result.version,
            classifications=[
                ic.Classification(
                    labels=[ic.LabelScore(label=s.label, probability=s.probability, index=s.index) for s in scores]
                )
                for scores in result.results
            ],
        )


class SentimentAnalyzerServicer(_Servicer):
    task = Task.SENTIMENT

    @unary("sentiment")
    async def Analyze(self, request: sa.AnalyzeRequest, context: grpc.aio.ServicerContext) -> sa.AnalyzeResponse:
        result = await self.core.analyze(
            await _values(request, "texts"), request.model_name, request.model_version, _deadline(context)
        )
        return sa.AnalyzeResponse(
            model_name=result.model,
            model_version=result.version,
            sentiments=[
                sa.Sentiment(
                    label=r.label,
                    probability=r.probability,
                    tokens=r.tokens,
                    truncated=r.truncated,
                    scores=[sa.ClassScore(label=k, probability=v) for k, v in r.scores.items()],
                )
                for r in result.results
            ],
        )


class TextGeneratorServicer(_Servicer):
    task = Task.TEXT_GENERATION

    @streaming("generate")
    async def Generate(
        self, request: tg.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tg.GenerateResponse]:
        asked = GenerationRequest(
            request.prompt,
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature if request.HasField("temperature") else None,
            top_k=request.top_k,
            top_p=request.top_p if request.HasField("top_p") else None,
            seed=request.seed if request.HasField("seed") else None,
            repetition_penalty=request.repetition_penalty if request.HasField("repetition_penalty") else None,
            stop=tuple(request.stop),
            model=request.model_name,
            version=request.model_version,
        )
        events = self.core.generate(asked, _deadline(context))
        async with contextlib.aclosing(events):
            async for event in events:
                yield _generate_response(event)


def _generate_response(event: TextChunk | GenerationDone) -> tg.GenerateResponse:
    if isinstance(event, TextChunk):
        return tg.GenerateResponse(delta=tg.TextDelta(text=event.text))
    return tg.GenerateResponse(
        finished=tg.GenerationFinished(
            finish_reason=FINISH_REASONS[event.reason],
            prompt_tokens=event.prompt_tokens,
            generated_tokens=event.generated_tokens,
            prompt_truncated=event.prompt_truncated,
            model_name=event.model,
            model_version=event.version,
        )
    )


def add_task_services(
    server: grpc.aio.Server | GuardedServer, core: TaskAPIs, recorder: RequestRecorder, pending: PendingResponses
) -> None:
    """Register the three task services on `server` (their names for reflection and health: `SERVICES`)."""
    for servicer, module, name in (
        (ImageClassifierServicer(core, recorder, pending), ic, "ImageClassifier"),
        (SentimentAnalyzerServicer(core, recorder, pending), sa, "SentimentAnalyzer"),
        (TextGeneratorServicer(core, recorder, pending), tg, "TextGenerator"),
    ):
        add_service(server, servicer, module.DESCRIPTOR.services_by_name[name], module)
