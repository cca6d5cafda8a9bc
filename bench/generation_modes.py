"""The modes that bench/generation.py compares on one workload: continuous batching and one request at a time
(the server's scheduler), static batching, and the interleaved runs of them all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from service import handlers
from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.engine_process import EngineProcess
from service.batching.lanes import lane_slots
from service.batching.sampling import sample_batch
from service.batching.scheduler import GenerationScheduler
from service.tasks.text_generation import GenerationInput, TextGeneration
from service.types import GenerationRequest, TextChunk

PROMPTS = [
    "The for statement",
    "Exceptions are raised when",
    "A class definition is an executable statement that",
    "The import statement",
    "Lambda expressions",
    "In a function call, keyword arguments must follow positional arguments, and",
    "The while statement is used for repeated execution",
    "Comparisons",
]


@dataclass
class Timings:
    """Per-token times seen by one mode."""

    first: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    rows: int = 0
    steps: int = 0
    batches: list[int] = field(default_factory=list)
    """Rows of each model step, in order."""

    def reset(self) -> None:
        self.__dict__.update(Timings().__dict__)

    def sequences(self, active: int, waiting: int) -> None:
        pass

    def step(self, batch: int, seconds: float) -> None:
        self.steps += 1
        self.rows += batch
        self.batches.append(batch)

    def token(self, seconds: float, first: bool) -> None:
        (self.first if first else self.gaps).append(seconds)
        self.tokens += 1

    def rejected(self, reason: str) -> None:
        pass


@dataclass(frozen=True)
class Result:
    mode: str
    seconds: float
    timings: Timings

    @property
    def tokens_per_s(self) -> float:
        return self.timings.tokens / self.seconds


SAMPLINGS: dict[str, dict[str, float]] = {"workload": {"temperature": 0.8, "top_k": 50, "top_p": 0.95}, "model": {}}
"""The benches' sampling choices: the workload's own (top-k 50), or none asked, so that each request takes the
model's defaults (`generation.default_*` in its config; no top-k), as a client sending only a prompt does."""


def workload(task: TextGeneration, count: int, seed: int, sampling: str = "workload") -> list[GenerationInput]:
    context = task.generation.context_length
    rng = np.random.default_rng(seed)
    requests = []
    longest = max(len(task.prepare(GenerationRequest(p)).prompt_ids) for p in PROMPTS)
    new_tokens = np.linspace(16, min(128, context - longest), count).round().astype(int)
    for i, n in enumerate(rng.permutation(new_tokens)):
        asked = GenerationRequest(PROMPTS[i % len(PROMPTS)], int(n), seed=i, **SAMPLINGS[sampling])  # type: ignore[arg-type]
        prepared = task.prepare(asked)
        requests.append(prepared)
    return requests


DecoderFactory = Callable[[int], Decoder]
"""A fresh decoder with room for this many sequences."""


async def scheduled(
    name: str,
    decoders: list[Decoder] | list[EngineProcess],
    task: TextGeneration,
    requests: list[GenerationInput],
    slots: int,
    eos_id: int | None = None,
    warm: bool = False,
) -> Result:
    """`eos_id`: None generates every request's max_new_tokens; the model's end-of-text token stops a request
    where the server would stop it. `warm`: the requests run once before the clock starts, on the same
    scheduler (process lanes: fresh children, whose first burst pays their first runs of its shapes, as a
    server's do only once)."""
    timings = Timings()
    config = replace(
        handlers.scheduler_config(task), max_active_sequences=slots, max_waiting=len(requests), eos_id=eos_id
    )
    scheduler = GenerationScheduler(name, decoders, config, timings)
    scheduler.start()

    async def all_at_once() -> None:
        submit = scheduler.submit
        streams = [submit(r.prompt_ids, r.max_new_tokens, r.sampling, task.detokenizer(r.stop)) for r in requests]
        await asyncio.gather(*(_drain(s) for s in streams))

    if warm:
        await all_at_once()
        timings.reset()
    start = time.perf_counter()
    await all_at_once()
    seconds = time.perf_counter() - start
    await scheduler.close()
    return Result(name, seconds, timings)


async def _drain(stream) -> str:  # type: ignore[no-untyped-def]
    return "".join([e.text async for e in stream if isinstance(e, TextChunk)])


