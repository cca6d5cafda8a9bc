"""Next-token sampling in numpy: temperature, top-k, top-p, with the request's own random generator.

Each sampled token takes exactly one draw from the request's generator (greedy takes none), so a seed
gives the same tokens whatever else runs in the same batch.
"""

from __future__ import annotations

import numpy as np

from service.types import SamplingParams


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token id from a vector of next-token logits."""
    if params.temperature == 0:
        return int(np.argmax(logits))
    probs = distribution(logits, params)
    cdf = np.cumsum(probs)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, len(probs) - 1)


def distribution(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Probabilities after temperature, top-k and top-p (float64, sums to 1)."""
    scaled = logits.astype(np.float64) / max(params.temperature, 1e-6)
    if 0 < params.top_k < scaled.size:
        kth = np.partition(scaled, -params.top_k)[-params.top_k]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - np.max(scaled))
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        nucleus = np.zeros_like(probs)
        nucleus[keep] = probs[keep]
        probs = nucleus / nucleus.sum()
    return probs
