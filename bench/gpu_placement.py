"""Section placement of bench/gpu.py: where each committed model runs faster, on the device or on the CPU.

For each model (and the textgen_transformer's step graph, at a decoding step), the time of one batch through the
server's `ModelSession` at batch 1, 8 and 32 (the step graph at 1 and 16 rows), on the device under test and on
the CPU with the machine's threads and with 2 intra-op threads (a pod given two cores beside its GPU). Then the
committed server under `--device <device>`: which providers each model loaded on (a model's
`execution.providers` wins over the server's device).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_run import MODELS, Run, feeds, step_feed, timed
from bench.gpu_server import loaded_providers, serve, stop, wait_ready
from service.config import ModelConfig
from service.runtime import CPU, ModelSession, load_step_model

BATCHES = (1, 8, 32)


def placement(run: Run, seconds: float = 0.3) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    found: dict[str, Any] = {}
    for name in MODELS:
        config, path, step_path = run.entry(name)
        placements = {"device": (run.accel, config), "cpu": ([CPU], config), "cpu_2_threads": ([CPU], two(config))}
        rows: dict[str, Any] = {}
        for label, (providers, cfg) in placements.items():
            session = ModelSession(path, cfg, providers, buckets=label == "device")
            session.warmup()
            for batch in BATCHES:
                if config.max_batch_size and batch > config.max_batch_size:
                    continue
                feed = feeds(cfg, batch, rng)
                ms = timed(lambda s=session, f=feed: s.run(f), seconds) * 1e3  # type: ignore[misc]
                rows.setdefault(f"batch {batch}", {})[label] = round(ms, 3)
            if step_path is not None:
                step = load_step_model(step_path, cfg, providers, name)
                context = cfg.generation.context_length if cfg.generation else 64
                for batch in (1, 16):
                    feed = step_feed(step.layers, step.heads, step.head_dim, batch, context // 2, 1, rng)
                    ms = timed(lambda s=step.session, f=feed: s.run(f), seconds) * 1e3  # type: ignore[misc]
                    rows.setdefault(f"step graph, {batch} rows", {})[label] = round(ms, 3)
        found[name] = rows
        for shape, by in rows.items():
            run.say(f"{name}, {shape}: ms per run " + ", ".join(f"{k} {v}" for k, v in by.items()))
    proc, address, log = serve(run.repository, run.device.value, Path(tempfile.mkdtemp()), "placement", [])
    try:
        wait_ready(proc, address, list(MODELS), log, 180)
        found["server_providers"] = loaded_providers(log)
    finally:
        stop(proc)
    run.say(f"deepserve serve --device {run.device.value}: {found['server_providers']}")
    return found


def two(config: ModelConfig) -> ModelConfig:
    """`config` with 2 intra-op threads."""
    return config.model_copy(update={"execution": config.execution.model_copy(update={"intra_op_threads": 2})})
