"""The task APIs' core: choose the model, run the task's processing around the model, stream generations.

Knows nothing of gRPC (like MLServer's DataPlane): `grpc/tasks.py` converts messages and calls these
methods. For each loaded model whose config task is image_classification, sentiment or text_generation it
keeps the task's processing (labels, tokenizer) and, for generation, a `GenerationScheduler` on the
model's session; both follow the registry's loads, reloads and unloads (it listens to the registry).

Classification and sentiment go through the model's dynamic batcher (`pipeline.run`), one batch item
per image or text, so requests are batched with each other and with V2 calls. Generation runs in the
scheduler's continuous batches, in its own step threads (`generation.lanes`), on the model's sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service.batching.scheduler import GenerationScheduler
from service.batching.sequences import Finished
from service.config import Task
from service.errors import DeepserveError, InvalidInputError, UnavailableError
from service.handlers import GenerationMetrics, lane_decoders, scheduler_config
from service.memory import release_memory
from service.pipeline import ModelPipeline
from service.registry import ModelRegistry
from service.tasks.image_classification import ImageClassification, LabelScore, pixels
from service.tasks.sentiment import SentimentAnalysis, SentimentResult
from service.tasks.text_generation import TextGeneration
from service.types import FinishReason, TextChunk

log = logging.getLogger(__name__)

TaskProcessing = ImageClassification | SentimentAnalysis | TextGeneration
T = TypeVar("T", ImageClassification, SentimentAnalysis, TextGeneration)
TASKS: dict[Task, type[TaskProcessing]] = {
    Task.IMAGE_CLASSIFICATION: ImageClassification,
    Task.SENTIMENT: SentimentAnalysis,
    Task.TEXT_GENERATION: TextGeneration,
}
INLINE_PIXELS = 256 * 256
"""Images with up to this many pixels in total are decoded on the event loop (about a millisecond);
larger ones in a thread, so one big request never stalls the others. Sizes come from the headers."""
INLINE_CHARS = 64 * 1024
"""Texts and prompts up to this many characters in total are tokenized on the event loop."""
DRAIN_SECONDS = 30.0
"""Generations on an unloaded or replaced model version get this long to finish."""


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


@dataclass(slots=True)
class _Handler:
    pipeline: ModelPipeline
    task: TaskProcessing | None = None
    scheduler: GenerationScheduler | None = None
    error: str | None = None


class TaskAPIs:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._handlers: dict[tuple[str, str], _Handler] = {}
        self._closing: set[asyncio.Task] = set()
        registry.listeners.append(self.sync)

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
        with _tracked(pipeline):
            outputs = await _run_all(pipeline, feeds, deadline)
        return Classified(pipeline.name, pipeline.version, [task.postprocess(o, k) for o in outputs])

    async def analyze(
        self, texts: Sequence[str | bytes], model: str = "", version: str = "", deadline: float | None = None
    ) -> Analyzed:
        pipeline, task = self._get(Task.SENTIMENT, model, version, SentimentAnalysis)
        task.check_count(texts)
        prepared = await _maybe_in_thread(sum(map(len, texts)) <= INLINE_CHARS, task.preprocess, texts)
        with _tracked(pipeline):
            outputs = await _run_all(pipeline, [feed for feed, _, _ in prepared], deadline)
        results = [task.postprocess(o, n, cut) for o, (_, n, cut) in zip(outputs, prepared, strict=True)]
        return Analyzed(pipeline.name, pipeline.version, results)

    async def generate(
        self,
        prompt: str | bytes,
        *,
        max_new_tokens: int = 0,
        temperature: float | None = None,
        top_k: int = 0,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
        model: str = "",
        version: str = "",
        deadline: float | None = None,
    ) -> AsyncGenerator[TextChunk | GenerationDone, None]:
        """Text pieces as they are generated, then one `GenerationDone`. Leaving early (or being
        cancelled) frees the request's slot at the scheduler's next step."""
        pipeline, task = self._get(Task.TEXT_GENERATION, model, version, TextGeneration)
        scheduler = self._handlers[(pipeline.name, pipeline.version)].scheduler
        assert scheduler is not None
        request = await _maybe_in_thread(
            len(prompt) <= INLINE_CHARS, task.prepare, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop
        )
        stream = scheduler.submit(
            request.prompt_ids, request.max_new_tokens, request.sampling, task.detokenizer(request.stop), deadline
        )
        with _tracked(pipeline):
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
        """Whether a loaded model can serve `task` (health of the task's gRPC service)."""
        return any(h.error is None and h.pipeline.config.task is task for h in self._handlers.values())

    def scheduler(self, model: str, version: str = "") -> GenerationScheduler | None:
        pipeline = self.registry.get(model, version)
        handler = self._handlers.get((pipeline.name, pipeline.version))
        return handler.scheduler if handler else None

    def sync(self) -> None:
        """Registry listener: processing for newly loaded task models; unloaded ones are let go."""
        loaded = {(p.name, p.version): p for p in self.registry.loaded()}
        for key, handler in list(self._handlers.items()):
            if loaded.get(key) is not handler.pipeline:
                del self._handlers[key]
                self._retire(handler, DRAIN_SECONDS)
        for key, pipeline in loaded.items():
            if key not in self._handlers and pipeline.config.task in TASKS:
                self._handlers[key] = self._build(pipeline)

    async def close(self, timeout: float | None = 1.0) -> None:
        handlers, self._handlers = list(self._handlers.values()), {}
        for handler in handlers:
            self._retire(handler, timeout)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

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
        handler = self._handlers.get((pipeline.name, pipeline.version))
        if handler is None or handler.pipeline is not pipeline:
            self.sync()
            handler = self._handlers[(pipeline.name, pipeline.version)]
        if handler.error is not None or not isinstance(handler.task, expected):
            raise UnavailableError(f"model '{pipeline.name}' cannot serve {kind.value}: {handler.error}")
        return pipeline, handler.task

    def _build(self, pipeline: ModelPipeline) -> _Handler:
        config = pipeline.config
        try:
            model_dir = self.registry.repository.model_dir(pipeline.name)
            task = TASKS[config.task](pipeline.name, config, model_dir)
        except DeepserveError as err:
            log.error("task processing failed to load", extra={"model": pipeline.name, "error": err.message})
            return _Handler(pipeline, error=err.message)
        except Exception:  # one broken model must not stop the others
            log.exception("task processing failed to load", extra={"model": pipeline.name})
            return _Handler(pipeline, error="its task assets failed to load (the server log has the details)")
        handler = _Handler(pipeline, task)
        if isinstance(task, TextGeneration):
            generation = self.registry.metrics.for_generation(pipeline.name, pipeline.version)
            handler.scheduler = GenerationScheduler(
                f"{pipeline.name}:{pipeline.version}",
                lane_decoders(pipeline.session, pipeline.step_model, task),
                scheduler_config(task),
                GenerationMetrics(pipeline.metrics, generation),
            )
            handler.scheduler.start()
        return handler

    def _retire(self, handler: _Handler, timeout: float | None) -> None:
        """Stop a let-go handler's scheduler in the background (its generations get `timeout` to finish). Once
        its lanes have exited and it is dropped, with its decoders' KV caches and the step model's session,
        the memory they held goes back to the OS."""
        scheduler, handler.scheduler = handler.scheduler, None
        if scheduler is None:
            return

        async def stop(scheduler: GenerationScheduler) -> None:
            await scheduler.close(timeout)
            del scheduler
            await asyncio.to_thread(release_memory)

        closing = asyncio.get_running_loop().create_task(stop(scheduler))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)


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


@contextlib.contextmanager
def _tracked(pipeline: ModelPipeline) -> Iterator[None]:
    """In-flight gauge and ModelStatistics success/failure for one task request."""
    start, ok = time.perf_counter(), False
    pipeline.in_flight.value += 1
    try:
        yield
        ok = True
    finally:
        pipeline.in_flight.value -= 1
        pipeline.observer.request_done(time.perf_counter() - start, ok)
