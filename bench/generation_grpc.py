"""Generation over gRPC against the same scheduler in-process, and both against ONNX Runtime alone.

    python bench/generation_grpc.py [--model-repository models --model textgen_transformer --streams 16]

The workload of bench/generation.py (prompts of varied length, max_new_tokens 16..128, seeded sampling: the
workload's top-k 50, or with `--sampling model` the model's defaults, as a bare prompt gets them),
generated three ways:
1. in-process: the server's `GenerationScheduler` with the model's own settings (lanes, KV-cache step model,
   end-of-text token), all requests arriving at once, on thread lanes (whose step graph calls the bound is
   taken from); and, for a model whose server runs process lanes (`generation.engine: process`, or `auto`
   with the step model on the CPU), again on process lanes as the server runs it (each lane's steps in a child
   process: `service/batching/engine_process.py`);
2. over gRPC: `deepserve serve` as a subprocess, `--streams` concurrent `TextGenerator.Generate` calls from
   real grpc.aio clients in this process, all sent at once;
3. the bound: what ONNX Runtime alone needs for the in-process run's model steps, with the same rows and
   cache span per step: the step graph run once per step at that many rows and that span, right after each
   in-process run (`step_timing.Replay`: session.run only, random cache values), so that run and bound see the
   same phase of a machine whose speed swings between runs; the ratios are per run. Prefill is costed as a
   decoding step, so the bound is if anything too high. A table of the step graph's time by rows and span
   (measured once, at the start) is printed too.
   As a cross-check that needs no second measurement, the in-process runs also time their own step graph
   calls: the share of each run's wall time spent in ONNX Runtime (1.0 would be no overhead at all).
4. a minimal loop (`generation_modes.minimal_loop`): the same decoder and sampling in one thread with nothing
   else (no event loop, streams or detokenizer), generating the same tokens: what a Python server with numpy
   sampling reaches here with no scheduling at all; in-process / minimal loop is what deepserve's scheduler costs.
5. gRPC streaming alone: bench/peers/echo_server.py on uvloop, a grpc.aio server with no model that streams as
   many one-token deltas per call as the call asks for, driven by the same client: what the transport costs per
   token. If the server's generation work and the transport's simply added up, over gRPC could reach at most
   1 / (1/in-process + 1/transport) tokens/s; the bench prints that ratio beside the measured one.
A request's seed makes its text the same alone or beside others, so both runs generate the same tokens.
Modes alternate `--repeats` times and the fastest run of each is kept (the medians are printed too: a run
lasts a few tenths of a second, and a shared machine moves single runs by more than the ratios look for).
Prints tokens/s, time to first token (from sending) and inter-token latency (between text deltas over gRPC)
p50/p99, and the ratios the issue asks for: in-process / bound and gRPC / in-process (goals: at least 0.85 each).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generation import SAMPLING_HELP, _ms, load  # noqa: E402
from bench.generation_modes import (  # noqa: E402
    PROMPTS,
    SAMPLINGS,
    Result,
    Timings,
    minimal_loop,
    scheduled,
    workload,
)
from bench.load import ECHO_SERVER, free_port, serve_command  # noqa: E402
from bench.step_timing import Replay, TimedDecoder, spans, step_graph_costs, timed  # noqa: E402
from service.batching.decoders import Decoder  # noqa: E402
from service.config import Device  # noqa: E402
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg  # noqa: E402
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc  # noqa: E402
from service.handlers import engine_processes, lane_decoders, process_lanes  # noqa: E402
from service.runtime import ModelSession, StepModel  # noqa: E402
from service.tasks.text_generation import GenerationInput, TextGeneration  # noqa: E402


async def over_grpc(
    address: str, model: str, requests: list[GenerationInput], prompts: list[str], sampling: str
) -> Result:
    timings = Timings()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tg_grpc.TextGeneratorStub(channel)

        async def one(i: int, request: GenerationInput) -> None:
            message = tg.GenerateRequest(
                prompt=prompts[i],
                max_new_tokens=request.max_new_tokens,
                seed=i,
                model_name=model,
                **SAMPLINGS[sampling],
            )
            sent = last = time.perf_counter()
            first = True
            async for event in stub.Generate(message, timeout=300):
                now = time.perf_counter()
                if event.HasField("delta"):
                    timings.token(now - (sent if first else last), first)
                    first, last = False, now
                else:
                    generated.append(event.finished.generated_tokens)

        generated: list[int] = []
        start = time.perf_counter()
        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        seconds = time.perf_counter() - start
    timings.tokens = sum(generated)  # a delta may carry several tokens: count what the server generated
    return Result("over gRPC", seconds, timings)


async def ready(address: str, model: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = tg_grpc.TextGeneratorStub(channel)
        while True:
            try:
                async for _ in stub.Generate(tg.GenerateRequest(prompt="x", max_new_tokens=2, model_name=model)):
                    pass
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


@dataclass
class Compared:
    """The runs of each mode: all of them, so the fastest and the medians can both be reported."""

    local: list[Result] = field(default_factory=list)
    remote: list[Result] = field(default_factory=list)
    transport: list[Result] = field(default_factory=list)
    """The same client against the model-less streaming server."""
    processes: list[Result] = field(default_factory=list)
    """In-process on process lanes (where the server runs them: `handlers.process_lanes`)."""
    minimal: list[Result] = field(default_factory=list)
    """The minimal one-thread loop on the same decoder and sampling."""
    bounds: list[float] = field(default_factory=list)
    """Per in-process run: seconds of the step graph alone on its steps (`Replay`), measured right after it."""
    shares: list[float] = field(default_factory=list)
    """Per in-process run: the share of its wall time spent in the step graph's session.run."""
    shapes: list[list[tuple[int, int]]] = field(default_factory=list)
    """Per in-process run: (rows, cache span) of each decoder call."""
    decoding: list[float] = field(default_factory=list)
    """Per in-process run: the share of its wall time spent in the decoders (step graph included)."""

    @staticmethod
    def fastest(results: list[Result]) -> Result:
        return max(results, key=lambda r: r.tokens_per_s)

    @staticmethod
    def median(results: list[Result]) -> float:
        return float(np.median([r.tokens_per_s for r in results]))


