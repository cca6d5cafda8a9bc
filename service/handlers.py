"""A task model's handler, built once by the registry's load step (in a worker thread, off the event loop):
its task processing (`tasks/*`: labels, tokenizer, pre- and post-processing) and, for text generation, its
scheduler, wired to the model's sessions: a decoder per lane, the scheduler's settings from config.yaml, its
events into the model's metrics. The benchmarks build generation the same way, from here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.engine_process import EngineProcess
from service.batching.kv_cache import KVCacheDecoder
from service.batching.lanes import lane_slots
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from service.batching.slots import Slots
from service.config import ModelConfig, Task
from service.metrics import GenerationModelMetrics, ModelMetrics
from service.runtime import CPU, ModelSession, StepModel
from service.tasks.image_classification import ImageClassification
from service.tasks.sentiment import SentimentAnalysis
from service.tasks.text_generation import TextGeneration

TaskProcessing = ImageClassification | SentimentAnalysis | TextGeneration
TASKS: dict[Task, type[TaskProcessing]] = {
    Task.IMAGE_CLASSIFICATION: ImageClassification,
    Task.SENTIMENT: SentimentAnalysis,
    Task.TEXT_GENERATION: TextGeneration,
}


def task_processing(model: str, config: ModelConfig, model_dir: Path) -> TaskProcessing | None:
    """The model's task processing, its assets read and checked (ModelLoadError says what is wrong); None for
    a raw model."""
    kind = TASKS.get(config.task)
    return kind(model, config, model_dir) if kind is not None else None


def generation_scheduler(
    name: str,
    session: ModelSession,
    step: StepModel | None,
    task: TextGeneration,
    metrics: ModelMetrics,
    generation: GenerationModelMetrics,
    slots: Slots | None = None,
) -> GenerationScheduler:
    """`name` is the model and version ("textgen:1"); the scheduler's lanes start with `start()`, on the loop.
    `slots`: the server's run slots (`--workers`), taken for each step. With `generation.engine: process` each
    lane's steps run in a child process (started here: a child that cannot load raises `ModelLoadError`)."""
    observer = GenerationMetrics(metrics, generation)
    engines: list[Decoder | EngineProcess]
    if step is not None and process_lanes(task.generation.engine, step.session.providers[0]):
        engines = list(engine_processes(name, step, task))
    else:
        engines = list(lane_decoders(session, step, task))
    return GenerationScheduler(name, engines, scheduler_config(task), observer, slots)


def process_lanes(engine: str, step_provider: str) -> bool:
    """Whether a model's lanes run their steps in child processes: `generation.engine` (thread, process or
    auto) for a step model that ONNX Runtime runs on `step_provider` (auto: process lanes on the CPU only)."""
    return engine == "process" or (engine == "auto" and step_provider == CPU)


def engine_processes(name: str, step: StepModel, task: TextGeneration) -> list[EngineProcess]:
    """A started child process per lane (`generation.engine: process`), each with its lane's share of the active
    sequences; if one cannot start, those already started are stopped and its `ModelLoadError` raised."""
    g, pad = task.generation, task.encoder.settings.pad_id
    started: list[EngineProcess] = []
    try:
        for i, rows in enumerate(lane_rows(task)):
            factory = functools.partial(child_decoder, step.reload, rows, g.context_length, pad)
            started.append(EngineProcess(f"model '{name}' lane {i}", factory))
    except BaseException:
        for engine in started:
            engine.stop()
        raise
    return started


def lane_rows(task: TextGeneration) -> list[int]:
    """Each lane's share of the active sequences (`generation.lanes`)."""
    g = task.generation
    return lane_slots(g.max_active_sequences, min(g.lanes, g.max_active_sequences))


def child_decoder(load: Callable[[], StepModel], rows: int, context: int, pad_id: int) -> Decoder:
    """In an `EngineProcess`'s child: a lane's KV-cache decoder (a cache of `rows` sequences) on a session of
    its own, loaded (checked and warmed up) by `load`, the parent's `StepModel.reload`."""
    step = load()
    return KVCacheDecoder(step.session.run, step.layers, step.heads, step.head_dim, rows, context, pad_id)


def lane_decoders(session: ModelSession, step: StepModel | None, task: TextGeneration) -> list[Decoder]:
    """A decoder per lane (`generation.lanes`), each with its share of the active sequences."""
    return [lane_decoder(session, step, task, rows) for rows in lane_rows(task)]


def lane_decoder(session: ModelSession, step: StepModel | None, task: TextGeneration, rows: int) -> Decoder:
    """KV-cache decoding (a cache of `rows` sequences) when the model has a `generation.step_model`, else full
    recomputation of every sequence each step on model.onnx."""
    pad = task.encoder.settings.pad_id
    if step is None:
        return RecomputeDecoder(forward(session, task), pad)
    return KVCacheDecoder(
        step.session.run, step.layers, step.heads, step.head_dim, rows, task.generation.context_length, pad
    )


def forward(session: ModelSession, task: TextGeneration) -> ForwardFn:
    """The model's full forward pass: logits of every position."""
    output = task.output

    def run(token_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return session.run(task.feed(token_ids, attention_mask), [output])[output]

    return run


def scheduler_config(task: TextGeneration) -> SchedulerConfig:
    g = task.generation
    return SchedulerConfig(
        context_length=g.context_length,
        max_active_sequences=g.max_active_sequences,
        max_waiting=g.max_waiting,
        eos_id=g.eos_id,
        pad_id=task.encoder.settings.pad_id,
    )


class GenerationMetrics:
    """The scheduler's events → the model's Prometheus metrics (the generation ones exist only for models that
    generate: `Metrics.for_generation`)."""

    def __init__(self, metrics: ModelMetrics, generation: GenerationModelMetrics) -> None:
        self.m = metrics
        self.g = generation

    def sequences(self, active: int, waiting: int) -> None:
        self.g.active_sequences.set(active)
        self.g.waiting_sequences.set(waiting)

    def step(self, batch: int, seconds: float) -> None:
        self.m.batch_size.observe(batch)
        self.m.compute_duration.observe(seconds)

    def token(self, seconds: float, first: bool) -> None:
        (self.g.ttft if first else self.g.inter_token).observe(seconds)
        self.g.tokens.inc()

    def rejected(self, reason: str) -> None:
        self.m.rejected[reason].inc()