async def static(decoder: Decoder, task: TextGeneration, requests: list[GenerationInput], slots: int) -> Result:
    """Batches of `slots`, each run until its longest member ends; finished rows keep their place. Steps run
    in a thread of their own and hand their tokens to the event loop to detokenize, as a scheduler lane does."""
    loop, timings = asyncio.get_running_loop(), Timings()
    detokenizers = [task.detokenizer(r.stop) for r in requests]
    start = time.monotonic()
    last = [start] * len(requests)

    def deliver(ids: list[int], sampled: list[int], live: list[bool], seconds: float, at: float) -> None:
        timings.step(len(ids), seconds)
        for i, token, counted in zip(ids, sampled, live, strict=True):
            if counted:
                detokenizers[i].add(token)
                timings.token(at - last[i], first=last[i] == start)
                last[i] = at

    def run() -> None:
        for first in range(0, len(requests), slots):
            batch = requests[first : first + slots]
            ids = list(range(first, first + len(batch)))
            tokens = [list(r.prompt_ids) for r in batch]
            rngs = [np.random.default_rng(r.sampling.seed) for r in batch]
            remaining = [r.max_new_tokens for r in batch]
            while any(remaining):
                step_start = time.perf_counter()
                logits = decoder.next_logits(ids, tokens)
                sampled = sample_batch(logits, [r.sampling for r in batch], rngs)
                live = [n > 0 for n in remaining]
                for i, token in enumerate(sampled):
                    tokens[i].append(token)  # finished rows keep running (and their cache keeps growing)
                    remaining[i] = max(0, remaining[i] - 1)
                loop.call_soon_threadsafe(
                    deliver, ids, sampled, live, time.perf_counter() - step_start, time.monotonic()
                )
            decoder.release(ids)

    begin = time.perf_counter()
    await asyncio.to_thread(run)  # its completion is queued after every `deliver`
    return Result("static batching", time.perf_counter() - begin, timings)


def minimal_loop(decoder: Decoder, requests: list[GenerationInput], eos_id: int | None, context: int) -> Result:
    """The simplest continuous batching there is, as a peer: one thread, all requests admitted at once, each step
    the decoder's logits and `sample_batch` (with each request's seeded generator and repetition penalty, so the
    tokens are the scheduler's), finished rows released; no event loop, streams, detokenizer or metrics. What the
    model step and numpy sampling alone allow from Python."""
    timings = Timings()
    tokens = [list(r.prompt_ids) for r in requests]
    rngs = [np.random.default_rng(r.sampling.seed) for r in requests]
    live = list(range(len(requests)))
    start = time.perf_counter()
    while live:
        logits = decoder.next_logits(live, [tokens[i] for i in live])
        generated = [tokens[i][len(requests[i].prompt_ids) :] for i in live]
        sampled = sample_batch(logits, [requests[i].sampling for i in live], [rngs[i] for i in live], generated)
        timings.step(len(live), 0.0)
        going, ended = [], []
        for i, token in zip(live, sampled, strict=True):
            tokens[i].append(token)
            timings.tokens += 1
            done = len(tokens[i]) - len(requests[i].prompt_ids) >= requests[i].max_new_tokens
            (ended if token == eos_id or done or len(tokens[i]) >= context else going).append(i)
        decoder.release(ended)
        live = going
    return Result("minimal loop", time.perf_counter() - start, timings)


async def compare(
    make_decoder: DecoderFactory,
    forward: ForwardFn | None,
    task: TextGeneration,
    requests: list[GenerationInput],
    lanes: int,
    repeats: int,
) -> list[Result]:
    """Each mode `repeats` times, interleaved (so a burst of other load on the machine hits all modes alike);
    the fastest run of each mode is kept. Continuous batching runs with `lanes` lanes (each with its share of
    the slots), and also with one when that differs."""
    slots = len(requests)

    def continuous(name: str, count: int, decoder: DecoderFactory) -> Callable[[], Awaitable[Result]]:
        shares = lane_slots(slots, count)
        return lambda: scheduled(name, [decoder(rows) for rows in shares], task, requests, slots)

    label = "continuous batching" + (f", {lanes} lanes" if lanes > 1 else "")
    modes = [continuous(label, lanes, make_decoder)]
    if lanes > 1:
        modes.append(continuous("continuous batching, 1 lane", 1, make_decoder))
    modes += [
        lambda: static(make_decoder(slots), task, requests, slots),
        lambda: scheduled("one at a time", [make_decoder(1)], task, requests, 1),
    ]
    if forward is not None:
        pad = task.encoder.settings.pad_id
        modes.append(continuous("continuous, no KV cache", lanes, lambda _: RecomputeDecoder(forward, pad)))
    runs: list[list[Result]] = [[] for _ in modes]
    for _ in range(repeats):
        for mode, results in zip(modes, runs, strict=True):
            results.append(await mode())
    return [max(results, key=lambda r: r.tokens_per_s) for results in runs]
