"""Section lanes of bench/gpu.py: `generation.engine: process` on the device.

The committed textgen_transformer runs its lanes' steps in child processes (`service/batching/engine_process.py`),
each loading the step graph again through the parent's `StepModel.reload`, on the parent's providers. This checks
on the device what the CPU tests check on the CPU, and measures what it costs there:

1. same text: process lanes generate the same text as thread lanes, in-process, for seeded sampling and greedy
   decoding, both on the device; and greedy text on the device against the CPU's.
2. memory: `deepserve serve` after a generation, the GPU memory of the server and of each engine child
   (nvidia-smi, processes matched by pid), on the committed models (`engine: auto`, which starts no child where
   the step model runs on CUDA), and on copies with `engine: process` and `engine: thread`.
3. speed: bench/generation_grpc.py on the process and thread copies, alternating, 16 streams over gRPC.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.generation import load
from bench.generation_grpc import over_grpc, ready
from bench.generation_modes import PROMPTS, workload
from bench.gpu_run import Run, gpu_processes, script
from bench.load import descendants, free_port, model_copy, serve_command
from service import handlers
from service.batching.decoders import Decoder
from service.batching.engine_process import EngineProcess
from service.batching.scheduler import GenerationScheduler
from service.batching.sequences import Finished
from service.config import Device
from service.runtime import ModelSession, StepModel
from service.tasks.text_generation import GenerationInput, TextGeneration
from service.types import GenerationRequest, TextChunk

MODEL = "textgen_transformer"
SAMPLING: dict[str, dict[str, Any]] = {
    "seeded top-k/top-p": {"temperature": 0.8, "top_k": 50, "top_p": 0.95, "seed": 11},
    "greedy": {"temperature": 0.0},
    "model defaults, seed 3": {"seed": 3},
}


def lanes(run: Run, repeats: int = 2) -> dict[str, Any]:
    session, step, task, _ = load(run.repository, MODEL, run.device)
    assert step is not None, f"{MODEL} has no step model"
    found: dict[str, Any] = {"same_text": same_text(run, session, step, task)}
    run.say(f"same text: {found['same_text']}")
    requests = workload(task, 16, 0)
    repositories = {engine: engine_repository(run.repository, engine) for engine in ("process", "thread")}
    for engine, repository in {"committed": run.repository, **repositories}.items():
        found[f"memory_{engine}"] = server_memory(run, repository, requests)
        run.say(f"server memory, {engine}: {found[f'memory_{engine}']}")
    for i in range(repeats):
        for engine, repository in repositories.items():
            bench = ["bench/generation_grpc.py", "--device", run.device.value, "--model-repository", str(repository)]
            found[f"grpc_{engine}_{i}"] = script(run, [*bench, "--repeats", "2"], 180)
    return found


def engine_repository(source: Path, engine: str) -> Path:
    """The model repository with the textgen_transformer's `generation.engine` set to `engine`."""
    repository = Path(tempfile.mkdtemp(prefix=f"deepserve-{engine}-lanes-"))
    for model in source.iterdir():
        if (model / "config.yaml").exists():
            model_copy(model, repository, {"generation": {"engine": engine}} if model.name == MODEL else None)
    return repository


def same_text(run: Run, session: ModelSession, step: StepModel, task: TextGeneration) -> dict[str, Any]:
    cpu_session, cpu_step, _, _ = load(run.repository, MODEL, Device.CPU)
    rows = task.generation.max_active_sequences
    found: dict[str, Any] = {"providers": step.session.providers}
    for name, params in SAMPLING.items():
        thread = texts(task, [handlers.lane_decoder(session, step, task, rows)], params)
        process = texts(task, handlers.engine_processes(MODEL, step, task), params)
        found[name] = {"process == thread": process == thread, "texts": len(thread), "first": thread[0][:80]}
        if name == "greedy":
            cpu = texts(task, [handlers.lane_decoder(cpu_session, cpu_step, task, rows)], params)
            found[name]["device == cpu"] = thread == cpu
    return found


def texts(task: TextGeneration, decoders: list[Decoder] | list[EngineProcess], params: dict[str, Any]) -> list[str]:
    """The text of every prompt of bench/generation_modes.py (40 new tokens each), all submitted at once."""

    async def go() -> list[str]:
        scheduler = GenerationScheduler("lanes", decoders, handlers.scheduler_config(task))
        scheduler.start()
        try:
            streams = []
            for prompt in PROMPTS:
                asked = task.prepare(GenerationRequest(prompt, 40, **params))
                streams.append(
                    scheduler.submit(asked.prompt_ids, asked.max_new_tokens, asked.sampling, task.detokenizer(()))
                )
            done = []
            for stream in streams:
                events = [e async for e in stream]
                assert isinstance(events[-1], Finished), events[-1]
                done.append("".join(e.text for e in events if isinstance(e, TextChunk)))
            return done
        finally:
            await scheduler.close()

    return asyncio.run(go())


def server_memory(run: Run, repository: Path, requests: list[GenerationInput]) -> dict[str, Any]:
    """GPU memory of `deepserve serve` and of each engine child, after `requests` as gRPC streams."""
    port = free_port()
    flags = ("--http-port", "0", "--log-level", "warning", "--device", run.device.value)
    server = subprocess.Popen(serve_command(repository, port, free_port(), *flags))
    try:
        address = f"127.0.0.1:{port}"
        asyncio.run(ready(address, MODEL))
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(requests))]
        result = asyncio.run(over_grpc(address, MODEL, requests, prompts, "workload"))
        children = descendants(server.pid)
        used: dict[str, Any] = {"tokens": result.timings.tokens, "engine children": len(children)}
        for line in gpu_processes().splitlines():
            pid, _, memory = line.partition(",")
            if pid.strip().isdigit():
                role = "server" if int(pid) == server.pid else "engine child" if int(pid) in children else "other"
                used[f"{role} {pid.strip()}"] = memory.strip()
        return used
    finally:
        server.terminate()
        server.wait(30)
