"""The generation scheduler's requests: the waiting queue, cancellation, deadlines, argument checks, model failures,
closing, and what an observer is told."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import numpy as np
import pytest

from service.batching.decoders import RecomputeDecoder
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from service.batching.sequences import FinishReason, SequenceStatus
from service.errors import DeadlineExceededError, InferenceError, InvalidInputError, QueueFullError, UnavailableError
from tests.unit.scheduler_helpers import Recorder, collect, make, submit


def test_a_closed_scheduler_is_freed_without_the_cycle_collector() -> None:
    """Its lanes hold it weakly: a replaced model version (sessions, KV-cache buffers) goes at once."""

    async def run() -> weakref.ref:
        scheduler = make(Recorder())
        await collect(submit(scheduler, [0], 3))
        await scheduler.close()
        return weakref.ref(scheduler)

    gc.disable()
    try:
        ref = asyncio.run(run())
        assert ref() is None
    finally:
        gc.enable()


async def test_queue_full_when_too_many_wait() -> None:
    scheduler = make(Recorder(), start=False, max_waiting=2, max_active_sequences=1)
    for _ in range(3):  # one for the free slot (taken at the next step), two waiting
        submit(scheduler, [1], 1)
    with pytest.raises(QueueFullError, match="queue full"):
        submit(scheduler, [1], 1)
    await scheduler.close(timeout=0)


async def test_cancel_frees_the_slot_at_the_next_step() -> None:
    forward = Recorder(delay=0.01)
    scheduler = make(forward, max_active_sequences=1)
    stream = submit(scheduler, [0], 1000)
    waiting = submit(scheduler, [5], 3)
    await anext(stream)
    await anext(stream)
    stream.cancel()
    text, done = await collect(waiting)  # the freed slot goes to the waiting request
    assert (text, done.reason) == ("ghi", FinishReason.LENGTH)
    ran_with_cancelled = sum(1 for b in forward.batches if b[0][0] == 0)
    assert ran_with_cancelled <= 3  # the step in flight when cancelled, at most
    assert all(row[0] != 0 for row in forward.batches[-1])  # the last step ran without it
    assert scheduler.active == 0 and stream.sequence.finish_reason is FinishReason.CANCELLED
    await scheduler.close()


async def test_a_request_cancelled_while_waiting_leaves_the_queue_at_once() -> None:
    scheduler = make(Recorder(), start=False, max_active_sequences=1)
    streams = [submit(scheduler, [i], 2) for i in range(3)]
    assert (scheduler.waiting, scheduler.active) == (3, 0)
    assert {s.sequence.status for s in streams} == {SequenceStatus.WAITING}
    streams[1].cancel()
    assert (scheduler.waiting, scheduler.active) == (2, 0)  # counted at once, not at a lane's next step
    assert streams[1].sequence.status is SequenceStatus.FINISHED
    scheduler.start()
    texts = [text for text, _ in await asyncio.gather(collect(streams[0]), collect(streams[2]))]
    assert texts == ["bc", "de"]
    assert {s.sequence.status for s in streams} == {SequenceStatus.FINISHED}
    await scheduler.close()


async def test_deadline_ends_the_stream_with_deadline_exceeded() -> None:
    scheduler = make(Recorder(delay=0.01))
    stream = submit(scheduler, [0], 1000, deadline=time.monotonic() + 0.1)
    chunks = 0
    with pytest.raises(DeadlineExceededError, match=r"after \d+ generated tokens"):
        async for _ in stream:
            chunks += 1
    assert chunks > 0
    assert scheduler.active == 0 or await _eventually(lambda: scheduler.active == 0)
    await scheduler.close()


async def test_deadline_already_passed_is_refused() -> None:
    scheduler = make(Recorder())
    with pytest.raises(DeadlineExceededError):
        submit(scheduler, [0], 5, deadline=time.monotonic() - 1)
    await scheduler.close()


async def test_model_failure_fails_the_batch_and_the_loop_survives() -> None:
    calls = {"n": 0}

    def flaky(token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return Recorder()(token_ids, mask)

    scheduler = GenerationScheduler("flaky", [RecomputeDecoder(flaky)], SchedulerConfig(context_length=16))
    scheduler.start()
    with pytest.raises(InferenceError, match="failed during generation"):
        await collect(submit(scheduler, [0], 3))
    text, _ = await collect(submit(scheduler, [0], 3))
    assert text == "bcd"
    await scheduler.close()


async def test_wrong_logits_shape_is_an_inference_error() -> None:
    scheduler = GenerationScheduler("bad", [RecomputeDecoder(lambda ids, mask: np.zeros((1, 3)))], SchedulerConfig(16))
    scheduler.start()
    with pytest.raises(InferenceError):
        await collect(submit(scheduler, [0], 3))
    await scheduler.close()


async def test_submit_checks_its_arguments() -> None:
    scheduler = make(Recorder(), context_length=4)
    with pytest.raises(InvalidInputError, match="no tokens"):
        submit(scheduler, [], 3)
    with pytest.raises(InvalidInputError, match="at most 3 tokens"):
        submit(scheduler, [1, 2, 3, 4], 3)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        submit(scheduler, [1], 0)
    await scheduler.close()


async def test_close_fails_unfinished_requests_with_unavailable() -> None:
    scheduler = make(Recorder(delay=0.01))
    stream = submit(scheduler, [0], 1000)
    await anext(stream)
    await scheduler.close(timeout=0.05)
    with pytest.raises(UnavailableError, match="unloaded"):
        await collect(stream)
    with pytest.raises(UnavailableError, match="shutting down"):
        submit(scheduler, [0], 1)


class Observed:
    def __init__(self) -> None:
        self.first: list[float] = []
        self.gaps: list[float] = []
        self.counts: list[tuple[int, int]] = []
        self.steps: list[int] = []
        self.rejections: list[str] = []

    def sequences(self, active: int, waiting: int) -> None:
        self.counts.append((active, waiting))

    def step(self, batch: int, seconds: float) -> None:
        self.steps.append(batch)

    def token(self, seconds: float, first: bool) -> None:
        (self.first if first else self.gaps).append(seconds)

    def rejected(self, reason: str) -> None:
        self.rejections.append(reason)


async def test_observer_sees_tokens_steps_and_sequence_counts() -> None:
    seen = Observed()
    config = SchedulerConfig(64, max_active_sequences=2)
    scheduler = GenerationScheduler("obs", [RecomputeDecoder(Recorder(delay=0.01))], config, seen)
    scheduler.start()
    await asyncio.gather(*(collect(submit(scheduler, [i], 3)) for i in range(3)))
    assert len(seen.first) == 3 and len(seen.gaps) == 6
    assert max(seen.steps) == 2 and sum(seen.steps) == 9
    assert (2, 1) in seen.counts and seen.counts[-1] == (0, 0)
    stream = submit(scheduler, [0], 100)
    await anext(stream)
    stream.cancel()
    assert seen.rejections == ["cancelled"]
    await scheduler.close()


async def _eventually(condition, timeout: float = 2.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()
