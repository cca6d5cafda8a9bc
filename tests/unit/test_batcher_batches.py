"""The dynamic batcher's batches: when one closes, requests that carry several rows, padding, failures in a batch,
and instances running side by side."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.batching.batcher import DynamicBatcher
from service.batching.collate import CollateSpec
from service.batching.policy import BatchPolicy
from service.errors import InferenceError
from tests.unit.batcher_helpers import FakeModel, make, req


async def test_closes_at_max_batch_size(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=4, max_queue_delay_s=10.0)
    start = time.monotonic()
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(req(i)) for i in range(8))), 5)
    assert time.monotonic() - start < 1.0, "full batches must not wait for the delay"
    assert model.calls == [4, 4]
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * i for i in range(8)]
    await batcher.close()


async def test_closes_on_delay_with_partial_batch(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=8, max_queue_delay_s=0.05)
    start = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(req(i)) for i in range(3)))
    elapsed = time.monotonic() - start
    assert model.calls == [3]
    assert 0.04 <= elapsed < 1.0
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0]
    await batcher.close()


async def test_preferred_batch_size_closes_early(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=8, max_queue_delay_s=5.0, preferred_batch_sizes=(2, 4))
    start = time.monotonic()
    await asyncio.gather(*(batcher.submit(req(i)) for i in range(4)))
    assert time.monotonic() - start < 1.0, "a preferred size must not wait for the delay"
    assert sum(model.calls) == 4 and max(model.calls) in (2, 4)
    await batcher.close()


async def test_idle_batcher_with_zero_delay_does_not_wait(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=8, max_queue_delay_s=0.0)
    start = time.monotonic()
    for i in range(20):
        await batcher.submit(req(i))
    assert (time.monotonic() - start) / 20 < 0.01
    assert model.calls == [1] * 20
    await batcher.close()


async def test_requests_carrying_their_own_batch_are_concatenated_and_split(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=8, max_queue_delay_s=0.05)
    results = await asyncio.gather(batcher.submit(req(1, rows=3)), batcher.submit(req(2, rows=2)))
    assert model.calls == [5]
    assert results[0]["y"].shape == (3, 2) and (results[0]["y"] == 2).all()
    assert results[1]["y"].shape == (2, 2) and (results[1]["y"] == 4).all()
    await batcher.close()


async def test_a_failing_batch_is_rerun_one_by_one_so_only_the_guilty_request_fails(executor):
    model = FakeModel(fail_when=lambda x: (x == 13).any())
    batcher = make(model, executor, max_batch_size=3, max_queue_delay_s=0.05)
    results = await asyncio.gather(*(batcher.submit(req(v)) for v in (1, 13, 2, 3, 4, 5)), return_exceptions=True)
    assert isinstance(results[1], InferenceError)
    assert "failed to run this request" in str(results[1])
    ok = [r for i, r in enumerate(results) if i != 1]
    assert all(isinstance(r, dict) for r in ok)
    assert [float(r["y"][0, 0]) for r in ok] == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert model.calls == [3, 1, 1, 1, 3]  # the failed batch of 3, its requests alone, then the next batch
    # the batcher survives
    assert float((await batcher.submit(req(7)))["y"][0, 0]) == 14.0
    await batcher.close()


async def test_output_count_mismatch_is_an_error_not_a_hang(executor):
    batcher = make(lambda feed: {"y": feed["x"][:1]}, executor, max_batch_size=4, max_queue_delay_s=0.05)
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(req(i)) for i in range(3)), return_exceptions=True), 5
    )
    assert all(isinstance(r, InferenceError) for r in results)
    assert "1 rows for a batch of 3" in str(results[0])
    await batcher.close()


async def test_padding_gives_the_same_results_as_running_alone(executor):
    def model(feed):  # sum over the sequence (pad 0 is neutral) and the ids doubled
        ids = feed["ids"]
        return {"total": ids.sum(axis=1, keepdims=True), "doubled": ids * 2}

    spec = CollateSpec(pad_values={"ids": 0}, variable_outputs={"doubled": (1,)})
    batcher = DynamicBatcher("m", model, BatchPolicy(max_batch_size=8, max_queue_delay_s=0.05, collate=spec), executor)
    seqs = [np.arange(1, n + 1, dtype=np.int64)[None, :] for n in (3, 7, 1, 5)]
    alone = [model({"ids": s}) for s in seqs]
    together = await asyncio.gather(*(batcher.submit({"ids": s}) for s in seqs))
    assert batcher.executions == 1
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a["total"], t["total"])
        np.testing.assert_array_equal(a["doubled"], t["doubled"])
    await batcher.close()


async def test_shapes_that_cannot_be_padded_are_batched_separately(executor):
    model = FakeModel()
    batcher = make(model, executor, max_batch_size=8, max_queue_delay_s=0.05)
    a = {"x": np.ones((1, 2), np.float32)}
    b = {"x": np.ones((1, 3), np.float32)}
    ra, rb, rc = await asyncio.gather(batcher.submit(a), batcher.submit(b), batcher.submit(a))
    assert ra["y"].shape == (1, 2) and rb["y"].shape == (1, 3) and rc["y"].shape == (1, 2)
    assert sorted(model.calls) == [1, 2]
    await batcher.close()


async def test_instances_run_batches_concurrently(executor):
    model = FakeModel(delay=0.1)
    batcher = make(model, executor, max_batch_size=1, instances=2)
    start = time.monotonic()
    await asyncio.gather(batcher.submit(req(1)), batcher.submit(req(2)))
    assert time.monotonic() - start < 0.19
    await batcher.close()
