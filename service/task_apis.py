"""The task APIs' core, a thin facade: choose the model, run its task processing around the model, stream
generations.

Knows nothing of gRPC or HTTP (like MLServer's DataPlane): `grpc/tasks.py` and `http/tasks.py` convert
messages and call these methods. Each loaded task model's pipeline carries its handler, built when the
registry loaded it (`handlers.py`): the task processing (labels, tokenizer) and, for generation, a
`GenerationScheduler` on the model's sessions.

Classification and sentiment go through the model's dynamic batcher (`pipeline.run`), one batch item
per image or text, so requests are batched with each other and with V2 calls. Generation runs in the
scheduler's continuous batches, in its own step threads (`generation.lanes`), on the model's sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.batching.scheduler import GenerationScheduler
from service.batching.sequences import Finished
from service.config import Task
from service.errors import InvalidInputError
from service.pipeline import ModelPipeline
from service.registry import ModelRegistry
from service.tasks.image_classification import ImageClassification, LabelScore, pixels
from service.tasks.sentiment import SentimentAnalysis, SentimentResult
from service.tasks.text_generation import TextGeneration
from service.types import FinishReason, GenerationRequest, TextChunk

T = TypeVar("T", ImageClassification, SentimentAnalysis, TextGeneration)
INLINE_PIXELS = 256 * 256
"""Images with up to this many pixels in total are decoded on the event loop (about a millisecond);
larger ones in a thread, so one big request never stalls the others. Sizes come from the headers."""
INLINE_CHARS = 64 * 1024
"""Texts and prompts up to this many characters in total are tokenized on the event loop."""


@dataclass(frozen=True, slots=True)
class Classified:
    model: str
    version: str
    results: list[list[LabelScore]]


@dataclass(frozen=True, slots=True)
class Analyzed:
    model: str
    version: str
    results: list[SentimentResult]


@dataclass(frozen=True, slots=True)
class GenerationDone:
    """The last event of a generation."""

    reason: FinishReason
    prompt_tokens: int
    generated_tokens: int
    prompt_truncated: bool
    model: str
    version: str


class TaskAPIs:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    # ---- the three APIs -------------------------------------------------------------------------
    async def classify(
        self,
        images: Sequence[bytes],
        top_k: int = 0,
        model: str = "",
        version: str = "",
        deadline: float | None = None,
    ) -> Classified:
        pipeline, task = self._get(Task.IMAGE_CLASSIFICATION, model, version, ImageClassification)
        k = task.top_k(top_k)
        task.check_count(images)
        feeds = await _maybe_in_thread(pixels(images) <= INLINE_PIXELS, task.preprocess, images)
        with pipeline.serving():
            outputs = await _run_all(pipeline, feeds, deadline)
        return Classified(pipeline.name, pipeline.version, [task.postprocess(o, k) for o in outputs])

    async def analyze(
        self, texts: Sequence[str | bytes], model: str = "", version: str = "", deadline: float | None = None
    ) -> Analyzed:
        pipeline, task = self._get(Task.SENTIMENT, model, version, SentimentAnalysis)
        task.check_count(texts)
        prepared = await _maybe_in_thread(sum(map(len, texts)) <= INLINE_CHARS, task.preprocess, texts)
        with pipeline.serving():
            outputs = await _run_all(pipeline, [feed for feed, _, _ in prepared], deadline)
        results = [task.postprocess(o, n, cut) for o, (_, n, cut) in zip(outputs, prepared, strict=True)]
        return Analyzed(pipeline.name, pipeline.version, results)

    async def generate(
        self, asked: GenerationRequest, deadline: float | None = None
    ) -> AsyncGenerator[TextChunk | GenerationDone, None]:
        """Text pieces as they are generated, then one `GenerationDone`. Leaving early (or being
        cancelled) frees the request's slot at the scheduler's next step."""
        pipeline, task = self._get(Task.TEXT_GENERATION, asked.model, asked.version, TextGeneration)
        scheduler = pipeline.scheduler
        assert scheduler is not None
        request = await _maybe_in_thread(len(asked.prompt) <= INLINE_CHARS, task.prepare, asked)
        stream = scheduler.submit(
            request.prompt_ids, request.max_new_tokens, request.sampling, task.detokenizer(request.stop), deadline
        )
        with pipeline.serving():
            try:
                async for event in stream:
                    if isinstance(event, Finished):
                        yield GenerationDone(
                            event.reason,
                            event.prompt_tokens,
                            event.generated_tokens,
                            request.prompt_truncated,
                            pipeline.name,
                            pipeline.version,
                        )
                    else:
                        yield event
            finally:
                stream.cancel()

    # ---- models -----------------------------------------------------------------------------------
    def serves(self, task: Task) -> bool:
        """Whether a loaded model serves `task` (health of the task's gRPC service)."""
        return any(p.config.task is task for p in self.registry.loaded())

    def scheduler(self, model: str, version: str = "") -> GenerationScheduler | None:
        return self.registry.get(model, version).scheduler

    def choose(self, kind: Task, model: str = "", version: str = "") -> ModelPipeline:
        """The model a request for `kind` goes to: the one it names, else the task's default."""
        if version and not model:
            raise InvalidInputError("model_version needs model_name")
        return self.registry.get(model, version) if model else self.registry.by_task(kind.value)

    def _get(self, kind: Task, model: str, version: str, expected: type[T]) -> tuple[ModelPipeline, T]:
        pipeline = self.choose(kind, model, version)
        if pipeline.config.task is not kind:
            raise InvalidInputError(
                f"model '{pipeline.name}' serves the task {pipeline.config.task.value}, not {kind.value}; "
                f"name a {kind.value} model, or none for the default"
            )
        task = pipeline.task
        assert isinstance(task, expected)  # built with the pipeline, from the same config
        return pipeline, task


async def _maybe_in_thread(cheap: bool, fn, *args):  # type: ignore[no-untyped-def]
    """`fn(*args)` here when it is cheap, else in a thread (decoding, tokenizing are CPU work)."""
    if cheap:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


async def _run_all(pipeline: ModelPipeline, feeds: list[dict[str, np.ndarray]], deadline: float | None) -> list:
    """Every feed through the batcher; on the first failure the others are withdrawn."""
    tasks = [asyncio.ensure_future(pipeline.run(feed, deadline)) for feed in feeds]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
