"""The generation scheduler's lanes: worker threads, decoders with per-sequence state, slots shared between lanes,
and the process-wide count of requests in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np
import pytest

from service.batching.activity import Activity
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from tests.unit.scheduler_helpers import VOCAB, Recorder, collect, make, submit


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
