"""The dynamic batcher's queue: cancelled and expired requests, the default timeout, a full queue, and closing."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.errors import DeadlineExceededError, QueueFullError, UnavailableError
from tests.unit.batcher_helpers import FakeModel, held, make, req


async def test_cancelled_request_never_reaches_the_model(executor):
    model, batcher, busy = held(executor, 1)
    await asyncio.sleep(0.05)
    victim = asyncio.ensure_future(batcher.submit(req(99)))
    await asyncio.sleep(0.01)
    assert batcher.queue_depth == 1
    victim.cancel()
    await asyncio.sleep(0.01)
    assert batcher.queue_depth == 0, "a cancelled request must leave the queue at once"
    model.gate.set()
    await busy
    assert float((await batcher.submit(req(3)))["y"][0, 0]) == 6.0
    assert not any((x == 99).any() for x in model.seen)
    assert model.calls == [1, 1]
    await batcher.close()


async def test_expired_request_gets_deadline_exceeded_and_never_runs(executor):
    model, batcher, busy = held(executor, 1)
    await asyncio.sleep(0.05)
    with pytest.raises(DeadlineExceededError, match="deadline passed while waiting in the queue"):
        await batcher.submit(req(99), deadline=time.monotonic() + 0.05)
    assert batcher.queue_depth == 0
    model.gate.set()
    await busy
    assert not any((x == 99).any() for x in model.seen)
    await batcher.close()


async def test_default_timeout_applies_without_deadline(executor):
    model, batcher, busy = held(executor, 1, default_timeout_s=0.05)
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(req(2))
    model.gate.set()
    assert float((await busy)["y"][0, 0]) == 2.0, "a request already running is not expired"
    await batcher.close()


async def test_queue_full_fails_at_once(executor):
    model, batcher, running = held(executor, 0, max_queue_size=2)
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(batcher.submit(req(i))) for i in (1, 2)]
    await asyncio.sleep(0.01)
    start = time.monotonic()
    with pytest.raises(QueueFullError, match="queue full"):
        await batcher.submit(req(3))
    assert time.monotonic() - start < 0.05
    model.gate.set()
    assert len(await asyncio.gather(running, *queued)) == 3
    await batcher.close()


async def test_close_drains_queued_work_then_refuses_new(executor):
    model = FakeModel(delay=0.02)
    batcher = make(model, executor, max_batch_size=1)
    pending = [asyncio.ensure_future(batcher.submit(req(i))) for i in range(5)]
    await asyncio.sleep(0)
    await batcher.close(timeout=5)
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(UnavailableError):
        await batcher.submit(req(1))