async def compare(
    args: argparse.Namespace,
    task: TextGeneration,
    session: ModelSession,
    step: StepModel,
    requests: list[GenerationInput],
    prompts: list[str],
    address: str,
    echo: str,
) -> Compared:
    generation = task.generation
    timed_step, step_session = timed(step)
    replay = Replay(step, generation.context_length, generation.max_active_sequences)

    lanes: list[TimedDecoder] = []

    def decoders() -> list[Decoder]:
        """The server's lane decoders, each step graph call and each decoder call timed."""
        lanes[:] = [TimedDecoder(d) for d in lane_decoders(session, timed_step, task)]
        return list(lanes)

    await scheduled("warmup", decoders(), task, requests[:2], 2, generation.eos_id)
    await ready(address, args.model)
    runs = Compared()
    for _ in range(args.repeats):
        slots = generation.max_active_sequences
        step_session.spent = 0.0
        result = await scheduled("in-process", decoders(), task, requests, slots, generation.eos_id)
        runs.shares.append(step_session.spent / result.seconds)
        runs.decoding.append(sum(d.spent for d in lanes) / result.seconds)
        runs.shapes.append([shape for d in lanes for shape in d.shapes])
        runs.local.append(result)
        runs.bounds.append(replay.seconds(runs.shapes[-1]))
        runs.minimal.append(minimal_loop(decoders()[0], requests, generation.eos_id, generation.context_length))
        if process_lanes(generation.engine, step.session.providers[0]):
            engines = engine_processes(args.model, step, task)  # started before the clock starts
            runs.processes.append(
                await scheduled("in-process, process lanes", engines, task, requests, slots, generation.eos_id, True)
            )
        runs.remote.append(await over_grpc(address, args.model, requests, prompts, args.sampling))
        runs.transport.append(await over_grpc(echo, args.model, requests, prompts, args.sampling))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="textgen_transformer")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=[d.value for d in Device], default="cpu", help="as `deepserve serve`'s")
    parser.add_argument("--sampling", choices=list(SAMPLINGS), default="workload", help=SAMPLING_HELP)
    args = parser.parse_args()
    session, step, task, source = load(args.model_repository, args.model, Device(args.device))
    if step is None:
        sys.exit(f"{args.model} has no generation.step_model: this bench measures the KV-cache path")
    requests = workload(task, args.streams, 0, args.sampling)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.streams)]
    port = free_port()
    flags = ("--http-port", "0", "--log-level", "warning", "--device", args.device)
    cmd = serve_command(args.model_repository, port, free_port(), *flags)
    server = subprocess.Popen(cmd, cwd=ROOT)
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, str(ECHO_SERVER), str(echo_port), "--uvloop"])
    try:
        addresses = f"127.0.0.1:{port}", f"127.0.0.1:{echo_port}"
        runs = asyncio.run(compare(args, task, session, step, requests, prompts, *addresses))
    finally:
        for process in (server, echo):
            process.terminate()
            process.wait(30)
    local, remote = Compared.fastest(runs.local), Compared.fastest(runs.remote)
    costs = step_graph_costs(step, task.generation.context_length, rows=task.generation.max_active_sequences)
    fastest = runs.local.index(local)
    shapes = runs.shapes[fastest]
    limit = local.timings.tokens / runs.bounds[fastest]
    inside_bound = [b / r.seconds for r, b in zip(runs.local, runs.bounds, strict=True)]
    loop_bound = [b / r.seconds for r, b in zip(runs.minimal, runs.bounds, strict=True)]
    t = local.timings
    print(
        f"model: {source}; {args.streams} requests, max_new_tokens {sorted(r.max_new_tokens for r in requests)}; "
        f"lanes {task.generation.lanes}; sampling: {SAMPLINGS[args.sampling] or 'the model defaults'}; "
        f"fastest of {args.repeats} runs each"
    )
    for span in spans(task.generation.context_length):
        shown = ", ".join(f"{b}: {costs[b, span] * 1000:.2f}" for b in (1, 2, 4, 8, 12, 16) if (b, span) in costs)
        print(f"step graph alone, ms per step by rows, cache span {span}: {shown}")
    used = np.array(shapes)
    print(
        f"in-process run: {t.steps} steps, {used[:, 0].mean():.1f} rows and a cache span of {used[:, 1].mean():.0f} "
        "per step on average\n"
    )
    print("| run | tokens | seconds | tokens/s | TTFT p50 / p99 ms | ITL p50 / p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = [local, remote] + ([Compared.fastest(runs.processes)] if runs.processes else [])
    for row in results:
        g = row.timings
        print(
            f"| {row.mode} | {g.tokens} | {row.seconds:.2f} | {row.tokens_per_s:,.0f} | {_ms(g.first, 50).strip()} / "
            f"{_ms(g.first, 99).strip()} | {_ms(g.gaps, 50).strip()} / {_ms(g.gaps, 99).strip()} |"
        )
    print(
        f"| ONNX Runtime alone, same rows and spans per step, right after that run (bound) | {t.tokens} | "
        f"{t.tokens / limit:.2f} | {limit:,.0f} | | |"
    )
    wire = Compared.fastest(runs.transport)
    print(
        f"| gRPC streaming alone, no model (transport) | {wire.timings.tokens} | {wire.seconds:.2f} | "
        f"{wire.tokens_per_s:,.0f} | | {_ms(wire.timings.gaps, 50).strip()} / {_ms(wire.timings.gaps, 99).strip()} |"
    )
    loop = Compared.fastest(runs.minimal)
    print(
        f"| minimal loop: the same decoder and sampling in one thread, nothing else | {loop.timings.tokens} | "
        f"{loop.seconds:.2f} | {loop.tokens_per_s:,.0f} | | |"
    )
    print(
        f"\nin-process / bound = {local.tokens_per_s / limit:.2f} in the fastest run (goal >= 0.85); each run against "
        f"its own: {', '.join(f'{x:.2f}' for x in inside_bound)}, median {np.median(inside_bound):.2f}"
    )
    print(
        f"  minimal loop / bound, each run: {', '.join(f'{x:.2f}' for x in loop_bound)}, median "
        f"{np.median(loop_bound):.2f} (a one-thread Python loop with this sampling); in-process / minimal loop = "
        f"{local.tokens_per_s / loop.tokens_per_s:.2f} (medians "
        f"{Compared.median(runs.local) / Compared.median(runs.minimal):.2f}): what the scheduler costs"
    )
    print(f"over gRPC / in-process = {remote.tokens_per_s / local.tokens_per_s:.2f} (goal >= 0.85)")
    if runs.processes:
        same = Compared.fastest(runs.processes)
        each = [r.tokens_per_s / p.tokens_per_s for r, p in zip(runs.remote, runs.processes, strict=True)]
        print(
            f"  the server's lanes are process lanes: over gRPC / in-process on process lanes = "
            f"{remote.tokens_per_s / same.tokens_per_s:.2f} (each round: {', '.join(f'{x:.2f}' for x in each)}, "
            f"median {np.median(each):.2f}); process lanes / thread lanes in-process = "
            f"{Compared.median(runs.processes) / Compared.median(runs.local):.2f} (medians)"
        )
    added = 1 / (1 / local.tokens_per_s + 1 / wire.tokens_per_s)
    print(
        f"  were the transport's cost and the generation's simply added: over gRPC {added:,.0f} tokens/s, "
        f"{added / local.tokens_per_s:.2f} of in-process"
    )
    inside, over = Compared.median(runs.local), Compared.median(runs.remote)
    alone = Compared.median(runs.transport)
    print(
        f"medians over {args.repeats} runs: in-process {inside:,.0f} tokens/s, over gRPC {over:,.0f} "
        f"(ratio {over / inside:.2f}), transport alone {alone:,.0f} (added: {alone / (inside + alone):.2f})"
    )
    print(
        f"in-process runs' wall time in ONNX Runtime's step graph: median {np.median(runs.shares):.2f} "
        f"(runs: {', '.join(f'{s:.2f}' for s in runs.shares)})"
    )
    graph, decoding = float(np.median(runs.shares)), float(np.median(runs.decoding))
    print(
        f"  the rest of it (medians): the decoder's own work (feeds, cache writes) {decoding - graph:.2f}, "
        f"outside the decoder (sampling, the lane's loop, waiting for the GIL) {1 - decoding:.2f}"
    )
    if not remote.timings.tokens == local.timings.tokens == loop.timings.tokens:
        print(f"note: the runs generated {local.timings.tokens}, {remote.timings.tokens}, {loop.timings.tokens} tokens")


if __name__ == "__main__":
    main()
