"""Generation benchmark: continuous batching vs one request at a time vs static batching, in one process.

    python bench/generation.py [--model-repository models --model textgen_transformer --requests 16]

The same requests (prompts of varied length; max_new_tokens spread from 16 to what the context leaves
after the longest prompt, at most 128; seeded sampling, temperature 0.8, top-k 50 and top-p 0.95, or with
`--sampling model` the model's defaults, as a client that sends only a prompt gets; the end-of-text token
ignored so every request generates exactly its max_new_tokens) run three ways on the same ONNX Runtime
sessions, worker threads, decoder, sampling and detokenizing code, all arriving at once:

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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generation_costs import fixed_cost, step_costs  # noqa: E402
from bench.generation_modes import SAMPLINGS, Result, compare, scheduled, workload  # noqa: E402
from bench.transformer import write_standin  # noqa: E402
from service import handlers  # noqa: E402
from service.batching.decoders import Decoder, RecomputeDecoder  # noqa: E402
from service.config import Device  # noqa: E402
from service.memory import keep_heap_warm  # noqa: E402
from service.repository import ModelRepository  # noqa: E402
from service.runtime import (  # noqa: E402
    ModelSession,
    StepModel,
    available_providers,
    choose_providers,
    load_step_model,
)
from service.tasks.text_generation import TextGeneration  # noqa: E402

SAMPLING_HELP = (
    "workload: temperature 0.8, top-k 50, top-p 0.95; model: the model's defaults (no top-k), as a bare prompt"
)


def _ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:8.1f}" if values else "     n/a"


def report(title: str, results: list[Result]) -> None:
    base = next(r for r in results if r.mode == "one at a time")
    print(f"\n{title}")
    print(
        f"{'mode':<26}{'tokens':>7}{'seconds':>9}{'tok/s':>9}{'vs 1-at-a-time':>16}"
        f"{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50':>9}{'ITL p99':>9}{'steps':>7}{'rows':>7}"
    )
    for r in results:
        t = r.timings
        ratio = r.tokens_per_s / base.tokens_per_s
        latencies = f"{_ms(t.first, 50):>10}{_ms(t.first, 99):>10}{_ms(t.gaps, 50):>9}{_ms(t.gaps, 99):>9}"
        print(
            f"{r.mode:<26}{t.tokens:>7}{r.seconds:>9.2f}{r.tokens_per_s:>9.1f}{ratio:>15.2f}x{latencies}"
            f"{t.steps:>7}{t.rows:>7}"
        )
    cont, stat = results[0], next(r for r in results if r.mode == "static batching")
    print(
        f"continuous / static batching: {cont.tokens_per_s / stat.tokens_per_s:.2f}x tokens/s "
        f"(latencies in ms; TTFT from arrival, all requests arrive at once)"
    )


def load(
    repository: Path, name: str, device: Device = Device.CPU
) -> tuple[ModelSession, StepModel | None, TextGeneration, str]:
    keep_heap_warm()  # the server's heap policy (`deepserve serve` sets it), which numpy's temporaries go through
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
    parser.add_argument("--sampling", choices=list(SAMPLINGS), default="workload", help=SAMPLING_HELP)
    args = parser.parse_args()
    session, step, task, source = load(args.model_repository, args.model, Device(args.device))
    args.lanes = args.lanes or task.generation.lanes
    context, pad = task.generation.context_length, task.encoder.settings.pad_id
    forward = handlers.forward(session, task)

    def make_decoder(rows: int) -> Decoder:
        return handlers.lane_decoder(session, step, task, rows)

    requests = workload(task, args.requests, args.seed, args.sampling)
    cache = f"KV cache: {step.session.path.name}" if step else "no KV cache (no generation.step_model)"
    print(f"model: {source}; providers {session.providers}; {cache}")
    lengths = [len(r.prompt_ids) for r in requests]
    print(
        f"{len(requests)} requests, max_new_tokens {sorted(r.max_new_tokens for r in requests)}, "
        f"prompts of {min(lengths)}..{max(lengths)} tokens"
    )
    print("\n".join(step_costs(forward, make_decoder if step else None, 64, context)))
    asyncio.run(scheduled("warmup", [make_decoder(2)], task, requests[:2], 2))
    title = "ONNX Runtime on this machine" + (", with the KV cache" if step else "")
    results = asyncio.run(compare(make_decoder, forward if step else None, task, requests, args.lanes, args.repeats))
    report(title + (f" (fastest of {args.repeats} runs per mode)" if args.repeats > 1 else ""), results)
    if args.fixed_step_ms:
        fixed = fixed_cost(forward, args.fixed_step_ms / 1000)
        fixed_results = asyncio.run(compare(lambda _: RecomputeDecoder(fixed, pad), None, task, requests, 1, 1))
        report(
            f"forward pass of fixed cost ({args.fixed_step_ms:g} ms + one row, whatever the batch; no cache)",
            fixed_results,
        )


if __name__ == "__main__":
    main()
