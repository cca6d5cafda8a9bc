"""Sections env, providers and parity of bench/gpu.py: the card and ONNX Runtime, where each model runs, and
outputs on the device under test against the CPU."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.gpu_run import MODELS, PARITY_TOLERANCE, Run, command, feeds, step_feed
from service.config import CudaExecution, Device, ModelConfig
from service.errors import ModelLoadError
from service.runtime import (
    CPU,
    ModelSession,
    available_providers,
    choose_providers,
    load_step_model,
    with_options,
)


def env(run: Run) -> dict[str, Any]:
    smi = command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    found = {
        "gpu": smi,
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "available_providers": ort.get_available_providers(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "device_under_test": run.device.value,
        "providers_chosen": run.accel,
    }
    run.say(json.dumps(found, indent=1))
    return found


def placement(path: Path, providers: list[str], config: ModelConfig, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """Nodes per execution provider in ONNX Runtime's profile of one run."""
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    listed = with_options(providers, config.execution.cuda.provider_options())
    session = ort.InferenceSession(str(path), opts, providers=listed)
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, set[str]] = {}
    for event in events:
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider:
            nodes.setdefault(provider, set()).add(event["name"].removesuffix("_kernel_time"))
    return {provider: len(names) for provider, names in nodes.items()}


def providers(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {"auto_chooses": choose_providers(Device.AUTO, None, available_providers())}
    strict = run.device is Device.CUDA
    rng = np.random.default_rng(0)
    for name in MODELS:
        config, path, step_path = run.entry(name)
        session = ModelSession(path, config, run.accel, strict)
        model: dict[str, Any] = {"providers": session.providers}
        model["nodes"] = placement(path, run.accel, config, feeds(config, 2, rng))
        if step_path:
            step = load_step_model(step_path, config, run.accel, name, strict)
            model["step_providers"] = step.session.providers
            feed = step_feed(step.layers, step.heads, step.head_dim, 2, 8, 1, rng)
            model["step_nodes"] = placement(step_path, run.accel, config, feed)
        found[name] = model
        run.say(f"{name}: {model}")
    config, path, _ = run.entry("digits_cnn")
    bad = config.model_copy(
        update={"execution": config.execution.model_copy(update={"cuda": CudaExecution(device_id=99)})}
    )
    try:
        ModelSession(path, bad, run.accel, strict=True)
        found["device_99_strict"] = "loaded (no error)"
    except ModelLoadError as err:
        found["device_99_strict"] = f"ModelLoadError: {err}"
    try:
        found["device_99_auto"] = ModelSession(path, bad, run.accel, strict=False).providers
    except ModelLoadError as err:
        found["device_99_auto"] = f"ModelLoadError: {err}"
    run.say(f"device_id 99 under --device cuda: {found['device_99_strict']}")
    run.say(f"device_id 99 under --device auto: {found['device_99_auto']}")
    return found


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.max(np.abs(a[name].astype(np.float64) - b[name]))) for name in a}


def with_tf32(config: ModelConfig) -> ModelConfig:
    cuda = config.execution.cuda.model_copy(update={"use_tf32": True})
    return config.model_copy(update={"execution": config.execution.model_copy(update={"cuda": cuda})})


def parity(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {}
    rng = np.random.default_rng(1)
    for name in MODELS:
        config, path, step_path = run.entry(name)
        feed = feeds(config, 16 if name != "textgen_transformer" else 4, rng)
        cpu = ModelSession(path, config, [CPU]).run(feed)
        on = ModelSession(path, config, run.accel).run(feed)
        tf32 = ModelSession(path, with_tf32(config), run.accel).run(feed)
        found[name] = {"max_abs": compare(cpu, on), "max_abs_tf32": compare(cpu, tf32)}
        if step_path:
            cpu_step = load_step_model(step_path, config, [CPU], name)
            on_step = load_step_model(step_path, config, run.accel, name)
            for label, past, new in (("prefill", 0, 24), ("decode", 40, 1)):
                sfeed = step_feed(cpu_step.layers, cpu_step.heads, cpu_step.head_dim, 4, past, new, rng)
                found[name][f"step_{label}_max_abs"] = compare(cpu_step.session.run(sfeed), on_step.session.run(sfeed))
        worst = max(v for key, d in found[name].items() if "tf32" not in key for v in d.values())
        found[name]["worst"] = worst
        found[name]["within_1e-4"] = worst <= PARITY_TOLERANCE
        run.say(
            f"{name}: worst max abs diff {worst:.2e} (TF32 on: "
            f"{max(found[name]['max_abs_tf32'].values()):.2e}) {found[name]}"
        )
    return found
