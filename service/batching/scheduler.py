"""Continuous batching for text generation: iteration-level scheduling over a `Decoder`.

One loop per model repeats three phases (vLLM's v1 engine has the same shape):

- `schedule()`: retire sequences that were cancelled or whose deadline passed, then admit waiting
  ones (first come, first served) up to `max_active_sequences`. Returns a plain `StepPlan`, which also
  names the sequences that left since the last step so the decoder can drop their state.
- execute: the decoder's next-token logits for every running sequence, and each one's next token
  (`sampling.sample_batch`), all in a worker thread of the shared executor so the event loop stays free.
- `_update()`: append each token, stream its text to the request's queue, retire finished sequences
  (max_new_tokens, end-of-text token, stop sequence, context full). The text of a token that does not
  end its sequence, for a request without stop sequences, is sent by `_stream()` just after the next step
  starts: detokenizing and queueing it then overlaps the model instead of delaying it.

New requests join and finished or cancelled ones leave between steps, so a short request never waits
for a long one to end. The decoder (`decoders.py`) either recomputes each sequence in full every step
(`RecomputeDecoder` over a `forward(token_ids, attention_mask)`) or keeps a KV cache per sequence, which
it fills when the sequence first appears (prefill) and extends by one token per step. Either way a row's
logits and its sampling never depend on what else shares the batch, so a seed reproduces the same text
alone or under load.

Knows nothing of gRPC, ONNX Runtime or tokenizers: it takes a `Decoder` (or a bare `forward`) and, per
request, a `Detokenizer` that turns tokens into text and spots stop sequences.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.sampling import sample_batch
from service.batching.sequences import (
    Detokenizer,
    Finished,
    FinishReason,
    GenerationStream,
    RequestStatus,
    SequenceState,
    TextChunk,
)
from service.errors import (
    DeadlineExceededError,
    DeepserveError,
    InferenceError,
    InvalidInputError,
    QueueFullError,
    UnavailableError,
)
from service.types import SamplingParams

log = logging.getLogger(__name__)

__all__ = ["Decoder", "ForwardFn", "GenerationScheduler", "GenerationStream", "SchedulerConfig", "StepPlan"]


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    context_length: int
    """Longest sequence (prompt + generated) the model attends over."""
    max_active_sequences: int = 16
    max_waiting: int = 256
    eos_id: int | None = None
    """End-of-text token; None never stops on a token."""
    pad_id: int = 0


class GenerationObserver(Protocol):
    """Receives what happened (metrics)."""

    def sequences(self, active: int, waiting: int) -> None: ...
    def step(self, batch: int, seconds: float) -> None: ...
    def token(self, seconds: float, first: bool) -> None: ...
    def rejected(self, reason: str) -> None: ...


class _NullObserver:
    def sequences(self, active: int, waiting: int) -> None:
        pass

    def step(self, batch: int, seconds: float) -> None:
        pass

    def token(self, seconds: float, first: bool) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What runs this step."""

    running: list[SequenceState]
    admitted: list[SequenceState]
    released: list[int]
    """Ids of the sequences that left since the last step (the decoder may drop their cache)."""


