"""Continuous batching for text generation: iteration-level scheduling over `Decoder`s.

The scheduler is the event loop's side. `submit` queues a request (a `SequenceState`) in the `WaitingQueue`
and returns its `GenerationStream`; one or more *lanes* (`lanes.py`: a thread each, with its own decoder
and share of `max_active_sequences`) admit waiting sequences between steps, run a step for all of their
sequences, and hand the step's tokens back. `_deliver` turns them into text (the request's `Detokenizer`,
which also spots stop sequences), queues it on each request's stream and ends requests (`_finish`, the only
place that does); the lane meanwhile computes its next step.

New requests join and finished or cancelled ones leave between steps, so a short request never waits for a
long one to end. A sequence stays in the lane that admitted it. Each lane has its own decoder
(`decoders.py`): one recomputes each sequence in full every step (`RecomputeDecoder` over a
`forward(token_ids, attention_mask)`), another keeps a KV cache per sequence, which it fills when the
sequence first appears (prefill) and extends by one token per step. Either way a row's logits and its
sampling never depend on what else shares the batch, so a seed reproduces the same text alone or under
load. With two or more lanes their model steps run at the same time (the model releases the GIL), which
keeps two CPU cores, or a CPU and an accelerator, busy.

Knows nothing of gRPC, ONNX Runtime or tokenizers: it takes decoders and, per request, a `Detokenizer`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from service.batching.activity import Activity
from service.batching.admission import admit
from service.batching.decoders import Decoder
from service.batching.engine_process import EngineProcess, ProcessLane
from service.batching.lanes import Lane, LaneContext, WaitingQueue, lane_slots
from service.batching.policy import NullObserver
from service.batching.sequences import (
    Detokenizer,
    Finished,
    FinishReason,
    GenerationStream,
    SequenceState,
    TextChunk,
)
from service.batching.slots import Slots
from service.errors import DeadlineExceededError, DeepserveError, InvalidInputError, UnavailableError
from service.types import SamplingParams

__all__ = ["Decoder", "GenerationScheduler", "GenerationStream", "SchedulerConfig"]


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
    """Receives what happened (metrics); called on the event loop."""

    def sequences(self, active: int, waiting: int) -> None: ...
    def step(self, batch: int, seconds: float) -> None: ...
    def token(self, seconds: float, first: bool) -> None: ...
    def rejected(self, reason: str) -> None: ...


class GenerationScheduler:
    def __init__(
        self,
        name: str,
        decoders: Sequence[Decoder | EngineProcess],
        config: SchedulerConfig,
        observer: GenerationObserver | None = None,
        slots: Slots | None = None,
    ) -> None:
        """A lane per decoder (a thread lane) or `EngineProcess` (a process lane, `engine_process.py`, whose
        child ends with the scheduler); the lanes share `max_active_sequences` between them. `slots`: taken
        for each step's model run, shared with the server's batchers (`--workers`)."""
        self.name = name
        self.config = config
        if not 1 <= len(decoders) <= config.max_active_sequences:
            raise ValueError(f"{len(decoders)} lanes for {config.max_active_sequences} active sequences")
        self._queue = WaitingQueue()
        context = LaneContext(name, config.context_length, config.eos_id, self._queue, _hand_over(self), slots)
        shares = lane_slots(config.max_active_sequences, len(decoders))
        self._lanes = [
            ProcessLane(f"{name}:{i}", d, n, context)
            if isinstance(d, EngineProcess)
            else Lane(f"{name}:{i}", d, n, context)
            for i, (d, n) in enumerate(zip(decoders, shares, strict=True))
        ]
        self._observer: GenerationObserver = observer or NullObserver()
        self._live: set[SequenceState] = set()
        """Requests not yet ended (event loop only)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._ids = itertools.count()

    # ---- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the lanes' threads; their results come back to the running event loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for lane in self._lanes:
            lane.start()

    @property
    def steps(self) -> int:
        """Forward passes so far, all lanes (tests count them)."""
        return sum(lane.steps for lane in self._lanes)

    @property
    def waiting(self) -> int:
        """Requests waiting for a lane. (One whose deadline passed while it waited is neither waiting nor
        ended in the moment between a lane taking it out and the loop ending it.)"""
        return len(self._queue)

    @property
    def active(self) -> int:
        """Requests admitted to a lane and not yet ended, as the event loop sees them."""
        return len(self._live) - len(self._queue)

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams,
        detokenizer: Detokenizer,
        deadline: float | None = None,
    ) -> GenerationStream:
        """Queue one request; its events arrive on the returned stream. `deadline` is `time.monotonic()`."""
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
        waiting, now = self.waiting, time.monotonic()
        # Requests that a free slot will take at the next step are not backlog: only the rest count.
        backlog = waiting - max(0, self.config.max_active_sequences - self.active)
        admit(
            self.name,
            self._observer,
            closed=self._closed,
            waiting=waiting,
            limit=("max_waiting", self.config.max_waiting),
            deadline=deadline,
            now=now,
            backlog=backlog,
        )
        seq = SequenceState(next(self._ids), prompt_ids, max_new_tokens, sampling, detokenizer, deadline, now)
        self._live.add(seq)
        Activity.in_flight += 1
        self._idle.clear()
        self._queue.put(seq)
        if not self._wake_pending and self._loop is not None:
            # Idle lanes wake once this turn of the event loop is over, so requests that arrive together
            # start in one step (one prefill) rather than one step for the first and another for the rest.
            self._wake_pending = True
            self._loop.call_soon(self._wake)
        self._publish()
        return GenerationStream(seq, self.abort)

    def _wake(self) -> None:
        self._wake_pending = False
        self._queue.wake()

    def abort(self, seq: SequenceState) -> None:
        """Cancel a request (client gone): it is not computed again and leaves at the next step."""
        if not seq.finished:
            self._observer.rejected("cancelled")
            self._finish(seq, FinishReason.CANCELLED)
            self._publish()

    async def close(self, timeout: float | None = None) -> None:
        """Stop accepting; let sequences finish (up to `timeout`), then fail the rest with UNAVAILABLE."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        error = UnavailableError(f"model '{self.name}' was unloaded before the generation ended; retry")
        for seq in list(self._live):
            self._finish(seq, FinishReason.CANCELLED, error)
        self._queue.stop()
        for lane in self._lanes:
            if lane.thread is not None:
                await asyncio.to_thread(lane.thread.join)
                lane.thread = None
            lane.running = []
            await asyncio.to_thread(lane.close)
        self._publish()

    # ---- the event loop ---------------------------------------------------------------------------
    def _deliver(self, lane: Lane) -> None:
        """Stream the tokens of the lane's oldest step not yet streamed, and end the sequences that ended with it.

        One step per call, even when the loop fell behind and several wait: a request's stream then has a
        message per token (less what the detokenizer holds back) whatever the timing, so what a client sees
        does not depend on the load. (Joining the waiting steps' text into one message was tried and dropped:
        docs/performance.md.)"""
        step = lane.take_oldest()
        if step.tokens:
            self._observer.step(step.batch, step.seconds)
        for seq, why, error in step.ended:
            if not seq.finished:
                if isinstance(error, DeadlineExceededError):
                    self._observer.rejected("deadline")
                self._finish(seq, why, error)
        for seq, token, reason in step.tokens:
            if seq.finished:  # cancelled, or a stop sequence, while the step ran
                continue
            seq.streamed += 1
            first = seq.last_token_at is None
            self._observer.token(step.at - (seq.last_token_at or seq.arrived), first=first)
            seq.last_token_at = step.at
            if reason is FinishReason.EOS:
                self._finish(seq, reason)
                continue
            text, stopped = seq.detokenizer.add(token)
            if text:
                seq.events.put_nowait(TextChunk(text))
            if stopped:
                self._finish(seq, FinishReason.STOP)
            elif reason is not None:
                self._finish(seq, reason)
        self._publish()

    def _finish(self, seq: SequenceState, reason: FinishReason, error: DeepserveError | None = None) -> None:
        """End a request with its last event (the only place that does)."""
        if seq.finished:
            return
        self._queue.finish(seq)
        seq.finish_reason = reason
        self._live.discard(seq)
        Activity.in_flight -= 1
        if not self._live:
            self._idle.set()
        if error is not None:
            seq.events.put_nowait(error)
            return
        if reason in (FinishReason.LENGTH, FinishReason.EOS, FinishReason.CONTEXT):
            rest = seq.detokenizer.flush()
            if rest:
                seq.events.put_nowait(TextChunk(rest))
        seq.events.put_nowait(Finished(reason, seq.prompt_tokens, seq.streamed))

    def _publish(self) -> None:
        self._observer.sequences(self.active, self.waiting)


def _hand_over(scheduler: GenerationScheduler) -> Callable[[Lane], None]:
    """What a lane calls from its thread to have its outbox streamed. It holds the scheduler weakly: the lanes
    belong to the scheduler, and a cycle back to it would keep a replaced model version (its sessions and
    buffers) alive until a full garbage collection."""
    ref = weakref.ref(scheduler)

    def hand_over(lane: Lane) -> None:
        scheduler = ref()
        if scheduler is None or scheduler._loop is None:
            raise RuntimeError("the scheduler is gone")
        scheduler._loop.call_soon_threadsafe(scheduler._deliver, lane)

    return hand_over
