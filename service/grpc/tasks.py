"""The task APIs over gRPC (`deepserve.v1`): ImageClassifier, SentimentAnalyzer, TextGenerator.

Thin adapters: take the request apart, call `TaskAPIs`, build the response, raising domain errors. Services
register through `requests.add_service`, which puts their handlers behind the request boundary (`boundary.py`):
it counts every call, answers errors through the one table, and refuses a request that does not parse (invalid
UTF-8 in a text field, say) with INVALID_ARGUMENT naming the field before it reaches a servicer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from service.config import Task
from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc.requests import GuardedServer, add_service
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
    def __init__(self, core: TaskAPIs) -> None:
        self.core = core


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


def add_task_services(server: grpc.aio.Server | GuardedServer, core: TaskAPIs) -> None:
    """Register the three task services on `server` (their names for reflection and health: `SERVICES`)."""
    for servicer, module, name in (
        (ImageClassifierServicer(core), ic, "ImageClassifier"),
        (SentimentAnalyzerServicer(core), sa, "SentimentAnalyzer"),
        (TextGeneratorServicer(core), tg, "TextGenerator"),
    ):
        add_service(server, servicer, module.DESCRIPTOR.services_by_name[name], module)
