"""Continuous batching for text generation: iteration-level scheduling over a `Decoder`.

Each model's scheduler runs one or more *lanes*. A lane is a thread of its own that repeats (as vLLM's
engine core does in its busy loop):

- schedule: drop its sequences that ended (cancelled, stop sequence, deadline), then admit waiting ones
  (first come, first served, from one queue that all lanes share) up to its share of
  `max_active_sequences`; sleep while it has nothing to run.
- execute: the decoder's next-token logits for every running sequence of the lane, and each one's next
  token (`sampling.sample_batch`, with the tokens it generated so far for its repetition penalty).
- update: append each token; end the sequences that reached max_new_tokens, the end-of-text token or a
  full context, and hand the step's tokens to the event loop in one `call_soon_threadsafe`.

The event loop turns the tokens into text (the request's `Detokenizer`, which also spots stop
sequences), queues it on each request's stream and ends requests; the lane meanwhile computes its next
step. So a step costs the model, the sampling and a little bookkeeping, with no thread hand-off. A lane
runs at most `AHEAD` steps ahead of the streaming, so a sequence that a stop sequence or a cancel ends
leaves the batch within AHEAD + 1 steps; tokens computed for it after it ended are dropped, never streamed.

New requests join and finished or cancelled ones leave between steps, so a short request never waits
for a long one to end. A sequence stays in the lane that admitted it. Each lane has its own decoder
(`decoders.py`): one recomputes each sequence in full every step (`RecomputeDecoder` over a
`forward(token_ids, attention_mask)`), another keeps a KV cache per sequence, which it fills when the
sequence first appears (prefill) and extends by one token per step. Either way a row's logits and its
sampling never depend on what else shares the batch, so a seed reproduces the same text alone or under
load. With two or more lanes their model steps run at the same time (the model releases the GIL), which
keeps two CPU cores, or a CPU and an accelerator, busy.

Knows nothing of gRPC, ONNX Runtime or tokenizers: it takes decoders (or a bare `forward`) and, per
request, a `Detokenizer` that turns tokens into text and spots stop sequences.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.batching.activity import Activity
from service.batching.admission import admit
from service.batching.decoders import Decoder, ForwardFn, RecomputeDecoder
from service.batching.policy import NullObserver
from service.batching.sampling import sample_batch
from service.batching.sequences import (
    Detokenizer,
    Finished,
    FinishReason,
    GenerationStream,
    SequenceState,
    TextChunk,
)
from service.errors import (
    DeadlineExceededError,
    DeepserveError,
    InferenceError,
    InvalidInputError,
    UnavailableError,
)
from service.types import SamplingParams

log = logging.getLogger(__name__)

__all__ = ["Decoder", "ForwardFn", "GenerationScheduler", "GenerationStream", "SchedulerConfig", "lane_slots"]


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


Ended = tuple[SequenceState, FinishReason, DeepserveError]
"""A sequence that ends without a token, why, and the error its stream raises."""


def lane_slots(max_active_sequences: int, lanes: int) -> list[int]:
    """How many active sequences each lane takes: `max_active_sequences` split as evenly as it goes."""
    share, extra = divmod(max_active_sequences, lanes)
    return [share + (i < extra) for i in range(lanes)]


@dataclass(frozen=True, slots=True)
class _Step:
    """What one lane step produced, for the event loop."""

    tokens: list[tuple[SequenceState, int, FinishReason | None]]
    """Each sequence's new token, and why the sequence ends with it (None: it goes on)."""
    ended: list[Ended]
    """Sequences that end without a token (deadline passed, model failure)."""
    batch: int
    seconds: float
    at: float
    """`time.monotonic()` when the tokens were sampled."""


AHEAD = 6
"""Steps a lane may run ahead of the event loop's streaming. Bounds how many tokens a request may get
computed after it was cancelled or hit a stop sequence (the step under way, and this many). With 2, lanes
waited for the loop half of the time while it was busy writing stream messages; 6 gave 16 gRPC streams
5-9% more tokens/s (docs/performance.md)."""


class _Lane:
    """One step loop: its thread, its decoder, its share of the active sequences."""

    def __init__(self, name: str, decoder: Decoder, slots: int) -> None:
        self.name = name
        self.decoder = decoder
        self.slots = slots
        self.running: list[SequenceState] = []
        """Replaced, never changed in place, so the event loop can count it at any time."""
        self.released: list[int] = []
        """Ids of sequences that left since the decoder last ran (it may drop their state)."""
        self.steps = 0
        self.thread: threading.Thread | None = None
        self.unstreamed = threading.Semaphore(AHEAD)
        """Taken for each step handed to the event loop, given back once the loop has streamed it."""
        self.outbox: deque[_Step] = deque()
        """Steps handed to the event loop and not yet streamed, oldest first (appended by the lane's thread,
        emptied by the loop)."""


