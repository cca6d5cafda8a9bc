"""One loaded model version: its session behind a dynamic batcher, with statistics and metrics, and for a
task model its handler (task processing; a text generation model's scheduler), built with it at load.

`infer` takes decoded tensors (V2 requests; task APIs after their preprocessing) through validation
and the batcher; the session runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from concurrent.futures import Executor
from dataclasses import replace
from types import TracebackType

import numpy as np

from service.batching.batcher import DynamicBatcher
from service.batching.collate import CollateSpec, Tensors
from service.batching.policy import BatchPolicy
from service.batching.scheduler import GenerationScheduler
from service.batching.slots import Slots
from service.config import ModelConfig
from service.handlers import TaskProcessing
from service.metrics import ModelMetrics
from service.runtime import ModelSession, StepModel
from service.types import BatchStat, InferRequest, InferResponse, ModelStats
from service.validation import RequestLimits, validate_inputs, validate_outputs

DRAIN_SECONDS = 30.0
"""Generations on an unloaded or replaced model version get this long to finish."""


def batch_policy(config: ModelConfig) -> BatchPolicy:
    """The batcher's policy from config.yaml; with batching off each request runs alone."""
    db = config.dynamic_batching
    policy = BatchPolicy(
        max_batch_size=max(config.max_batch_size, 1),
        max_queue_size=db.max_queue_size,
        default_timeout_s=db.default_timeout_ms / 1000.0 if db.default_timeout_ms else None,
        instances=config.instances,
        batched=False,
    )
    if not (config.batched and db.enabled):
        return policy
    pad_values = {t.name: t.pad_value for t in config.inputs if t.variable and t.pad_value is not None}
    variable_outputs = {
        t.name: tuple(i + 1 for i, d in enumerate(t.dims) if d == -1) for t in config.outputs if t.variable
    }
    return replace(
        policy,
        batched=True,
        max_queue_delay_s=db.max_queue_delay_ms / 1000.0,
        preferred_batch_sizes=db.preferred_batch_sizes,
        collate=CollateSpec(pad_values, variable_outputs),
    )


