"""Decoders that a process lane's child builds (`generation.engine: process`): module-level factories, pickled by
reference, over the same letter models as scheduler_helpers' `Recorder` (no ONNX Runtime)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from service.batching.decoders import Decoder, RecomputeDecoder
from tests.unit.scheduler_helpers import VOCAB, Recorder

TABLE_SEED = 0


def table() -> np.ndarray:
    """The logits of the token after each token: what `sampled` decodes with, in either kind of lane."""
    return np.random.default_rng(TABLE_SEED).normal(size=(VOCAB, VOCAB)).astype(np.float32)


def letters(delay: float = 0.0) -> Decoder:
    """Next token = current + 1 (a..z), each step taking `delay` seconds."""
    return RecomputeDecoder(Recorder(delay=delay))


def sampled() -> Decoder:
    return RecomputeDecoder(Recorder(table=table()))


def failing_once(marker: str) -> Decoder:
    """Raises at its first step while the file `marker` exists (which it then removes), then decodes letters."""
    recorder = Recorder()

    def forward(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if os.path.exists(marker):
            os.remove(marker)
            raise RuntimeError("boom in the child")
        return recorder(token_ids, mask)

    return RecomputeDecoder(forward)


def slow_to_build(seconds: float) -> Decoder:
    time.sleep(seconds)
    return letters()


def broken(path: str) -> Decoder:
    raise FileNotFoundError(f"no step model at {Path(path).name}")


def dying_once(marker: str) -> Decoder:
    """The child exits at its first step while the file `marker` exists (which it then removes)."""
    recorder = Recorder()

    def forward(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if os.path.exists(marker):
            os.remove(marker)
            os._exit(3)
        return recorder(token_ids, mask)

    return RecomputeDecoder(forward)


def dying_always(count: str) -> Decoder:
    """The child exits at every first step, appending an x to the file `count` each time."""

    def forward(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with open(count, "a") as f:
            f.write("x")
        os._exit(3)

    return RecomputeDecoder(forward)