class GenerationScheduler:
    def __init__(
        self, name: str, model: Decoder | ForwardFn, config: SchedulerConfig, executor: Executor,
        observer: GenerationObserver | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.config = config
        self._decoder = model if isinstance(model, Decoder) else RecomputeDecoder(model, config.pad_id)
        self._executor = executor
        self._observer: GenerationObserver = observer or _NullObserver()
        self._waiting: deque[SequenceState] = deque()
        self._running: list[SequenceState] = []
        self._released: list[int] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._task: asyncio.Task | None = None
        self._ids = itertools.count()
        self.steps = 0
        """Forward passes so far (tests count them)."""
        self.last_step: tuple[int, ...] = ()
        """Ids of the sequences in the most recent forward pass."""

    # ---- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"generation:{self.name}")

    @property
    def active(self) -> int:
        return sum(1 for s in self._running if not s.finished)

    @property
    def waiting(self) -> int:
        return sum(1 for s in self._waiting if not s.finished)

    def submit(
        self, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingParams, detokenizer: Detokenizer,
        deadline: float | None = None,
    ) -> GenerationStream:  # fmt: skip
        """Queue one request; its events arrive on the returned stream. `deadline` is `time.monotonic()`."""
        if self._closed:
            raise UnavailableError(f"model '{self.name}' is shutting down; retry on another replica")
        context = self.config.context_length
        if not prompt_ids:
            raise InvalidInputError("the prompt has no tokens")
        if len(prompt_ids) >= context:
            raise InvalidInputError(
                f"a prompt of {len(prompt_ids)} tokens leaves no room to generate in the context of {context}; "
                f"keep at most {context - 1} tokens"
            )
        if max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        waiting = self.waiting
        # Requests that a free slot will take at the next step are not backlog: only the rest count.
        free_slots = max(0, self.config.max_active_sequences - self.active)
        if waiting - free_slots >= self.config.max_waiting:
            self._observer.rejected("queue_full")
            raise QueueFullError(
                f"queue full: model '{self.name}' already has {waiting} generation requests waiting "
                f"(max_waiting {self.config.max_waiting}); retry with backoff"
            )
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            self._observer.rejected("deadline")
            raise DeadlineExceededError(f"deadline passed before the request to '{self.name}' was queued")
        seq = SequenceState(next(self._ids), prompt_ids, max_new_tokens, sampling, detokenizer, deadline, now)
        self._waiting.append(seq)
        self._idle.clear()
        self._publish()
        self._wakeup.set()
        return GenerationStream(seq, self.abort)

    def abort(self, seq: SequenceState) -> None:
        """Cancel a request (client gone): it is not computed again and leaves at the next step."""
        if not seq.finished:
            self._observer.rejected("cancelled")
            self._finish(seq, FinishReason.CANCELLED)

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting; let sequences finish (up to `timeout`), then fail the rest with UNAVAILABLE."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        error = UnavailableError(f"model '{self.name}' was unloaded before the generation ended; retry")
        for seq in [*self._running, *self._waiting]:
            if not seq.finished:
                self._finish(seq, FinishReason.CANCELLED, error)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._running, self._waiting = [], deque()
        self._publish()

    # ---- the loop ---------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """Retire cancelled and expired sequences, then admit waiting ones up to max_active_sequences."""
        now = time.monotonic()
        for seq in [*self._running, *self._waiting]:
            if not seq.finished and seq.deadline is not None and now >= seq.deadline:
                where = (
                    "while waiting for a slot"
                    if seq.status is RequestStatus.WAITING
                    else (f"after {seq.generated} generated tokens")
                )
                self._observer.rejected("deadline")
                self._finish(seq, FinishReason.DEADLINE, DeadlineExceededError(f"deadline passed {where}"))
        self._released += [s.id for s in self._running if s.finished]
        self._running = [s for s in self._running if not s.finished]
        waiting = deque(s for s in self._waiting if not s.finished)
        admitted = []
        while waiting and len(self._running) < self.config.max_active_sequences:
            seq = waiting.popleft()
            seq.status = RequestStatus.RUNNING
            self._running.append(seq)
            admitted.append(seq)
        self._waiting = waiting
        self._publish()
        if not self._running and not self._waiting:
            self._idle.set()
        released, self._released = (self._released, []) if self._running else ([], self._released)
        return StepPlan(list(self._running), admitted, released)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        deferred: list[tuple[SequenceState, int]] = []
        while True:
            plan = self.schedule()
            if not plan.running:
                self._stream(deferred)
                deferred = []
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = plan.running
            start = time.perf_counter()
            step = loop.run_in_executor(self._executor, self._execute, batch, plan.released)
            self._stream(deferred)  # the last step's text goes out while this step computes
            deferred = []
            try:
                tokens = await step
                self._observer.step(len(batch), time.perf_counter() - start)
                deferred = self._update(batch, tokens)
            except Exception as err:  # noqa: BLE001 - the loop must outlive any failure
                self._fail(batch, err)

    def _execute(self, batch: list[SequenceState], released: list[int]) -> list[int]:
        """Worker thread: drop the state of sequences that left, then the next token of every sequence."""
        self.steps += 1
        self.last_step = tuple(s.id for s in batch)
        self._decoder.release(released)
        logits = self._decoder.next_logits(self.last_step, [s.tokens for s in batch])
        if logits.ndim != 2 or len(logits) != len(batch):
            raise InferenceError(f"the decoder returned logits of shape {logits.shape} for {len(batch)} sequences")
        return sample_batch(logits, [s.sampling for s in batch], [s.rng for s in batch])

    def _update(self, batch: list[SequenceState], tokens: list[int]) -> list[tuple[SequenceState, int]]:
        """Append each token and finish the sequences that end with it. The text of a token that neither
        ends its sequence nor could complete a stop sequence is returned for `_stream` instead, so turning
        it into text and sending it does not delay the next step."""
        now, deferred = time.monotonic(), []
        for seq, token in zip(batch, tokens, strict=True):
            if seq.finished:  # cancelled or expired while the step ran
                continue
            seq.tokens.append(token)
            self._observer.token(now - (seq.last_token_at or seq.arrived), first=seq.last_token_at is None)
            seq.last_token_at = now
            if token == self.config.eos_id:
                self._finish(seq, FinishReason.EOS)
            elif seq.generated >= seq.max_new_tokens:
                self._emit(seq, token, FinishReason.LENGTH)
            elif len(seq.tokens) >= self.config.context_length:
                self._emit(seq, token, FinishReason.CONTEXT)
            elif seq.detokenizer.may_stop:
                self._emit(seq, token)
            else:
                deferred.append((seq, token))
        return deferred

    def _emit(self, seq: SequenceState, token: int, reason: FinishReason | None = None) -> None:
        """Stream a token's text; finish the sequence with STOP on a stop sequence, else with `reason`."""
        text, stopped = seq.detokenizer.add(token)
        if text:
            seq.events.put_nowait(TextChunk(text))
        if stopped:
            self._finish(seq, FinishReason.STOP)
        elif reason is not None:
            self._finish(seq, reason)

    def _stream(self, deferred: list[tuple[SequenceState, int]]) -> None:
        """Text of tokens `_update` left for later (sequences cancelled since then get none)."""
        for seq, token in deferred:
            if not seq.finished:
                text, _ = seq.detokenizer.add(token)
                if text:
                    seq.events.put_nowait(TextChunk(text))

    # ---- bookkeeping ------------------------------------------------------------------------------
    def _finish(self, seq: SequenceState, reason: FinishReason, error: DeepserveError | None = None) -> None:
        seq.status = RequestStatus.FINISHED
        seq.finish_reason = reason
        if error is not None:
            seq.events.put_nowait(error)
            return
        if reason in (FinishReason.LENGTH, FinishReason.EOS, FinishReason.CONTEXT):
            rest = seq.detokenizer.flush()
            if rest:
                seq.events.put_nowait(TextChunk(rest))
        seq.events.put_nowait(Finished(reason, seq.prompt_tokens, seq.generated))

    def _fail(self, batch: list[SequenceState], err: Exception) -> None:
        if not isinstance(err, DeepserveError) or isinstance(err, InferenceError):
            log.error("generation step failed", extra={"model": self.name, "batch": len(batch)}, exc_info=err)
            err = InferenceError(f"model '{self.name}' failed during generation; the error was logged")
        for seq in batch:
            if not seq.finished:
                self._finish(seq, FinishReason.ERROR, err)

    def _publish(self) -> None:
        self._observer.sequences(self.active, self.waiting)