class InFlight:
    """A count that a gauge reads at scrape time."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def get(self) -> int:
        return self.value


class StatsObserver:
    """Feeds the ModelStatistics counters and the Prometheus metrics from the same events.

    Called on the event loop only (a run ends there: `DynamicBatcher._settle`, or `_run_now` for a lone request,
    and requests end there), where ModelStatistics reads the counters too: they need no lock."""

    def __init__(self, metrics: ModelMetrics, capacity: int) -> None:
        self.stats = ModelStats()
        self.metrics = metrics
        metrics.queue_capacity.set(capacity)

    def rejected(self, reason: str, count: int = 1) -> None:
        self.metrics.rejected[reason].inc(count)

    def batch_done(
        self, items: int, waits: list[float], collate_s: float, infer_s: float, split_s: float, ok: bool
    ) -> None:
        m, s = self.metrics, self.stats
        m.batch_size.observe(items)
        m.compute_duration.observe(collate_s + infer_s + split_s)
        for w in waits:
            m.queue_duration.observe(w)
        if not ok:
            return
        n = len(waits)
        s.execution_count += 1
        s.inference_count += items
        s.last_inference_ms = int(time.time() * 1000)
        s.queue.add(sum(waits), n)
        s.compute_input.add(collate_s * n, n)
        s.compute_infer.add(infer_s * n, n)
        s.compute_output.add(split_s * n, n)
        b = s.batches.get(items)
        if b is None:
            b = s.batches[items] = BatchStat()
        b.compute_input.add(collate_s)
        b.compute_infer.add(infer_s)
        b.compute_output.add(split_s)

    def request_done(self, seconds: float, ok: bool) -> None:
        (self.stats.success if ok else self.stats.fail).add(seconds)


class Serving:
    """`ModelPipeline.serving`'s block (a class, not `contextlib.contextmanager`: it is entered once per request,
    and a generator-based one costs several times more)."""

    __slots__ = ("in_flight", "observer", "start")

    def __init__(self, in_flight: InFlight, observer: StatsObserver) -> None:
        self.in_flight, self.observer = in_flight, observer
        self.start = 0.0

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        self.in_flight.value += 1

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.in_flight.value -= 1
        self.observer.request_done(time.perf_counter() - self.start, kind is None)


class ModelPipeline:
    def __init__(
        self,
        name: str,
        version: str,
        config: ModelConfig,
        session: ModelSession,
        executor: Executor,
        metrics: ModelMetrics,
        step_model: StepModel | None = None,
        limits: RequestLimits | None = None,
        task: TaskProcessing | None = None,
        scheduler: GenerationScheduler | None = None,
        slots: Slots | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.config = config
        self.session = session
        self.step_model = step_model
        """The KV-cache decoding graph of a text_generation model (`generation.step_model`), if it has one."""
        self.task = task
        """The task's processing (None for a raw model), shared by the model's versions."""
        self.scheduler = scheduler
        """A text generation model's continuous batching (its lanes start with `start`)."""
        self.metrics = metrics
        self.limits = limits or RequestLimits.resolve(name, config)
        """Checked on V2 requests before decoding (`check_declared`) and before batching (`check_values`)."""
        policy = batch_policy(config)
        self.observer = StatsObserver(metrics, policy.max_queue_size)
        # The batcher runs the session's own bound method, not one of this pipeline's: a pipeline → batcher →
        # pipeline cycle would keep a replaced version (and its ONNX Runtime sessions) alive until a full
        # garbage collection, so repeated reloads would pile them up.
        self.batcher = DynamicBatcher(
            f"{name}:{version}", session.run, policy, executor, self.observer, run_inline=session.run_lone, slots=slots
        )
        self.in_flight = InFlight()
        """Requests accepted and not yet answered (V2 and task APIs, `serving`; the event loop counts them)."""
        # Both gauges are read when /metrics is scraped, not set on every request; neither reader keeps this
        # version alive once it is replaced (the metric children outlive it).
        metrics.inflight.set_function(self.in_flight.get)
        batcher = weakref.ref(self.batcher)
        metrics.queue_depth.set_function(lambda: b.queue_depth if (b := batcher()) is not None else 0)

    def start(self) -> None:
        """On the event loop, once the version is in service."""
        if self.scheduler is not None:
            self.scheduler.start()

    async def close(self, timeout: float | None = None) -> None:
        """Queued requests get `timeout` to run, generations at most `DRAIN_SECONDS`; the rest fail UNAVAILABLE."""
        drain = DRAIN_SECONDS if timeout is None else min(timeout, DRAIN_SECONDS)
        closing = [self.batcher.close(timeout), *([self.scheduler.close(drain)] if self.scheduler else [])]
        await asyncio.gather(*closing)

    def serving(self) -> Serving:
        """One request served by this version (a V2 inference, a task API call), as a `with` block: counted in
        flight while it runs, then in ModelStatistics as a success or a failure with its duration."""
        return Serving(self.in_flight, self.observer)

    async def infer(self, request: InferRequest) -> InferResponse:
        with self.serving():
            if not request.validated:
                validate_inputs(self.config, self.name, request.inputs)
                self.limits.check_values(request.inputs)
                validate_outputs(self.config, self.name, request.outputs)
            outputs = await self.run(request.inputs, request.deadline)
        if request.outputs:
            outputs = {n: outputs[n] for n in request.outputs}
        return InferResponse(self.name, self.version, outputs, request.id)

    async def run(self, inputs: dict[str, np.ndarray], deadline: float | None = None) -> Tensors:
        """Tensors through the batcher, without validation (for task APIs that built them)."""
        return await self.batcher.submit(inputs, deadline)
