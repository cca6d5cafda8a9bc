"""Generation benchmark: continuous batching vs one request at a time vs static batching, in one process.

    python bench/generation.py [--model-repository models --model textgen_transformer --requests 16]

The same requests (prompts of varied length; max_new_tokens spread from 16 to what the context leaves
after the longest prompt, at most 128; seeded sampling; the end-of-text token ignored so every request
generates exactly its max_new_tokens) run three ways on the same ONNX Runtime sessions, worker threads,
decoder, sampling and detokenizing code, all arriving at once:

- continuous: the server's `GenerationScheduler` with max_active_sequences = the number of requests;
  sequences leave the batch as soon as they finish.
- one at a time: the same scheduler with max_active_sequences = 1.
- static: batches of up to max_active_sequences that run until their longest member is done; finished
  rows stay in the batch (padding) and a new batch starts only when the whole previous one has ended.

When the model has a `generation.step_model` these run with the KV cache (`KVCacheDecoder`: prefill, then
one token per sequence per step), as the server does; a fourth row repeats continuous batching with full
recomputation (model.onnx every step, no cache) for comparison. Prints aggregate tokens/s, time to first
token (from arrival) and inter-token latency p50/p99, model steps and rows computed, with ratios to one at
a time (with the cache), and the cost of one model step at a few batch sizes. `--fixed-step-ms` adds a
table with a forward pass whose cost does not grow with the batch (a fixed sleep, as on an accelerator
with spare parallelism) to separate what the scheduler does from what the hardware allows. Without
models/<model>, a stand-in of the same shape with random weights and no step model (`bench/transformer.py`)
is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transformer import write_standin  # noqa: E402
from service import handlers  # noqa: E402
from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder  # noqa: E402
from service.batching.lanes import lane_slots  # noqa: E402
from service.batching.sampling import sample_batch  # noqa: E402
from service.batching.scheduler import GenerationScheduler  # noqa: E402
from service.config import Device  # noqa: E402
from service.repository import ModelRepository  # noqa: E402
from service.runtime import (  # noqa: E402
    ModelSession,
    StepModel,
    available_providers,
    choose_providers,
    load_step_model,
)
from service.tasks.text_generation import GenerationInput, TextGeneration  # noqa: E402
from service.types import GenerationRequest, TextChunk  # noqa: E402

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


def workload(task: TextGeneration, count: int, seed: int) -> list[GenerationInput]:
    context = task.generation.context_length
    rng = np.random.default_rng(seed)
    requests = []
    longest = max(len(task.prepare(GenerationRequest(p)).prompt_ids) for p in PROMPTS)
    new_tokens = np.linspace(16, min(128, context - longest), count).round().astype(int)
    for i, n in enumerate(rng.permutation(new_tokens)):
        asked = GenerationRequest(PROMPTS[i % len(PROMPTS)], int(n), temperature=0.8, top_k=50, top_p=0.95, seed=i)
        prepared = task.prepare(asked)
        requests.append(prepared)
    return requests


DecoderFactory = Callable[[int], Decoder]
"""A fresh decoder with room for this many sequences."""


async def scheduled(
    name: str, decoders: list[Decoder], task: TextGeneration, requests: list[GenerationInput], slots: int,
    eos_id: int | None = None,
) -> Result:  # fmt: skip
    """`eos_id`: None generates every request's max_new_tokens; the model's end-of-text token stops a request
    where the server would stop it."""
    timings = Timings()
    config = replace(
        handlers.scheduler_config(task), max_active_sequences=slots, max_waiting=len(requests), eos_id=eos_id
    )
    scheduler = GenerationScheduler(name, decoders, config, timings)
    scheduler.start()
    start = time.perf_counter()
    streams = [scheduler.submit(r.prompt_ids, r.max_new_tokens, r.sampling, task.detokenizer(r.stop)) for r in requests]
    await asyncio.gather(*(_drain(s) for s in streams))
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
                loop.call_soon_threadsafe(deliver, ids, sampled, live, time.perf_counter() - step_start,
                                          time.monotonic())  # fmt: skip
            decoder.release(ids)

    begin = time.perf_counter()
    await asyncio.to_thread(run)  # its completion is queued after every `deliver`
    return Result("static batching", time.perf_counter() - begin, timings)


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:8.1f}" if values else "     n/a"


def report(title: str, results: list[Result]) -> None:
    base = next(r for r in results if r.mode == "one at a time")
    print(f"\n{title}")
    print(f"{'mode':<26}{'tokens':>7}{'seconds':>9}{'tok/s':>9}{'vs 1-at-a-time':>16}"
          f"{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}{'steps':>7}{'rows':>7}")  # fmt: skip
    for r in results:
        t = r.timings
        ratio = r.tokens_per_s / base.tokens_per_s
        latencies = f"{_ms(t.first, 50):>10}{_ms(t.first, 99):>10}{_ms(t.gaps, 50):>9}{_ms(t.gaps, 99):>9}"
        print(f"{r.mode:<26}{t.tokens:>7}{r.seconds:>9.2f}{r.tokens_per_s:>9.1f}{ratio:>15.2f}x{latencies}"
              f"{t.steps:>7}{t.rows:>7}")  # fmt: skip
    cont, stat = results[0], next(r for r in results if r.mode == "static batching")
    print(f"continuous / static batching: {cont.tokens_per_s / stat.tokens_per_s:.2f}x tokens/s "
          f"(latencies in ms; TTFT from arrival, all requests arrive at once)")  # fmt: skip


def _per_call(run: Callable[[], object]) -> float:
    run()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < 0.5:
        run()
        runs += 1
    return (time.perf_counter() - start) / runs


def step_costs(forward: ForwardFn, make_decoder: DecoderFactory | None, length: int, context: int) -> list[str]:
    """One model step at batch 1, 4, 16: a full forward pass of `length` tokens, and a KV-cache decoding step
    (one new token per sequence against `length` and more cached ones)."""
    costs: dict[str, Callable[[int], float]] = {"full forward pass": lambda b: _forward_cost(forward, b, length)}
    if make_decoder is not None:
        costs["KV-cache decoding step"] = lambda b: _decode_cost(make_decoder, b, length, context)
    lines = []
    for label, cost in costs.items():
        ms = {b: cost(b) * 1000 for b in (1, 4, 16)}
        parts = [f"batch {b}: {t:.2f} ms ({t / b:.3f} ms/row)" for b, t in ms.items()]
        lines.append(f"{label} at {length} tokens: " + ", ".join(parts))
    return lines


def _forward_cost(forward: ForwardFn, batch: int, length: int) -> float:
    ids, mask = np.ones((batch, length), np.int64), np.ones((batch, length), np.int64)
    return _per_call(lambda: forward(ids, mask))


def _decode_cost(make_decoder: DecoderFactory, batch: int, length: int, context: int) -> float:
    """Mean decoding step (decoder bookkeeping included) over the 32 tokens after a prefill of `length`."""
    total, steps = 0.0, 0
    while total < 0.5:
        decoder, tokens = make_decoder(batch), [[1] * length for _ in range(batch)]
        decoder.next_logits(range(batch), tokens)
        for _ in range(min(32, context - length - 1)):
            for t in tokens:
                t.append(1)
            start = time.perf_counter()
            decoder.next_logits(range(batch), tokens)
            total, steps = total + time.perf_counter() - start, steps + 1
    return total / steps


async def compare(
    make_decoder: DecoderFactory, forward: ForwardFn | None, task: TextGeneration, requests: list[GenerationInput],
    lanes: int, repeats: int,
) -> list[Result]:  # fmt: skip
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


def fixed_cost(forward: ForwardFn, seconds: float) -> ForwardFn:
    """The real model's logits, but the call always takes `seconds` more than computing row 0 alone would."""

    def run(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        time.sleep(seconds)
        logits = forward(token_ids[:1], mask[:1])
        return np.broadcast_to(logits, (len(token_ids), *logits.shape[1:]))

    return run


def load(
    repository: Path, name: str, device: Device = Device.CPU
) -> tuple[ModelSession, StepModel | None, TextGeneration, str]:
    repo = ModelRepository(repository)
    source = f"{repository}/{name}"
    if name not in repo.names():
        tmp = Path(tempfile.mkdtemp(prefix="deepserve-bench-"))
        write_standin(tmp, name)
        repo, source = ModelRepository(tmp), f"stand-in with random weights ({name} not in {repository})"
    entry = repo.load(name)
    version = max(entry.versions, key=int)
    providers = choose_providers(device, entry.config.execution.providers, available_providers())
    strict = device is Device.CUDA
    session = ModelSession(entry.versions[version], entry.config, providers, strict)
    step_file = entry.step_models.get(version)
    step = load_step_model(step_file, entry.config, providers, name, strict) if step_file else None
    return session, step, TextGeneration(name, entry.config, entry.path), source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="textgen_transformer")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode; the fastest is reported")
    parser.add_argument(
        "--lanes", type=int, default=0, help="lanes of continuous batching (0: the model's generation.lanes)"
    )
    parser.add_argument("--fixed-step-ms", type=float, default=0.0, help="step cost of an extra table (0: none)")
    parser.add_argument("--device", choices=[d.value for d in Device], default="cpu", help="as `deepserve serve`'s")
    args = parser.parse_args()
    session, step, task, source = load(args.model_repository, args.model, Device(args.device))
    args.lanes = args.lanes or task.generation.lanes
    context, pad = task.generation.context_length, task.encoder.settings.pad_id
    forward = handlers.forward(session, task)

    def make_decoder(rows: int) -> Decoder:
        return handlers.lane_decoder(session, step, task, rows)

    requests = workload(task, args.requests, args.seed)
    cache = f"KV cache: {step.session.path.name}" if step else "no KV cache (no generation.step_model)"
    print(f"model: {source}; providers {session.providers}; {cache}")
    lengths = [len(r.prompt_ids) for r in requests]
    print(f"{len(requests)} requests, max_new_tokens {sorted(r.max_new_tokens for r in requests)}, "
          f"prompts of {min(lengths)}..{max(lengths)} tokens")  # fmt: skip
    print("\n".join(step_costs(forward, make_decoder if step else None, 64, context)))
    asyncio.run(scheduled("warmup", [make_decoder(2)], task, requests[:2], 2))
    title = "ONNX Runtime on this machine" + (", with the KV cache" if step else "")
    results = asyncio.run(compare(make_decoder, forward if step else None, task, requests, args.lanes, args.repeats))
    report(title + (f" (fastest of {args.repeats} runs per mode)" if args.repeats > 1 else ""), results)
    if args.fixed_step_ms:
        fixed = fixed_cost(forward, args.fixed_step_ms / 1000)
        fixed_results = asyncio.run(compare(lambda _: RecomputeDecoder(fixed, pad), None, task, requests, 1, 1))
        report(f"forward pass of fixed cost ({args.fixed_step_ms:g} ms + one row, whatever the batch; no cache)",
               fixed_results)  # fmt: skip


if __name__ == "__main__":
    main()
