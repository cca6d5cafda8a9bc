"""The generation scheduler alone, with hand-made forward functions (no ONNX Runtime, no tokenizer)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from service.batching.activity import Activity
from service.batching.decoders import RecomputeDecoder
from service.batching.scheduler import GenerationScheduler, GenerationStream, SchedulerConfig
from service.batching.sequences import Finished, FinishReason, SequenceStatus, TextChunk, collate
from service.errors import DeadlineExceededError, InferenceError, InvalidInputError, QueueFullError, UnavailableError
from service.types import SamplingParams

VOCAB = 26
GREEDY = SamplingParams(temperature=0.0)


class Letters:
    """Detokenizer: token i is the letter chr(97 + i); stops when `stop` appears (the text ends before it)."""

    def __init__(self, stop: str = "") -> None:
        self.text, self.sent, self.stop = "", 0, stop

    def add(self, token_id: int) -> tuple[str, bool]:
        self.text += chr(97 + token_id)
        end, stopped = len(self.text), False
        if self.stop and self.stop in self.text:
            end, stopped = self.text.index(self.stop), True
        delta, self.sent = self.text[self.sent : end], max(self.sent, end)
        return delta, stopped

    def flush(self) -> str:
        delta, self.sent = self.text[self.sent :], len(self.text)
        return delta


class Recorder:
    """forward(): next token = current token + 1 (mod VOCAB); records every batch it is given."""

    def __init__(self, delay: float = 0.0, table: np.ndarray | None = None) -> None:
        self.delay = delay
        self.table = table
        self.batches: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.threads: set[str] = set()

    def __call__(self, token_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.batches.append(token_ids.copy())
        self.masks.append(mask.copy())
        self.threads.add(threading.current_thread().name)
        if self.delay:
            time.sleep(self.delay)
        if self.table is not None:
            return self.table[token_ids]
        logits = np.zeros((*token_ids.shape, VOCAB), dtype=np.float32)
        np.put_along_axis(logits, ((token_ids + 1) % VOCAB)[..., None], 10.0, axis=-1)
        return logits


def make(forward: Recorder, start: bool = True, **config: object) -> GenerationScheduler:
    settings = {"context_length": 64, "max_active_sequences": 4, "max_waiting": 8, **config}
    scheduler = GenerationScheduler("test", [RecomputeDecoder(forward)], SchedulerConfig(**settings))  # type: ignore[arg-type]
    if start:
        scheduler.start()
    return scheduler


async def collect(stream: GenerationStream) -> tuple[str, Finished]:
    text, last = "", None
    async for event in stream:
        if isinstance(event, TextChunk):
            text += event.text
        else:
            last = event
    assert isinstance(last, Finished)
    return text, last


def submit(scheduler: GenerationScheduler, prompt: list[int], max_new: int, **kwargs: object) -> GenerationStream:
    sampling = kwargs.pop("sampling", GREEDY)
    return scheduler.submit(prompt, max_new, sampling, Letters(str(kwargs.pop("stop", ""))), **kwargs)  # type: ignore[arg-type]


async def test_generates_until_max_new_tokens() -> None:
    scheduler = make(Recorder())
    text, done = await collect(submit(scheduler, [0, 1], 5))
    assert text == "cdefg"
    assert done == Finished(FinishReason.LENGTH, prompt_tokens=2, generated_tokens=5)
    await scheduler.close()


async def test_a_message_per_token_even_when_the_loop_falls_behind() -> None:
    """The lane runs ahead of a busy event loop (up to AHEAD steps); the stream still gets one chunk per token,
    in order, so what a client sees does not depend on the timing, and the stop rules still apply."""
    scheduler = make(Recorder())
    stream = submit(scheduler, [0], 12, stop="k")
    await asyncio.sleep(0)  # the lane wakes
    time.sleep(0.3)  # the loop is busy while the lane computes AHEAD steps (a step takes microseconds here)
    chunks, done = [], None
    async for event in stream:
        if isinstance(event, TextChunk):
            chunks.append(event.text)
        else:
            done = event
    assert chunks == list("bcdefghij")
    assert done == Finished(FinishReason.STOP, prompt_tokens=1, generated_tokens=10)
    await scheduler.close()


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


async def test_end_of_text_token_finishes_without_text() -> None:
    scheduler = make(Recorder(), eos_id=5)
    text, done = await collect(submit(scheduler, [3], 10))
    assert (text, done.reason, done.generated_tokens) == ("e", FinishReason.EOS, 2)
    await scheduler.close()


async def test_stop_sequence_ends_the_text_before_it() -> None:
    scheduler = make(Recorder())
    text, done = await collect(submit(scheduler, [2], 10, stop="f"))
    assert (text, done.reason, done.generated_tokens) == ("de", FinishReason.STOP, 3)
    await scheduler.close()


async def test_context_full_ends_generation() -> None:
    scheduler = make(Recorder(), context_length=6)
    text, done = await collect(submit(scheduler, [0, 1, 2, 3], 10))
    assert (text, done.reason, done.generated_tokens) == ("ef", FinishReason.CONTEXT, 2)
    await scheduler.close()


async def test_requests_join_and_leave_between_steps() -> None:
    forward = Recorder()
    scheduler = make(forward, max_active_sequences=2)
    streams = [submit(scheduler, [i], n) for i, n in enumerate([1, 4, 2, 2])]
    results = await asyncio.gather(*(collect(s) for s in streams))
    assert [r[1].generated_tokens for r in results] == [1, 4, 2, 2]
    # A+B; A leaves and C joins at once: B+C twice; C leaves and D joins: B+D; B leaves: D alone.
    firsts = [tuple(int(row[0]) for row in batch) for batch in forward.batches]
    assert firsts == [(0, 1), (1, 2), (1, 2), (1, 3), (3,)]
    assert max(len(b) for b in forward.batches) == 2
    await scheduler.close()


async def test_batch_is_right_padded_and_logits_read_at_each_last_token() -> None:
    forward = Recorder()
    scheduler = make(forward, start=False, pad_id=0)
    short, long = submit(scheduler, [7], 1), submit(scheduler, [3, 4, 5], 1)
    scheduler.start()
    (text_short, _), (text_long, _) = await asyncio.gather(collect(short), collect(long))
    assert (text_short, text_long) == ("i", "g")  # 7 + 1 and 5 + 1: not the padded positions
    np.testing.assert_array_equal(forward.batches[0], [[7, 0, 0], [3, 4, 5]])
    np.testing.assert_array_equal(forward.masks[0], [[1, 0, 0], [1, 1, 1]])
    await scheduler.close()


def test_collate() -> None:
    ids, mask, lengths = collate([[5, 6], [7], [1, 2, 3]], pad_id=9)
    np.testing.assert_array_equal(ids, [[5, 6, 9], [7, 9, 9], [1, 2, 3]])
    np.testing.assert_array_equal(mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    assert lengths.tolist() == [2, 1, 3] and ids.dtype == np.int64


async def test_same_seed_same_text_alone_and_beside_others() -> None:
    table = np.random.default_rng(0).normal(size=(VOCAB, VOCAB)).astype(np.float32)
    forward = Recorder(table=table)
    scheduler = make(forward, max_active_sequences=4)
    sampling = SamplingParams(temperature=1.0, top_k=10, top_p=0.9, seed=1234)
    alone, _ = await collect(submit(scheduler, [1, 2], 30, sampling=sampling))
    others = [submit(scheduler, [i], 10 + i, sampling=SamplingParams(seed=i)) for i in range(3)]
    mine = submit(scheduler, [1, 2], 30, sampling=sampling)
    together = await asyncio.gather(collect(mine), *(collect(s) for s in others))
    assert together[0][0] == alone
    assert max(len(b) for b in forward.batches) == 4
    other, _ = await collect(submit(scheduler, [1, 2], 30, sampling=SamplingParams(seed=99)))
    assert other != alone
    await scheduler.close()


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


async def test_forward_runs_in_a_worker_thread_and_the_loop_stays_free() -> None:
    forward = Recorder(delay=0.2)
    scheduler = make(forward)
    stream = submit(scheduler, [0], 2)
    await asyncio.sleep(0.02)  # the first step is running now
    start = time.perf_counter()
    await asyncio.sleep(0.01)
    assert time.perf_counter() - start < 0.1
    await collect(stream)
    assert forward.threads and all(name.startswith("generation:") for name in forward.threads)
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


class CachingDecoder:
    """A `Decoder` with per-sequence state, as a KV cache has: next token = last token + 1 (mod VOCAB).

    It checks that a sequence it knows comes back exactly one token longer each step."""

    def __init__(self) -> None:
        self.cached: dict[int, int] = {}
        self.prefilled: list[int] = []
        self.released: list[int] = []
        self.batches: list[tuple[int, ...]] = []

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        self.batches.append(tuple(seq_ids))
        logits = np.zeros((len(seq_ids), VOCAB), dtype=np.float32)
        for row, (seq_id, seq) in enumerate(zip(seq_ids, tokens, strict=True)):
            if seq_id in self.cached:
                assert self.cached[seq_id] == len(seq) - 1, "a cached sequence must grow by one token per step"
            else:
                self.prefilled.append(seq_id)
            self.cached[seq_id] = len(seq)
            logits[row, (seq[-1] + 1) % VOCAB] = 10.0
        return logits

    def release(self, seq_ids: Iterable[int]) -> None:
        for seq_id in seq_ids:
            del self.cached[seq_id]
            self.released.append(seq_id)


async def test_a_caching_decoder_sees_each_sequence_new_once_and_is_told_when_it_leaves() -> None:
    decoder = CachingDecoder()
    scheduler = GenerationScheduler("cached", [decoder], SchedulerConfig(64, max_active_sequences=2))
    scheduler.start()
    streams = [submit(scheduler, [i], n) for i, n in enumerate([1, 4, 2])]
    texts = [text for text, _ in await asyncio.gather(*(collect(s) for s in streams))]
    assert texts == ["b", "cdef", "de"]
    ids = [s.sequence.id for s in streams]
    assert decoder.prefilled == ids
    # A leaves after its first token: released at the next step, when C joins in its row.
    assert decoder.batches[:3] == [(ids[0], ids[1]), (ids[1], ids[2]), (ids[1], ids[2])]
    assert decoder.released[:1] == [ids[0]]
    await collect(submit(scheduler, [5], 1))  # the next step releases the rest
    assert sorted(decoder.released) == sorted(ids)
    await scheduler.close()


async def test_a_cancelled_sequence_is_released_and_not_computed_again() -> None:
    decoder = CachingDecoder()
    scheduler = GenerationScheduler("cached", [decoder], SchedulerConfig(64, max_active_sequences=2))
    scheduler.start()
    cancelled, other = submit(scheduler, [0], 1000), submit(scheduler, [3], 20)
    await anext(cancelled)
    cancelled.cancel()
    await collect(other)
    seq_id = cancelled.sequence.id
    assert seq_id in decoder.released
    after = decoder.batches[decoder.batches.index(next(b for b in decoder.batches if seq_id not in b)) :]
    assert all(seq_id not in batch for batch in after)
    await scheduler.close()


class MeetingDecoder(CachingDecoder):
    """A `CachingDecoder` whose first step waits until the other lane's first step has begun: with six
    requests waiting both lanes must take some, however the two threads happen to be scheduled."""

    def __init__(self, meeting: threading.Barrier) -> None:
        super().__init__()
        self.meeting: threading.Barrier | None = meeting

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        if self.meeting is not None:
            self.meeting.wait()
            self.meeting = None
        return super().next_logits(seq_ids, tokens)


async def test_lanes_share_the_slots_and_keep_their_sequences() -> None:
    meeting = threading.Barrier(2, timeout=10)
    decoders = [MeetingDecoder(meeting), MeetingDecoder(meeting)]
    config = SchedulerConfig(64, max_active_sequences=3, max_waiting=8)
    scheduler = GenerationScheduler("lanes", decoders, config)
    scheduler.start()
    streams = [submit(scheduler, [i], 3 + i) for i in range(6)]
    texts = [text for text, _ in await asyncio.gather(*(collect(s) for s in streams))]
    assert texts == ["".join(chr(97 + (i + 1 + j) % VOCAB) for j in range(3 + i)) for i in range(6)]
    first, second = ({s for batch in d.batches for s in batch} for d in decoders)
    assert first and second and not first & second  # both lanes ran; a sequence stays in its lane
    assert max(map(len, decoders[0].batches)) <= 2 and max(map(len, decoders[1].batches)) <= 1  # 3 slots: 2 + 1
    assert sorted(decoders[0].prefilled + decoders[1].prefilled) == sorted(s.sequence.id for s in streams)
    await scheduler.close()


def test_more_lanes_than_slots_is_refused() -> None:
    with pytest.raises(ValueError, match="3 lanes for 2 active sequences"):
        GenerationScheduler("lanes", [CachingDecoder() for _ in range(3)], SchedulerConfig(64, max_active_sequences=2))


async def test_a_live_stream_counts_as_in_flight_for_the_whole_process() -> None:
    """While a generation streams, a batcher must not run a lone request on the event loop (batching/activity.py)."""
    before = Activity.in_flight
    scheduler = GenerationScheduler("counted", [CachingDecoder()], SchedulerConfig(64, max_active_sequences=2))
    scheduler.start()
    stream = submit(scheduler, [1], 5)
    assert Activity.in_flight == before + 1
    busy_until = Activity.busy_until
    Activity.in_flight += 1  # a batcher request arriving now counts itself, then asks
    try:
        assert not Activity.alone(time.monotonic())
    finally:
        Activity.in_flight -= 1
        Activity.busy_until = busy_until
    await collect(stream)
    assert Activity.in_flight == before
    await scheduler.close()


async def test_repetition_penalty_counts_the_generated_tokens_only() -> None:
    table = np.zeros((VOCAB, VOCAB), dtype=np.float32)
    table[:, 1:4] = [10.0, 8.0, 6.0]  # whatever came before: b, then c, then d
    scheduler = make(Recorder(table=table))
    penalized = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    # b (10); b is 5 now: c (8); c is 4: d (6); d is 3: b (5), and b again (a token is penalized once)
    assert (await collect(submit(scheduler, [1, 2], 5, sampling=penalized)))[0] == "bcdbb"
    assert (await collect(submit(scheduler, [1, 2], 5)))[0] == "bbbbb"
    await scheduler.close()