class GenerationScheduler:
    def __init__(
        self, name: str, model: Decoder | ForwardFn | Sequence[Decoder], config: SchedulerConfig,
        observer: GenerationObserver | None = None,
    ) -> None:  # fmt: skip
        """`model`: one decoder (or forward function) for one lane, or a decoder per lane; the lanes share
        `max_active_sequences` between them."""
        self.name = name
        self.config = config
        if isinstance(model, Decoder):
            decoders: list[Decoder] = [model]
        elif isinstance(model, Sequence):
            decoders = list(model)
        else:
            decoders = [RecomputeDecoder(model, config.pad_id)]
        if not 1 <= len(decoders) <= config.max_active_sequences:
            raise ValueError(f"{len(decoders)} lanes for {config.max_active_sequences} active sequences")
        slots = lane_slots(config.max_active_sequences, len(decoders))
        self._lanes = [_Lane(f"{name}:{i}", d, n) for i, (d, n) in enumerate(zip(decoders, slots, strict=True))]
        self._observer: GenerationObserver = observer or NullObserver()
        self._waiting: deque[SequenceState] = deque()
        self._lock = threading.Condition()
        """Guards `_waiting` and `_stopping`; lanes wait on it while they have nothing to run."""
        self._stopping = False
        self._live: set[SequenceState] = set()
        """Requests not yet ended (event loop only)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._ids = itertools.count()
        self.last_step: tuple[int, ...] = ()
        """Ids of the sequences in the most recent forward pass of any lane."""

    # ---- public API -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the lanes' threads; their results come back to the running event loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        for lane in self._lanes:
            lane.thread = threading.Thread(target=self._run, args=(lane,), name=f"generation:{lane.name}", daemon=True)
            lane.thread.start()

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def steps(self) -> int:
        """Forward passes so far, all lanes (tests count them)."""
        return sum(lane.steps for lane in self._lanes)

    @property
    def active(self) -> int:
        """Requests admitted to a lane and not yet ended, as the event loop sees them."""
        return sum(1 for s in self._live if s.started)

    @property
    def waiting(self) -> int:
        return sum(1 for s in self._live if not s.started)

    def submit(
        self, prompt_ids: Sequence[int], max_new_tokens: int, sampling: SamplingParams, detokenizer: Detokenizer,
        deadline: float | None = None,
    ) -> GenerationStream:  # fmt: skip
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
        with self._lock:
            self._waiting.append(seq)
        if not self._wake_pending and self._loop is not None:
            # Idle lanes wake once this turn of the event loop is over, so requests that arrive together
            # start in one step (one prefill) rather than one step for the first and another for the rest.
            self._wake_pending = True
            self._loop.call_soon(self._wake)
        self._publish()
        return GenerationStream(seq, self.abort)

    def _wake(self) -> None:
        self._wake_pending = False
        with self._lock:
            self._lock.notify_all()

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
        with self._lock:
            self._stopping = True
            self._waiting.clear()
            self._lock.notify_all()
        for lane in self._lanes:
            if lane.thread is not None:
                await asyncio.to_thread(lane.thread.join)
                lane.thread = None
            lane.running = []
        self._publish()

    # ---- a lane's thread --------------------------------------------------------------------------
    def _run(self, lane: _Lane) -> None:
        assert self._loop is not None
        while True:
            batch, ended = self._schedule(lane)
            if batch is None:
                return
            start = time.perf_counter()
            try:
                tokens = self._execute(lane, batch) if batch else []
                step = self._update(lane, batch, tokens, ended, time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - the lane must outlive any failure
                step = self._failed(lane, batch, ended, err)
            lane.unstreamed.acquire()  # at most AHEAD steps ahead of the event loop
            lane.outbox.append(step)
            try:
                self._loop.call_soon_threadsafe(self._deliver, lane)
            except RuntimeError:  # the event loop is gone: nobody is left to stream to
                return

    def _schedule(self, lane: _Lane) -> tuple[list[SequenceState] | None, list[Ended]]:
        """Drop the lane's sequences that ended and those whose deadline passed, then admit waiting ones up
        to the lane's slots; waits while there is nothing to do. (None, []) when the scheduler stops."""
        ended: list[Ended] = []
        with self._lock:
            while True:
                if self._stopping:
                    return None, []
                now = time.monotonic()
                running = []
                for seq in lane.running:
                    if seq.finished:
                        lane.released.append(seq.id)
                    elif seq.deadline is not None and now >= seq.deadline:
                        lane.released.append(seq.id)
                        ended.append(_expired(seq, f"after {seq.generated} generated tokens"))
                    else:
                        running.append(seq)
                if self._waiting and any(s.finished or _passed(s, now) for s in self._waiting):
                    waiting: deque[SequenceState] = deque()
                    for seq in self._waiting:
                        if _passed(seq, now) and not seq.finished:
                            ended.append(_expired(seq, "while waiting for a slot"))
                        elif not seq.finished:
                            waiting.append(seq)
                    self._waiting = waiting
                while self._waiting and len(running) < lane.slots:
                    seq = self._waiting.popleft()
                    seq.started = True
                    running.append(seq)
                lane.running = running
                if running or ended:
                    return running, ended
                self._lock.wait()

    def _execute(self, lane: _Lane, batch: list[SequenceState]) -> list[int]:
        """The next token of every sequence of the batch (the decoder first drops the state of those that left)."""
        lane.steps += 1
        self.last_step = ids = tuple(s.id for s in batch)
        released, lane.released = lane.released, []
        lane.decoder.release(released)
        logits = lane.decoder.next_logits(ids, [s.tokens for s in batch])
        if logits.ndim != 2 or len(logits) != len(batch):
            raise InferenceError(f"the decoder returned logits of shape {logits.shape} for {len(batch)} sequences")
        generated = [s.tokens[s.prompt_tokens :] if s.sampling.repetition_penalty != 1.0 else () for s in batch]
        return sample_batch(logits, [s.sampling for s in batch], [s.rng for s in batch], generated)

    def _update(
        self, lane: _Lane, batch: list[SequenceState], tokens: list[int],
        ended: list[Ended], seconds: float,
    ) -> _Step:  # fmt: skip
        """Append each token; sequences that end with it leave the lane now."""
        context, eos = self.config.context_length, self.config.eos_id
        out: list[tuple[SequenceState, int, FinishReason | None]] = []
        running = []
        for seq, token in zip(batch, tokens, strict=True):
            seq.tokens.append(token)
            if token == eos:
                reason: FinishReason | None = FinishReason.EOS
            elif seq.generated >= seq.max_new_tokens:
                reason = FinishReason.LENGTH
            elif len(seq.tokens) >= context:
                reason = FinishReason.CONTEXT
            else:
                reason = None
                running.append(seq)
            if reason is not None:
                lane.released.append(seq.id)
            out.append((seq, token, reason))
        lane.running = running
        return _Step(out, ended, len(batch), seconds, time.monotonic())

    def _failed(
        self, lane: _Lane, batch: list[SequenceState], ended: list[Ended], err: Exception,
    ) -> _Step:  # fmt: skip
        """A step that raised: its sequences end with the error and leave the lane."""
        if not isinstance(err, DeepserveError) or isinstance(err, InferenceError):
            log.error("generation step failed", extra={"model": self.name, "batch": len(batch)}, exc_info=err)
            err = InferenceError(f"model '{self.name}' failed during generation; the error was logged")
        lane.released += [s.id for s in batch]
        lane.running = []
        ended = ended + [(seq, FinishReason.ERROR, err) for seq in batch]
        return _Step([], ended, len(batch), 0.0, time.monotonic())

    # ---- the event loop ---------------------------------------------------------------------------
    def _deliver(self, lane: _Lane) -> None:
        """Stream the tokens of every step the lane has handed over and not yet streamed, and end the sequences
        that ended with them.

        Usually that is one step. When the loop falls behind the lane (busy writing other streams' messages),
        several steps wait, and each sequence gets the text of all of them in one message: the same tokens,
        none held back for a step not yet computed, and fewer messages to write while the loop is the
        bottleneck."""
        steps = []
        while lane.outbox:
            steps.append(lane.outbox.popleft())
            lane.unstreamed.release()
        text: dict[SequenceState, list[str]] = {}
        for step in steps:
            if step.tokens:
                self._observer.step(step.batch, step.seconds)
            for seq, why, error in step.ended:
                if not seq.finished:
                    if isinstance(error, DeadlineExceededError):
                        self._observer.rejected("deadline")
                    self._send(seq, text)
                    self._finish(seq, why, error)
            for seq, token, reason in step.tokens:
                if seq.finished:  # cancelled, or a stop sequence, while the step ran
                    continue
                seq.streamed += 1
                first = seq.last_token_at is None
                self._observer.token(step.at - (seq.last_token_at or seq.arrived), first=first)
                seq.last_token_at = step.at
                if reason is FinishReason.EOS:
                    self._send(seq, text)
                    self._finish(seq, reason)
                    continue
                piece, stopped = seq.detokenizer.add(token)
                if piece:
                    text.setdefault(seq, []).append(piece)
                if stopped:
                    reason = FinishReason.STOP
                if reason is not None:
                    self._send(seq, text)
                    self._finish(seq, reason)
        for seq in list(text):
            self._send(seq, text)
        if steps:
            self._publish()

    @staticmethod
    def _send(seq: SequenceState, text: dict[SequenceState, list[str]]) -> None:
        """Queue the text gathered for `seq` as one chunk."""
        pieces = text.pop(seq, None)
        if pieces:
            seq.events.put_nowait(TextChunk("".join(pieces)))

    def _finish(self, seq: SequenceState, reason: FinishReason, error: DeepserveError | None = None) -> None:
        """End a request with its last event (the only place that does)."""
        if seq.finished:
            return
        seq.finished = True
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


def _passed(seq: SequenceState, now: float) -> bool:
    return seq.deadline is not None and now >= seq.deadline


def _expired(seq: SequenceState, where: str) -> Ended:
    return seq, FinishReason.DEADLINE, DeadlineExceededError(f"deadline passed {where}")
