"""The thread side of continuous batching: the queue of waiting sequences and the lanes that run them.

A *lane* is a thread of its own with a `Decoder` and a share of `max_active_sequences`. It repeats (as
vLLM's engine core does in its busy loop):

- plan: drop its sequences that ended (cancelled, stop sequence, deadline) and admit waiting ones (first
  come, first served, from the `WaitingQueue` that all lanes share) up to its slots; sleep while it has
  nothing to run. The result is a `Plan`, or None when the scheduler stops.
- execute: the decoder's next-token logits for every running sequence, and each one's next token
  (`sampling.sample_batch`, with the tokens it generated so far for its repetition penalty).
- update: append each token; sequences that reached max_new_tokens, the end-of-text token or a full context
  leave the lane. The step's tokens (a `StepResult`) go to the lane's `outbox`, and the event loop is asked
  to stream them; the lane meanwhile computes its next step, at most `AHEAD` steps ahead of the streaming.

Who writes what: a sequence's status is WAITING from `submit`, RUNNING from a lane's plan (under the
queue's lock), FINISHED from the event loop (`GenerationScheduler._finish`, under the same lock when the
sequence was waiting). A lane writes only the `tokens` and `rng` of its running sequences; it reads their
status to drop those the loop ended.

Knows nothing of gRPC, ONNX Runtime or tokenizers.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from service.batching.decoders import Decoder, next_tokens
from service.batching.sequences import FinishReason, SequenceState, SequenceStatus
from service.batching.slots import Slots
from service.errors import DeadlineExceededError, DeepserveError, InferenceError

log = logging.getLogger(__name__)

AHEAD = 6
"""Steps a lane may run ahead of the event loop's streaming. Bounds how many tokens a request may get
computed after it was cancelled or hit a stop sequence (the step under way, and this many). With 2, lanes
waited for the loop half of the time while it was busy writing stream messages; 6 gave 16 gRPC streams
5-9% more tokens/s (docs/performance.md)."""

Ended = tuple[SequenceState, FinishReason, DeepserveError]
"""A sequence that ends without a token, why, and the error its stream raises."""


def lane_slots(max_active_sequences: int, lanes: int) -> list[int]:
    """How many active sequences each lane takes: `max_active_sequences` split as evenly as it goes."""
    share, extra = divmod(max_active_sequences, lanes)
    return [share + (i < extra) for i in range(lanes)]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a lane runs next: its running sequences, and those that end without a token."""

    batch: list[SequenceState]
    ended: list[Ended]


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one lane step produced, for the event loop."""

    tokens: list[tuple[SequenceState, int, FinishReason | None]]
    """Each sequence's new token, and why the sequence ends with it (None: it goes on)."""
    ended: list[Ended]
    """Sequences that end without a token (deadline passed, model failure)."""
    batch: int
    seconds: float
    at: float
    """`time.monotonic()` when the tokens were sampled."""


class WaitingQueue:
    """The sequences waiting for a lane, first come first served, shared by the event loop (which adds and
    removes them) and the lanes (which admit them); lanes sleep on it while they have nothing to run."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self._waiting: deque[SequenceState] = deque()
        self.stopping = False

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, seq: SequenceState) -> None:
        with self.lock:
            self._waiting.append(seq)

    def finish(self, seq: SequenceState) -> None:
        """Mark `seq` FINISHED, taking it out of the queue if it still waits there (event loop)."""
        with self.lock:
            if seq.status is SequenceStatus.WAITING and seq in self._waiting:
                self._waiting.remove(seq)
            seq.status = SequenceStatus.FINISHED

    def wake(self) -> None:
        with self.lock:
            self.lock.notify_all()

    def stop(self) -> None:
        """Lanes end at their next plan; sequences still waiting are dropped (the caller has ended them)."""
        with self.lock:
            self.stopping = True
            self._waiting.clear()
            self.lock.notify_all()

    def expire(self, now: float) -> list[Ended]:
        """Take out the waiting sequences whose deadline passed (under `lock`)."""
        if not any(_passed(s, now) for s in self._waiting):
            return []
        late = [s for s in self._waiting if _passed(s, now)]
        self._waiting = deque(s for s in self._waiting if not _passed(s, now))
        return [_expired(s, "while waiting for a slot") for s in late]

    def admit(self, running: list[SequenceState], slots: int) -> None:
        """Move waiting sequences to `running` (RUNNING) until it has `slots` (under `lock`)."""
        while self._waiting and len(running) < slots:
            seq = self._waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            running.append(seq)


@dataclass(frozen=True, slots=True)
class LaneContext:
    """What a lane needs of its scheduler."""

    model: str
    """The scheduler's name (model and version), for errors and logs."""
    context_length: int
    eos_id: int | None
    queue: WaitingQueue
    hand_over: Callable[[Lane], None]
    """Asks the event loop to stream the lane's outbox (thread-safe); RuntimeError once the loop is gone."""
    slots: Slots | None = None
    """Taken for each step's model run, shared with the server's batchers (`--workers`); None: no bound."""


