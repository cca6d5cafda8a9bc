"""A text generation model's `generation.step_model`: the KV-cache decoding graph, checked against its contract
(documented on `service.config.Generation.step_model`) and warmed up."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from service.config import ModelConfig
from service.errors import ModelLoadError
from service.runtime.session import ModelSession


@dataclass(frozen=True)
class StepModel:
    """A loaded `generation.step_model` (the KV-cache decoding graph) and the shape of its cache."""

    session: ModelSession
    layers: int
    heads: int
    head_dim: int
    reload: Callable[[], StepModel] = field(compare=False)
    """Loads the same step model again (picklable: for a child process's own session)."""


_CACHE_NAME = re.compile(r"^(past_key|past_value|new_key|new_value)_(\d+)$")


def load_step_model(
    path: Path, config: ModelConfig, providers: list[str], model: str, strict: bool = False
) -> StepModel:
    """Session for the step graph, checked against the contract documented on `Generation.step_model`,
    and warmed up with a prefill and a decoding step."""
    threads = config.generation.step_intra_op_threads if config.generation else None
    if threads is not None:
        config = config.model_copy(
            update={"execution": config.execution.model_copy(update={"intra_op_threads": threads})}
        )
    session = ModelSession(path, config, providers, strict, buckets=False)
    inputs, outputs = session.graph_signature()

    def fail(problem: str) -> ModelLoadError:
        return ModelLoadError(
            f"model '{model}': `generation.step_model` {path.name}: {problem}; re-export it with "
            "deepserve-train or remove the key"
        )

    for name in ("token_ids", "positions", "past_mask"):
        if inputs.get(name, ("", []))[0] != "INT64" or len(inputs[name][1]) != 2:
            raise fail(f"needs an INT64 input `{name}` of rank 2")
    cache = {n: spec for n, spec in {**inputs, **outputs}.items() if _CACHE_NAME.match(n)}
    layers = sum(1 for n in cache if n.startswith("past_key_"))
    expected = {f"{kind}_{i}" for kind in ("past_key", "past_value", "new_key", "new_value") for i in range(layers)}
    if not layers or set(cache) != expected:
        raise fail(
            f"needs past_key_<l>, past_value_<l> inputs and new_key_<l>, new_value_<l> outputs for "
            f"l = 0..layers-1, found {sorted(cache)}"
        )
    shape = inputs["past_key_0"][1]
    heads, head_dim = (shape[1], shape[3]) if len(shape) == 4 else (None, None)
    if not (isinstance(heads, int) and isinstance(head_dim, int)):
        raise fail(f"past_key_0 must be FP32 [batch, heads, past, head_dim] with fixed heads and head_dim, got {shape}")
    bad = [n for n, (dtype, dims) in cache.items() if dtype != "FP32" or dims[1::2] != [heads, head_dim]]
    extra = sorted(set(inputs) - expected - {"token_ids", "positions", "past_mask"})
    if bad or extra:
        raise fail(
            f"cache tensors {bad} differ from past_key_0 (FP32, same heads and head_dim) or there are "
            f"inputs outside the contract {extra}"
        )
    vocab = (config.output("logits") or config.outputs[0]).dims[-1]
    logits = outputs.get("logits", ("", []))[1]
    if len(logits) != 3 or (isinstance(logits[2], int) and vocab > 0 and logits[2] != vocab):
        raise fail(f"needs an output `logits` [batch, new, {vocab}] like model.onnx's, got {logits or 'none'}")
    again = functools.partial(load_step_model, path, config, list(providers), model, strict)
    step = StepModel(session, layers, heads, head_dim, again)
    _warmup_step(step, config.generation.context_length if config.generation else 1)
    return step


def _warmup_step(step: StepModel, context: int) -> None:
    one = np.zeros((1, 1), np.int64)
    for past in (0, context):
        cache = np.zeros((1, step.heads, past, step.head_dim), np.float32)
        feed: dict[str, np.ndarray] = {"token_ids": one, "positions": one, "past_mask": np.zeros((1, past), np.int64)}
        feed |= {f"past_{kind}_{i}": cache for kind in ("key", "value") for i in range(step.layers)}
        step.session.checked_run(feed, f"with a cache of {past} positions")
