"""The committed textgen_transformer generates the same text with its KV cache as with full recomputation.

Both paths run the server's scheduler, sampling and detokenizer on the committed files: `decoder_step.onnx`
through `KVCacheDecoder` (prefill, then one token per step), `model.onnx` through a full forward pass per
step, the cache again split over two lanes (two step threads, each with its own cache), and in a process lane
(`generation.engine: process`, built as the server builds it). The prompts run
together, so prefill batching, rows joining and leaving, and the context limit are all on the path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.kv_cache import KVCacheDecoder
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from service.batching.sequences import Finished, TextChunk
from service.handlers import engine_processes, process_lanes
from service.repository import ModelRepository
from service.runtime import CPU, ModelSession, load_step_model
from service.tasks.text_generation import TextGeneration
from service.types import GenerationRequest

MODELS = Path(__file__).resolve().parents[2] / "models"
PROMPTS = ["The for statement", "Exceptions are", "A class definition", "def f(x):", "The import statement " * 60]


@pytest.fixture(scope="module")
def model() -> tuple[TextGeneration, ForwardFn, Callable[[int], KVCacheDecoder]]:
    entry = ModelRepository(MODELS).load("textgen_transformer")
    session = ModelSession(entry.versions["1"], entry.config, [CPU])
    step = load_step_model(entry.step_models["1"], entry.config, [CPU], entry.name)
    task = TextGeneration(entry.name, entry.config, entry.path)

    def forward(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(task.feed(token_ids, mask), [task.output])[task.output]

    def cached(rows: int) -> KVCacheDecoder:
        return KVCacheDecoder(
            step.session.run, step.layers, step.heads, step.head_dim, rows, task.generation.context_length
        )

    return task, forward, cached


def generate(
    task: TextGeneration, decoder: Decoder | ForwardFn | Sequence[Decoder], max_active: int = 16, **sampling: object
) -> list[tuple[str, str, int]]:
    """(text, finish reason, generated tokens) of every prompt, all submitted at once."""

    async def run() -> list[tuple[str, str, int]]:
        g = task.generation
        config = SchedulerConfig(g.context_length, max_active, eos_id=g.eos_id)
        if isinstance(decoder, Decoder):
            decoders: list[Decoder] = [decoder]
        elif isinstance(decoder, Sequence):
            decoders = list(decoder)
        else:
            decoders = [RecomputeDecoder(decoder)]
        scheduler = GenerationScheduler("kv", decoders, config)
        scheduler.start()
        streams = []
        for i, prompt in enumerate(PROMPTS):
            request = task.prepare(GenerationRequest(prompt, 40 + 10 * i, **sampling))  # type: ignore[arg-type]
            streams.append(
                scheduler.submit(
                    request.prompt_ids, request.max_new_tokens, request.sampling, task.detokenizer(request.stop)
                )
            )
        results = []
        for stream in streams:
            events = [e async for e in stream]
            done = events[-1]
            assert isinstance(done, Finished)
            text = "".join(e.text for e in events if isinstance(e, TextChunk))
            results.append((text, done.reason.value, done.generated_tokens))
        await scheduler.close()
        return results

    return asyncio.run(run())


def test_greedy_text_is_the_same_with_and_without_the_cache(model) -> None:  # type: ignore[no-untyped-def]
    task, forward, cached = model
    with_cache = generate(task, cached(16), temperature=0.0)
    assert with_cache == generate(task, forward, temperature=0.0)
    assert all(text for text, _, _ in with_cache)
    assert with_cache[-1][1] == "context" and with_cache[-1][2] > 10  # the long prompt fills the context


def test_seeded_sampling_is_the_same_with_and_without_the_cache(model) -> None:  # type: ignore[no-untyped-def]
    task, forward, cached = model
    params = {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 11}
    assert generate(task, cached(16), **params) == generate(task, forward, **params)


def test_two_lanes_generate_the_same_text_as_one(model) -> None:  # type: ignore[no-untyped-def]
    task, _, cached = model
    params = {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 5}
    # 2 + 2 slots for 5 prompts: both lanes run, and the last prompt waits for the first free slot.
    assert generate(task, [cached(2), cached(2)], 4, **params) == generate(task, cached(16), **params)
    assert generate(task, [cached(2), cached(2)], 4, temperature=0.0) == generate(task, cached(16), temperature=0.0)


def test_a_process_lane_generates_the_same_text_as_a_thread_lane(model) -> None:  # type: ignore[no-untyped-def]
    """`generation.engine: process`: the step model loaded again in a child process, from the parent's
    `StepModel.reload`, as the server builds it (`handlers.child_decoder`)."""
    task, _, cached = model
    entry = ModelRepository(MODELS).load("textgen_transformer")
    step = load_step_model(entry.step_models["1"], entry.config, [CPU], entry.name)
    assert process_lanes(entry.config.generation.engine, step.session.providers[0])  # what the server runs here
    for params in ({"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 11}, {"temperature": 0.0}, {"seed": 3}):
        lanes = engine_processes("textgen_transformer:1", step, task)  # one lane of 16, as config.yaml has it
        assert generate(task, lanes, **params) == generate(task, cached(16), **params)  # type: ignore[arg-type]
