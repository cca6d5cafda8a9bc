"""What a dynamic batcher is told (`BatchPolicy`, from the model's config.yaml) and whom it tells what
happened (`BatchObserver`: metrics and statistics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from service.batching.collate import CollateSpec

INLINE_MAX_S = 0.002
"""A model whose lone requests run in less than this (a moving average) may run them on the event loop."""


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_size: int
    """Largest batch (sum of the requests' own batch sizes); 1 with batching off."""
    max_queue_delay_s: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    default_timeout_s: float | None = None
    instances: int = 1
    collate: CollateSpec = field(default_factory=lambda: CollateSpec({}, {}))
    batched: bool = True
    """False when the model has no batch dimension: every request runs alone, as is."""
    inline: bool = True
    """Run a request at once on the event loop thread, without the hand-off to a worker thread and back,
    when it has the whole process to itself (`activity.Activity`) and this model's lone runs are short
    (`INLINE_MAX_S`). Nobody can be kept waiting by that: a request that arrives meanwhile queues as it
    would behind a running batch, and the next batch goes to a worker thread as usual. Not with a
    `max_queue_delay`: a model configured to wait for company always waits."""


class BatchObserver(Protocol):
    """Receives what happened, once per batch (metrics and statistics)."""

    def rejected(self, reason: str, count: int = 1) -> None: ...
    def batch_done(
        self, items: int, waits: list[float], collate_s: float, infer_s: float, split_s: float, ok: bool
    ) -> None: ...


class NullObserver:
    """Observes nothing; stands in for a `BatchObserver` or a scheduler's `GenerationObserver`."""

    def rejected(self, reason: str, count: int = 1) -> None:
        pass

    def sequences(self, active: int, waiting: int) -> None:
        pass

    def step(self, batch: int, seconds: float) -> None:
        pass

    def token(self, seconds: float, first: bool) -> None:
        pass

    def batch_done(
        self, items: int, waits: list[float], collate_s: float, infer_s: float, split_s: float, ok: bool
    ) -> None:
        pass
