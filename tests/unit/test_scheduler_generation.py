"""The generation scheduler's text: lengths, end-of-text and stop sequences, batches that change between steps,
padding, seeds and the repetition penalty."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.batching.sequences import Finished, FinishReason, TextChunk, collate
from service.types import SamplingParams
from tests.unit.scheduler_helpers import VOCAB, Recorder, collect, make, submit


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


async def test_repetition_penalty_counts_the_generated_tokens_only() -> None:
    table = np.zeros((VOCAB, VOCAB), dtype=np.float32)
    table[:, 1:4] = [10.0, 8.0, 6.0]  # whatever came before: b, then c, then d
    scheduler = make(Recorder(table=table))
    penalized = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    # b (10); b is 5 now: c (8); c is 4: d (6); d is 3: b (5), and b again (a token is penalized once)
    assert (await collect(submit(scheduler, [1, 2], 5, sampling=penalized)))[0] == "bcdbb"
    assert (await collect(submit(scheduler, [1, 2], 5)))[0] == "bbbbb"
    await scheduler.close()
