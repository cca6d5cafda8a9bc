"""Run slots: how many model runs may be under way at once in the whole server (`--workers`): V2 batches in
worker threads, lone requests on the event loop, generation steps in lane threads.

`RunSlots` is a queue of tokens in C (`queue.SimpleQueue`): taking a slot and giving it back cost about 0.1 µs,
against 1.2 µs for `threading.BoundedSemaphore`, whose lock and condition are Python. A lone request takes
and gives back a slot on the event loop for every run, so this is on its path. Any object with the same
methods fits where slots are taken (`Slots`): tests pass a `threading.BoundedSemaphore`.
"""

from __future__ import annotations

import queue
from types import TracebackType
from typing import Protocol


class Slots(Protocol):
    def acquire(self, blocking: bool = True) -> bool: ...

    def release(self) -> None: ...

    def __enter__(self) -> object: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> object: ...


class RunSlots:
    __slots__ = ("_tokens",)

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"run slots must be at least 1, not {count}")
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._tokens.put(None)

    def acquire(self, blocking: bool = True) -> bool:
        """Take a slot, waiting for one unless `blocking` is False; whether one was taken."""
        try:
            self._tokens.get(blocking)
        except queue.Empty:
            return False
        return True

    def release(self) -> None:
        """Give back a slot taken with `acquire` (once per slot taken)."""
        self._tokens.put(None)

    @property
    def free(self) -> int:
        """Slots not taken now."""
        return self._tokens.qsize()

    def __enter__(self) -> RunSlots:
        self._tokens.get()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._tokens.put(None)
