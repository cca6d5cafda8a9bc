"""Proof that the KV-cache step graph decodes what the full model computes.

`incremental_logits` runs the step graph the way the server does: several rows at once in a fixed-size
cache of `context_length` slots per row (free slots hold random noise, so masking is tested too), each row
prefilled with its first tokens and then decoded one token at a time. `check_step_parity` compares its
logits at every real position with the full model's; the export fails above the tolerance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from training.decoder_step import StepExportError

PARITY_TOLERANCE = 1e-4
ROWS_PER_RUN = 10


def _cache_shape(step: ort.InferenceSession) -> tuple[int, int, int]:
    """(layers, heads, head_dim) from the graph's past_key_<l> inputs."""
    keys = [i for i in step.get_inputs() if i.name.startswith("past_key_")]
    return len(keys), int(keys[0].shape[1]), int(keys[0].shape[3])


def incremental_logits(
    step: ort.InferenceSession,
    token_ids: np.ndarray,
    lengths: np.ndarray,
    prefill: np.ndarray,
    context: int,
    seed: int = 0,
) -> np.ndarray:
    """Logits (rows, length, vocab) at positions < lengths[i]: prefill[i] tokens at once, then one at a time."""
    layers, heads, head_dim = _cache_shape(step)
    rows, rng = len(token_ids), np.random.default_rng(seed)
    cache = {
        f"past_{kind}_{i}": rng.normal(size=(rows, heads, context, head_dim)).astype(np.float32)
        for i in range(layers)
        for kind in ("key", "value")
    }
    out: np.ndarray | None = None
    cached = np.zeros(rows, dtype=np.int64)
    first = int(prefill.max())
    feed = {
        "token_ids": token_ids[:, :first],
        "positions": np.broadcast_to(np.arange(first), (rows, first)).copy(),
        "past_mask": np.zeros((rows, 0), np.int64),
        **{name: np.zeros((rows, heads, 0, head_dim), np.float32) for name in cache},
    }
    upto = prefill
    while True:
        logits, *new = step.run(None, feed)
        if out is None:
            out = np.zeros((rows, token_ids.shape[1], logits.shape[-1]), np.float32)
        for row in range(rows):
            count = int(upto[row] - cached[row])
            if count <= 0:
                continue
            out[row, cached[row] : upto[row]] = logits[row, :count]
            for name, values in zip(cache, new, strict=True):
                cache[name][row, :, cached[row] : upto[row]] = values[row, :, :count]
        cached = np.maximum(cached, upto)
        if np.all(cached >= lengths):
            return out
        upto = np.minimum(cached + 1, lengths)
        index = np.minimum(cached, token_ids.shape[1] - 1)
        feed = {
            "token_ids": token_ids[np.arange(rows), index][:, None],
            "positions": np.minimum(cached, context - 1)[:, None],
            "past_mask": (np.arange(context)[None, :] < cached[:, None]).astype(np.int64),
            **cache,
        }


def step_parity(
    step: ort.InferenceSession, inputs: Mapping[str, np.ndarray], expected: np.ndarray, context: int
) -> float:
    """Max |incremental - expected| over the real positions of right-padded rows (`attention_mask`)."""
    token_ids, mask = inputs["token_ids"], inputs["attention_mask"]
    lengths = mask.sum(axis=1).astype(np.int64)
    prefill = np.maximum(1, (1 + 13 * np.arange(len(lengths))) % (lengths + 1))
    worst = 0.0
    for start in range(0, len(token_ids), ROWS_PER_RUN):
        part = slice(start, start + ROWS_PER_RUN)
        got = incremental_logits(step, token_ids[part], lengths[part], prefill[part], context)
        real = mask[part].astype(bool)
        worst = max(worst, float(np.max(np.abs(got[real] - expected[part][real]))))
    return worst


def check_step_parity(
    step: ort.InferenceSession,
    inputs: Mapping[str, np.ndarray],
    expected: np.ndarray,
    context: int,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """`step_parity`, raising StepExportError above `tolerance`."""
    diff = step_parity(step, inputs, expected, context)
    if not diff <= tolerance:
        raise StepExportError(f"incremental decoding differs from the full model by {diff:.3g} > {tolerance:g}")
    return diff
