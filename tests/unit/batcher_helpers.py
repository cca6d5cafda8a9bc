"""What the dynamic batcher tests share: a Python function standing in for the model, and short ways to make a
batcher and a request (no gRPC, no ONNX Runtime)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from service.batching.batcher import DynamicBatcher
from service.batching.policy import BatchPolicy


class FakeModel:
    """Doubles `x`; records the batch size of every call; can block until released, or fail."""

    def __init__(self, delay: float = 0.0, fail_when: object = None) -> None:
        self.calls: list[int] = []
        self.seen: list[np.ndarray] = []
        self.delay = delay
        self.fail_when = fail_when
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        x = feed["x"]
        self.calls.append(x.shape[0])
        self.seen.append(x.copy())
        if self.delay:
            time.sleep(self.delay)
        if callable(self.fail_when) and self.fail_when(x):
            raise RuntimeError("model exploded")
        return {"y": x * 2}


def make(model, executor, **policy) -> DynamicBatcher:  # type: ignore[no-untyped-def]
    batcher = DynamicBatcher("m", model, BatchPolicy(**{"max_batch_size": 8, **policy}), executor)
    return batcher


def req(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


def held(executor, first: float, **policy) -> tuple[FakeModel, DynamicBatcher, asyncio.Future]:  # type: ignore[no-untyped-def]
    """A batcher of one-request batches whose model waits at its gate until the test sets it, and the request
    `first`, sent to it: that one holds the batcher's only instance, so the requests that follow wait in the queue."""
    model = FakeModel()
    model.gate.clear()
    batcher = make(model, executor, max_batch_size=1, **policy)
    return model, batcher, asyncio.ensure_future(batcher.submit(req(first)))