class Lane:
    """One step loop: its thread, its decoder, its share of the active sequences."""

    def __init__(self, name: str, decoder: Decoder | None, slots: int, context: LaneContext) -> None:
        """`decoder`: None for a lane whose steps run elsewhere (`engine_process.ProcessLane`)."""
        self.name = name
        self.decoder = decoder
        self.slots = slots
        self._context = context
        self.running: list[SequenceState] = []
        """Replaced, never changed in place, so the event loop can read it at any time."""
        self._released: list[int] = []
        """Ids of sequences that left since the decoder last ran (it may drop their state)."""
        self.steps = 0
        self.thread: threading.Thread | None = None
        self.outbox: deque[StepResult] = deque()
        """Steps handed to the event loop and not yet streamed, oldest first."""
        self.unstreamed = threading.Semaphore(AHEAD)
        """Taken for each step put in the outbox, given back once the loop has streamed it."""

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"generation:{self.name}", daemon=True)
        self.thread.start()

    def take_oldest(self) -> StepResult:
        """The oldest step not yet streamed (one is put in the outbox per hand-over); the lane may run one more
        step ahead (event loop)."""
        step = self.outbox.popleft()
        self.unstreamed.release()
        return step

    # ---- the lane's thread ------------------------------------------------------------------------
    def close(self) -> None:
        """Free what the lane holds besides its thread (which has ended)."""

    def _run(self) -> None:
        while (plan := self._plan()) is not None:
            start = time.perf_counter()
            try:
                with self._context.slots or contextlib.nullcontext():
                    tokens = self._execute(plan.batch) if plan.batch else []
                step = self._update(plan, tokens, time.perf_counter() - start)
            except Exception as err:  # noqa: BLE001 - the lane must outlive any failure
                step = self._failed(plan, err)
            if not self._emit(step):
                return

    def _emit(self, step: StepResult) -> bool:
        """`step` to the outbox, and the event loop asked to stream it; False once the loop is gone (nobody is
        left to stream to). Waits while `AHEAD` steps are not yet streamed."""
        self.unstreamed.acquire()
        self.outbox.append(step)
        try:
            self._context.hand_over(self)
        except RuntimeError:
            return False
        return True

    def _sort_out(self, running: list[SequenceState], now: float) -> tuple[list[SequenceState], list[Ended]]:
        """Of `running`, those that go on, and those whose deadline passed; these and those the event loop
        ended leave (their ids go to `_released`). Under the queue's lock."""
        going, ended = [], []
        for seq in running:
            if seq.status is SequenceStatus.FINISHED:
                self._released.append(seq.id)
            elif _passed(seq, now):
                self._released.append(seq.id)
                ended.append(_expired(seq, f"after {seq.generated} generated tokens"))
            else:
                going.append(seq)
        return going, ended

    def _plan(self) -> Plan | None:
        """Drop the sequences that ended and those whose deadline passed, then admit waiting ones up to the
        lane's slots; waits while there is nothing to do. None when the scheduler stops."""
        queue = self._context.queue
        with queue.lock:
            while not queue.stopping:
                now = time.monotonic()
                running, ended = self._sort_out(self.running, now)
                ended += queue.expire(now)
                queue.admit(running, self.slots)
                self.running = running
                if running or ended:
                    return Plan(running, ended)
                queue.lock.wait()
        return None

    def _execute(self, batch: list[SequenceState]) -> list[int]:
        """The next token of every sequence of the batch (the decoder first drops the state of those that left)."""
        assert self.decoder is not None
        self.steps += 1
        released, self._released = self._released, []
        self.decoder.release(released)
        ids, tokens = [s.id for s in batch], [s.tokens for s in batch]
        prompts = [s.prompt_tokens for s in batch]
        return next_tokens(self.decoder, ids, tokens, prompts, [s.sampling for s in batch], [s.rng for s in batch])

    def _update(self, plan: Plan, tokens: list[int], seconds: float) -> StepResult:
        """Append each token; sequences that end with it leave the lane now."""
        context, eos = self._context.context_length, self._context.eos_id
        out: list[tuple[SequenceState, int, FinishReason | None]] = []
        running = []
        for seq, token in zip(plan.batch, tokens, strict=True):
            seq.tokens.append(token)
            reason = ending(token, seq.generated, seq.max_new_tokens, len(seq.tokens), eos, context)
            if reason is None:
                running.append(seq)
            else:
                self._released.append(seq.id)
            out.append((seq, token, reason))
        self.running = running
        return StepResult(out, plan.ended, len(plan.batch), seconds, time.monotonic())

    def _failed(self, plan: Plan, err: Exception) -> StepResult:
        """A step that raised: its sequences end with the error and leave the lane."""
        if not isinstance(err, DeepserveError) or isinstance(err, InferenceError):
            model = self._context.model
            log.error("generation step failed", extra={"model": model, "batch": len(plan.batch)}, exc_info=err)
            err = InferenceError(f"model '{model}' failed during generation; the error was logged")
        self._released += [s.id for s in plan.batch]
        self.running = []
        ended = plan.ended + [(seq, FinishReason.ERROR, err) for seq in plan.batch]
        return StepResult([], ended, len(plan.batch), 0.0, time.monotonic())


def ending(
    token: int, generated: int, max_new_tokens: int, length: int, eos: int | None, context: int
) -> FinishReason | None:
    """Why a sequence ends with `token`, its `generated`-th token, `length` tokens in all; None: it goes on."""
    if token == eos:
        return FinishReason.EOS
    if generated >= max_new_tokens:
        return FinishReason.LENGTH
    if length >= context:
        return FinishReason.CONTEXT
    return None


def _passed(seq: SequenceState, now: float) -> bool:
    return seq.deadline is not None and now >= seq.deadline


def _expired(seq: SequenceState, where: str) -> Ended:
    return seq, FinishReason.DEADLINE, DeadlineExceededError(f"deadline passed {where}")
