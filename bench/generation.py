"""Generation benchmark: continuous batching vs one request at a time vs static batching, in one process.

    python bench/generation.py [--model-repository models --model textgen_transformer --requests 16]

The same requests (prompts of varied length; max_new_tokens spread from 16 to what the context leaves
after the longest prompt, at most 128; seeded sampling; the end-of-text token ignored so every request
generates exactly its max_new_tokens) run three ways on the
same ONNX Runtime session, worker threads, sampling and detokenizing code, all arriving at once:

- continuous: the server's `GenerationScheduler` with max_active_sequences = the number of requests;
  sequences leave the batch as soon as they finish.
- one at a time: the same scheduler with max_active_sequences = 1.
- static: batches of up to max_active_sequences that run until their longest member is done; finished
  rows stay in the batch (padding) and a new batch starts only when the whole previous one has ended.

Prints aggregate tokens/s, time to first token (from arrival) and inter-token latency p50/p99, forward
passes and rows computed, with ratios to one-at-a-time. A second table repeats the comparison with a
forward pass whose cost does not grow with the batch (a fixed sleep, as on an accelerator with spare
parallelism) to separate what the scheduler does from what the hardware allows. Without models/<model>, a
stand-in of the same shape with random weights (`bench/transformer.py`) is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transformer import write_standin  # noqa: E402
from service.batching.sampling import sample  # noqa: E402
from service.batching.scheduler import ForwardFn, GenerationScheduler, SchedulerConfig  # noqa: E402
from service.batching.sequences import TextChunk, collate  # noqa: E402
from service.repository import ModelRepository  # noqa: E402
from service.runtime import CPU, ModelSession  # noqa: E402
from service.tasks.text_generation import GenerationInput, TextGeneration  # noqa: E402

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

    def sequences(self, active: int, waiting: int) -> None:
        pass

    def step(self, batch: int, seconds: float) -> None:
        self.steps += 1
        self.rows += batch

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


def workload(task: TextGeneration, count: int, seed: int) -> list[GenerationInput]:
    context = task.generation.context_length
    rng = np.random.default_rng(seed)
    requests = []
    longest = max(len(task.prepare(p).prompt_ids) for p in PROMPTS)
    new_tokens = np.linspace(16, min(128, context - longest), count).round().astype(int)
    for i, n in enumerate(rng.permutation(new_tokens)):
        prepared = task.prepare(PROMPTS[i % len(PROMPTS)], int(n), temperature=0.8, top_k=50, top_p=0.95, seed=i)
        requests.append(prepared)
    return requests


async def scheduled(
    name: str, forward: ForwardFn, task: TextGeneration, requests: list[GenerationInput], slots: int, executor: Executor
) -> Result:
    timings = Timings()
    config = SchedulerConfig(task.generation.context_length, slots, len(requests), eos_id=None, pad_id=0)
    scheduler = GenerationScheduler(name, forward, config, executor, timings)
    scheduler.start()
    start = time.perf_counter()
    streams = [scheduler.submit(r.prompt_ids, r.max_new_tokens, r.sampling, task.detokenizer(r.stop)) for r in requests]
    await asyncio.gather(*(_drain(s) for s in streams))
    seconds = time.perf_counter() - start
    await scheduler.close()
    return Result(name, seconds, timings)


async def _drain(stream) -> str:  # type: ignore[no-untyped-def]
    return "".join([e.text async for e in stream if isinstance(e, TextChunk)])


async def static(
    forward: ForwardFn, task: TextGeneration, requests: list[GenerationInput], slots: int, executor: Executor
) -> Result:
    """Batches of `slots`, each run until its longest member ends; finished rows keep their place."""
    loop, timings = asyncio.get_running_loop(), Timings()
    start = time.perf_counter()
    for first in range(0, len(requests), slots):
        batch = requests[first : first + slots]
        tokens = [list(r.prompt_ids) for r in batch]
        rngs = [np.random.default_rng(r.sampling.seed) for r in batch]
        detoks = [task.detokenizer(r.stop) for r in batch]
        remaining = [r.max_new_tokens for r in batch]
        last = [start] * len(batch)
        while any(remaining):
            step_start = time.perf_counter()
            sampled = await loop.run_in_executor(executor, _static_step, forward, tokens, batch, rngs)
            timings.step(len(batch), time.perf_counter() - step_start)
            now = time.perf_counter()
            for i, token in enumerate(sampled):
                if remaining[i]:
                    tokens[i].append(token)
                    detoks[i].add(token)
                    timings.token(now - last[i], first=len(tokens[i]) == len(batch[i].prompt_ids) + 1)
                    last[i] = now
                    remaining[i] -= 1
    return Result("static batching", time.perf_counter() - start, timings)


def _static_step(
    forward: ForwardFn, tokens: list[list[int]], batch: list[GenerationInput], rngs: list[np.random.Generator]
) -> list[int]:
    token_ids, mask, lengths = collate(tokens, pad_id=0)
    logits = forward(token_ids, mask)[np.arange(len(tokens)), lengths - 1]
    return [sample(logits[i], r.sampling, rngs[i]) for i, r in enumerate(batch)]


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:8.1f}" if values else "     n/a"


def report(title: str, results: list[Result]) -> None:
    base = next(r for r in results if r.mode == "one at a time")
    print(f"\n{title}")
    print(f"{'mode':<20}{'tokens':>7}{'seconds':>9}{'tok/s':>9}{'vs 1-at-a-time':>16}"
          f"{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}{'forwards':>10}{'rows':>7}")  # fmt: skip
    for r in results:
        t = r.timings
        ratio = r.tokens_per_s / base.tokens_per_s
        latencies = f"{_ms(t.first, 50):>10}{_ms(t.first, 99):>10}{_ms(t.gaps, 50):>9}{_ms(t.gaps, 99):>9}"
        print(f"{r.mode:<20}{t.tokens:>7}{r.seconds:>9.2f}{r.tokens_per_s:>9.1f}{ratio:>15.2f}x{latencies}"
              f"{t.steps:>10}{t.rows:>7}")  # fmt: skip
    cont, stat = results[0], next(r for r in results if r.mode == "static batching")
    print(f"continuous / static batching: {cont.tokens_per_s / stat.tokens_per_s:.2f}x tokens/s "
          f"(latencies in ms; TTFT from arrival, all requests arrive at once)")  # fmt: skip


def forward_costs(forward: ForwardFn, length: int) -> str:
    parts = []
    for batch in (1, 4, 16):
        ids, mask = np.ones((batch, length), np.int64), np.ones((batch, length), np.int64)
        forward(ids, mask)
        start, runs = time.perf_counter(), 0
        while time.perf_counter() - start < 0.5:
            forward(ids, mask)
            runs += 1
        per_call = (time.perf_counter() - start) / runs
        parts.append(f"batch {batch}: {per_call * 1000:.1f} ms ({per_call * 1000 / batch:.2f} ms/row)")
    return f"forward pass at length {length}: " + ", ".join(parts)


async def compare(
    forward: ForwardFn, task: TextGeneration, requests: list[GenerationInput], executor: Executor
) -> list[Result]:
    slots = len(requests)
    return [
        await scheduled("continuous batching", forward, task, requests, slots, executor),
        await static(forward, task, requests, slots, executor),
        await scheduled("one at a time", forward, task, requests, 1, executor),
    ]


def fixed_cost(forward: ForwardFn, seconds: float) -> ForwardFn:
    """The real model's logits, but the call always takes `seconds` more than computing row 0 alone would."""

    def run(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        logits = forward(token_ids[:1], mask[:1])
        return np.broadcast_to(logits, (len(token_ids), *logits.shape[1:]))

    return run


def load(repository: Path, name: str) -> tuple[ModelSession, TextGeneration, str]:
    repo = ModelRepository(repository)
    source = f"{repository}/{name}"
    if name not in repo.names():
        tmp = Path(tempfile.mkdtemp(prefix="deepserve-bench-"))
        write_standin(tmp, name)
        repo, source = ModelRepository(tmp), f"stand-in with random weights ({name} not in {repository})"
    entry = repo.load(name)
    version = max(entry.versions, key=int)
    session = ModelSession(entry.versions[version], entry.config, [CPU])
    return session, TextGeneration(name, entry.config, entry.path), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="textgen_transformer")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fixed-step-ms", type=float, default=10.0, help="step cost of the second table")
    args = parser.parse_args()
    session, task, source = load(args.model_repository, args.model)
    output = task.output

    def forward(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(task.feed(token_ids, mask), [output])[output]

    requests = workload(task, args.requests, args.seed)
    print(f"model: {source}; providers {session.providers}")
    lengths = [len(r.prompt_ids) for r in requests]
    print(f"{len(requests)} requests, max_new_tokens {sorted(r.max_new_tokens for r in requests)}, "
          f"prompts of {min(lengths)}..{max(lengths)} tokens")  # fmt: skip
    print(forward_costs(forward, 64))
    with ThreadPoolExecutor(4, thread_name_prefix="infer") as executor:
        asyncio.run(scheduled("warmup", forward, task, requests[:2], 2, executor))
        report("ONNX Runtime on this machine", asyncio.run(compare(forward, task, requests, executor)))
        step = fixed_cost(forward, args.fixed_step_ms / 1000)
        report(f"forward pass of fixed cost ({args.fixed_step_ms:g} ms + one row, whatever the batch)",
               asyncio.run(compare(step, task, requests, executor)))  # fmt: skip


if __name__ == "__main__":
    main()
