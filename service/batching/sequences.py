"""One generation request's state and what it streams: status, finish reasons, events, the caller's
`GenerationStream`, the token collation of a step. Used by `scheduler.py`; no gRPC, ONNX Runtime or
tokenizer in here. `FinishReason` and `TextChunk` live in `service.types`, as the task APIs pass them on."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from service.errors import DeepserveError
from service.types import FinishReason, SamplingParams, TextChunk

__all__ = [
    "Detokenizer",
    "Event",
    "FinishReason",
    "Finished",
    "GenerationStream",
    "SequenceState",
    "SequenceStatus",
    "TextChunk",
    "collate",
]


class Detokenizer(Protocol):
    """Turns one request's generated tokens into text, one token at a time."""

    def add(self, token_id: int) -> tuple[str, bool]:
        """Text that became final with this token, and whether a stop sequence appeared (the text then
        ends just before it)."""
        ...

    def flush(self) -> str:
        """Text held back so far (e.g. a possible start of a stop sequence), released at the end."""
        ...


@dataclass(frozen=True, slots=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    generated_tokens: int


Event = TextChunk | Finished


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    """Queued for a lane (from `submit`)."""
    RUNNING = "running"
    """Admitted to a lane's batch (set by the lane, under the waiting queue's lock)."""
    FINISHED = "finished"
    """Its last event is queued (set by the event loop, once); a lane drops it at its next step."""


class SequenceState:
    """One request: its tokens, sampling state and event queue.

    Two threads share it, each writing its own fields. A lane admits it (`status` RUNNING), appends to
    `tokens` and draws from `rng`; the event loop streams it (`detokenizer`, `events`, `streamed`,
    `last_token_at`) and ends it (`status` FINISHED, `finish_reason`), exactly once. The lane only reads
    `status` after admitting it: a sequence that ended (cancelled, stop sequence, deadline) leaves at its
    next step.
    """

    __slots__ = (
        "arrived",
        "deadline",
        "detokenizer",
        "events",
        "finish_reason",
        "id",
        "last_token_at",
        "max_new_tokens",
        "prompt_tokens",
        "rng",
        "sampling",
        "status",
        "streamed",
        "tokens",
    )

    def __init__(
        self,
        seq_id: int,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        detokenizer: Detokenizer,
        deadline: float | None,
        now: float,
    ) -> None:
        self.id = seq_id
        self.tokens = list(prompt_ids)
        self.prompt_tokens = len(self.tokens)
        self.max_new_tokens = max_new_tokens
        self.sampling = sampling
        self.rng = np.random.default_rng(sampling.seed)
        self.detokenizer = detokenizer
        self.deadline = deadline
        self.status = SequenceStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.streamed = 0
        """Generated tokens the event loop has streamed (the step thread may be ahead)."""
        self.events: asyncio.Queue[Event | DeepserveError] = asyncio.Queue()
        self.arrived = now
        self.last_token_at: float | None = None

    @property
    def generated(self) -> int:
        return len(self.tokens) - self.prompt_tokens

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED


class GenerationStream:
    """The caller's side of one request: `async for event in stream`; `cancel()` frees its slot.

    Yields `TextChunk`s and then one `Finished`; raises the request's error (deadline, model failure,
    model unloaded) instead when there is one.
    """

    def __init__(self, sequence: SequenceState, abort: Callable[[SequenceState], None]) -> None:
        self.sequence = sequence
        self._abort = abort
        self._done = False

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> Event:
        if self._done:
            raise StopAsyncIteration
        event = await self.sequence.events.get()
        if isinstance(event, DeepserveError):
            self._done = True
            raise event
        if isinstance(event, Finished):
            self._done = True
        return event

    def cancel(self) -> None:
        """Stop generating (no effect once finished); the sequence leaves the batch at the next step."""
        self._abort(self.sequence)


def collate(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-padded int64 token_ids and attention_mask (1 for real tokens), and each sequence's length."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    token_ids = np.full((len(sequences), int(lengths.max())), pad_id, dtype=np.int64)
    mask = np.zeros_like(token_ids)
    for row, seq in enumerate(sequences):
        token_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return token_ids, mask, lengths
