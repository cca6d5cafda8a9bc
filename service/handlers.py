"""How a text generation model is wired to its scheduler: a decoder per lane on the model's sessions, the
scheduler's settings from config.yaml, its events into the model's metrics. The server and the benchmarks
build generation the same way, from here."""

from __future__ import annotations

import numpy as np

from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.kv_cache import KVCacheDecoder
from service.batching.scheduler import SchedulerConfig, lane_slots
from service.metrics import GenerationModelMetrics, ModelMetrics
from service.runtime import ModelSession, StepModel
from service.tasks.text_generation import TextGeneration


def lane_decoders(session: ModelSession, step: StepModel | None, task: TextGeneration) -> list[Decoder]:
    """A decoder per lane (`generation.lanes`), each with its share of the active sequences."""
    g = task.generation
    lanes = min(g.lanes, g.max_active_sequences)
    return [lane_decoder(session, step, task, rows) for rows in lane_slots(g.max_active_sequences, lanes)]


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
