"""What every section of bench/gpu.py shares: the run (results and log), model inputs, timing, and
commands (nvidia-smi, scripts of this repository)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Device, ModelConfig
from service.repository import ModelRepository
from service.runtime import (
    available_providers,
    choose_providers,
)

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("digits_cnn", "sentiment_rnn", "textgen_transformer")
PARITY_TOLERANCE = 1e-4


class Run:
    """Results so far, written after every section, and a log of what each printed."""

    def __init__(self, out: Path, device: Device, repository: Path) -> None:
        self.out, self.device, self.repository = out, device, repository
        self.results: dict[str, Any] = {}
        self.log = (out / "gpu.log").open("a")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def section(self, name: str, body: Callable[[], Any]) -> None:
        self.say(f"\n## {name}")
        start = time.perf_counter()
        try:
            self.results[name] = {"result": body()}
        except Exception as err:  # noqa: BLE001 - a failing section must not stop the others
            self.say(traceback.format_exc())
            self.results[name] = {"error": f"{type(err).__name__}: {err}"}
        self.results[name]["seconds"] = round(time.perf_counter() - start, 1)
        self.say(f"({name}: {self.results[name]['seconds']} s)")
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=1, default=str))

    @property
    def accel(self) -> list[str]:
        """The providers of the device under test, most preferred first."""
        return choose_providers(self.device, None, available_providers())

    def entry(self, name: str) -> tuple[ModelConfig, Path, Path | None]:
        entry = ModelRepository(self.repository).load(name)
        version = max(entry.versions, key=int)
        return entry.config, entry.versions[version], entry.step_models.get(version)


def command(cmd: list[str], timeout: float = 30) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"({cmd[0]}: {err})"


def script(run: Run, args: list[str], timeout: float) -> str:
    cmd = [sys.executable, *args]
    run.say("$ " + " ".join(cmd))
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text = done.stdout + (f"\n(exit {done.returncode})\n{done.stderr[-3000:]}" if done.returncode else "")
    except subprocess.TimeoutExpired as err:
        text = f"timed out after {timeout} s\n{err.stdout or ''}"
    run.say(text)
    return text


def feeds(config: ModelConfig, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for a model of ours: images in [0, 1], token ids of ordinary words (ids 5..999), full masks."""
    feed = {}
    for spec in config.inputs:
        dims = [d if d > 0 else 48 for d in spec.dims]
        if spec.datatype == "FP32":
            feed[spec.name] = rng.random((batch, *dims), dtype=np.float32)
        elif spec.name == "attention_mask":
            feed[spec.name] = np.ones((batch, *dims), np.int64)
        else:
            feed[spec.name] = rng.integers(5, 1000, (batch, *dims)).astype(np.int64)
    return feed


def step_feed(step_layers: int, heads: int, head_dim: int, rows: int, past: int, new: int, rng: np.random.Generator):
    feed: dict[str, np.ndarray] = {
        "token_ids": rng.integers(5, 1000, (rows, new)).astype(np.int64),
        "positions": np.tile(np.arange(past, past + new, dtype=np.int64), (rows, 1)),
        "past_mask": np.ones((rows, past), np.int64),
    }
    cache = rng.standard_normal((rows, heads, past, head_dim)).astype(np.float32) * 0.5
    feed |= {f"past_{kind}_{i}": cache for kind in ("key", "value") for i in range(step_layers)}
    return feed


def timed(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call, after warm-up calls."""
    for _ in range(5):
        fn()
    calls, start = 0, time.perf_counter()
    while (spent := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return spent / calls


def gpu_processes() -> str:
    return command(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"])
