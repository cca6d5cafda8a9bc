"""One request waiting in a `DynamicBatcher`: its inputs, the future its caller awaits, and where it is."""

from __future__ import annotations

import asyncio

from service.batching.collate import Tensors

QUEUED, RUNNING, DONE = 0, 1, 2
"""A request's `state`: waiting in the queue, in a batch being run, answered (or dropped)."""


class Pending:
    __slots__ = ("enqueued", "future", "inputs", "key", "length", "size", "started", "state", "timer")

    def __init__(self, inputs: Tensors, size: int, key: tuple, future: asyncio.Future, enqueued: float) -> None:
        self.inputs = inputs
        self.size = size
        self.key = key
        """Requests batch together only with the same key (their inputs' shapes apart from the batch)."""
        self.future = future
        self.enqueued = enqueued
        self.started = enqueued
        self.state = QUEUED
        self.timer: asyncio.TimerHandle | None = None
        self.length: int | None = None
        """Its own length along the padded axis, where the model pads (None: no padding)."""
