"""Sections generation and memory of bench/gpu.py: the generation benchmarks on the device, and GPU memory of a
process per model (each a `--probe` run of bench/gpu.py)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_run import MODELS, Run, feeds, gpu_processes, script, step_feed
from service.config import CudaExecution, Device
from service.runtime import (
    ModelSession,
    load_step_model,
)

GPU_SCRIPT = str(Path(__file__).with_name("gpu.py"))  # --probe runs


def generation(run: Run, quick: bool) -> dict[str, str]:
    device = run.device.value
    repeats = "1" if quick else "2"
    found = {
        "generation_16": script(run, ["bench/generation.py", "--device", device, "--repeats", repeats], 240),
        "generation_16_one_lane": script(
            run, ["bench/generation.py", "--device", device, "--repeats", repeats, "--lanes", "1"], 240
        ),
    }
    if not quick:
        found["generation_32"] = script(run, ["bench/generation.py", "--device", device, "--requests", "32"], 240)
        found["generation_grpc_16"] = script(
            run, ["bench/generation_grpc.py", "--device", device, "--repeats", "2"], 240
        )
    return found


def memory(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {"defaults": CudaExecution().provider_options()}
    for name in ("context", *MODELS, "limit_64MiB"):
        text = script(
            run,
            [GPU_SCRIPT, "--probe", name, "--device", run.device.value, "--model-repository", str(run.repository)],
            120,
        )
        lines = [line for line in text.splitlines() if line.startswith("{")]
        found[name] = json.loads(lines[-1]) if lines else text[-1500:]
    return found


def probe(name: str, device: Device, repository: Path) -> None:
    """One process: load `name` (or only a CUDA context), run it at its largest batch, print its GPU memory."""
    run = Run(Path(tempfile.mkdtemp()), device, repository)
    rng = np.random.default_rng(3)
    result: dict[str, Any] = {"probe": name}
    if name == "context":
        config, path, _ = run.entry("digits_cnn")
        ModelSession(path, config, run.accel).run(feeds(config, 1, rng))
    elif name == "limit_64MiB":
        config, path, _ = run.entry("digits_cnn")
        cuda = config.execution.cuda.model_copy(update={"gpu_mem_limit": 64 * 1024**2})
        config = config.model_copy(update={"execution": config.execution.model_copy(update={"cuda": cuda})})
        session = ModelSession(path, config, run.accel)
        try:
            session.run(feeds(config, 4096, rng))
            result["batch_4096"] = "ran"
        except Exception as err:  # noqa: BLE001 - the arena's refusal is what this probe shows
            result["batch_4096"] = f"{type(err).__name__}: {str(err)[:400]}"
    else:
        config, path, step_path = run.entry(name)
        session = ModelSession(path, config, run.accel)
        session.warmup()
        session.run(feeds(config, config.max_batch_size or 1, rng))
        if step_path:
            step = load_step_model(step_path, config, run.accel, name)
            generation = config.generation
            rows = generation.max_active_sequences if generation else 16
            context = generation.context_length if generation else 64
            step.session.run(step_feed(step.layers, step.heads, step.head_dim, rows, context - 1, 1, rng))
    result["gpu_processes"] = gpu_processes()
    result["pid"] = os.getpid()
    mine = [line for line in result["gpu_processes"].splitlines() if line.split(",")[0].strip() == str(os.getpid())]
    result["used"] = mine[0].split(",")[1].strip() if mine else None
    print(json.dumps(result))
