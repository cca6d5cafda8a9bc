"""The dynamic batcher alone: no gRPC, no ONNX Runtime; a Python function stands in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching.activity import QUIET_GAP_S, Activity
from service.batching.batcher import DynamicBatcher
from service.batching.collate import CollateSpec
from service.batching.policy import INLINE_MAX_S, BatchPolicy
from service.errors import DeadlineExceededError, InferenceError, QueueFullError, UnavailableError


class FakeModel:
    """Doubles `x`; records the batch size of every call; can block until released, or fail."""

    def __init__(self, delay: float = 0.0, fail_when: object = None) -> None:
        self.calls: list[int] = []
        self.seen: list[np.ndarray] = []
        self.delay = delay
        self.fail_when = fail_when
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.gate.wait(5)
        x = feed["x"]
        self.calls.append(x.shape[0])
        self.seen.append(x.copy())
        if self.delay:
            time.sleep(self.delay)
        if callable(self.fail_when) and self.fail_when(x):
            raise RuntimeError("model exploded")
        return {"y": x * 2}


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


def make(model, executor, **policy) -> DynamicBatcher:  # type: ignore[no-untyped-def]
    batcher = DynamicBatcher("m", model, BatchPolicy(**{"max_batch_size": 8, **policy}), executor)
    return batcher


def req(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 2), value, dtype=np.float32)}


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


async def test_cancelled_request_never_reaches_the_model(executor):
    model = FakeModel()
    model.gate.clear()
    batcher = make(model, executor, max_batch_size=1)
    busy = asyncio.ensure_future(batcher.submit(req(1)))
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
    model = FakeModel()
    model.gate.clear()
    batcher = make(model, executor, max_batch_size=1)
    busy = asyncio.ensure_future(batcher.submit(req(1)))
    await asyncio.sleep(0.05)
    with pytest.raises(DeadlineExceededError, match="deadline passed while waiting in the queue"):
        await batcher.submit(req(99), deadline=time.monotonic() + 0.05)
    assert batcher.queue_depth == 0
    model.gate.set()
    await busy
    assert not any((x == 99).any() for x in model.seen)
    await batcher.close()


async def test_default_timeout_applies_without_deadline(executor):
    model = FakeModel()
    model.gate.clear()
    batcher = make(model, executor, max_batch_size=1, default_timeout_s=0.05)
    busy = asyncio.ensure_future(batcher.submit(req(1)))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(req(2))
    model.gate.set()
    assert float((await busy)["y"][0, 0]) == 2.0, "a request already running is not expired"
    await batcher.close()


async def test_queue_full_fails_at_once(executor):
    model = FakeModel()
    model.gate.clear()
    batcher = make(model, executor, max_batch_size=1, max_queue_size=2)
    running = asyncio.ensure_future(batcher.submit(req(0)))
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


async def test_close_drains_queued_work_then_refuses_new(executor):
    model = FakeModel(delay=0.02)
    batcher = make(model, executor, max_batch_size=1)
    pending = [asyncio.ensure_future(batcher.submit(req(i))) for i in range(5)]
    await asyncio.sleep(0)
    await batcher.close(timeout=5)
    assert all(p.done() and not p.exception() for p in pending)
    with pytest.raises(UnavailableError):
        await batcher.submit(req(1))


async def test_instances_run_batches_concurrently(executor):
    model = FakeModel(delay=0.1)
    batcher = make(model, executor, max_batch_size=1, instances=2)
    start = time.monotonic()
    await asyncio.gather(batcher.submit(req(1)), batcher.submit(req(2)))
    assert time.monotonic() - start < 0.19
    await batcher.close()


# ---- lone requests on the event loop (BatchPolicy.inline) ----------------------------------------------
class ThreadRecorder(FakeModel):
    """Also records the thread each call ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        return super().__call__(feed)


@pytest.fixture
def quiet_process():
    """No request of another test in flight, and no sign of load left from one."""
    Activity.in_flight = 0
    Activity.busy_until = Activity.last_answer = 0.0
    yield
    Activity.busy_until = Activity.last_answer = 0.0


async def spaced(batcher: DynamicBatcher, value: float) -> dict[str, np.ndarray]:
    """A lone request, sent the way an idle client would: some time after the previous answer."""
    await asyncio.sleep(QUIET_GAP_S * 4)
    return await batcher.submit(req(value))


async def test_lone_requests_run_on_the_event_loop_once_the_models_time_is_known(executor, quiet_process):
    model, lone = ThreadRecorder(), ThreadRecorder()
    batcher = DynamicBatcher("m", model, BatchPolicy(max_batch_size=8), executor, run_inline=lone)
    loop_thread = threading.get_ident()
    first = await spaced(batcher, 1)
    assert model.threads and model.threads[0] != loop_thread, "the first run measures the model, in a worker"
    results = [await spaced(batcher, v) for v in (2, 3)]
    assert lone.threads == [loop_thread, loop_thread], "later lone requests run on the loop, on `run_inline`"
    assert [float(r["y"][0, 0]) for r in [first, *results]] == [2.0, 4.0, 6.0]
    assert Activity.in_flight == 0
    await batcher.close()


async def test_concurrent_requests_still_batch_in_a_worker(executor, quiet_process):
    model = ThreadRecorder()
    batcher = make(model, executor)
    await spaced(batcher, 0)  # the model's time is known now
    model.gate.clear()
    first = asyncio.ensure_future(batcher.submit(req(1)))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(batcher.submit(req(v))) for v in (2, 3, 4)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(first, *rest)
    assert model.calls[-2:] == [1, 3], "the three that came while one ran form one batch"
    assert threading.get_ident() not in model.threads[1:]
    await batcher.close()


async def test_a_request_that_was_already_waiting_turns_inline_runs_off_for_a_while(executor, quiet_process):
    model = ThreadRecorder()
    batcher = make(model, executor)
    await spaced(batcher, 0)
    await spaced(batcher, 1)
    assert model.threads[-1] == threading.get_ident()
    await batcher.submit(req(2))  # at once after an answer: load
    await batcher.submit(req(3))
    assert threading.get_ident() not in model.threads[-2:], "held off for HOLD_S after a sign of load"
    assert Activity.busy_until > time.monotonic()


async def test_a_queue_delay_means_waiting_for_company_even_alone(executor, quiet_process):
    model = ThreadRecorder()
    batcher = make(model, executor, max_queue_delay_s=0.05)
    for v in range(3):
        start = time.monotonic()
        await spaced(batcher, v)
        assert time.monotonic() - start >= 0.05
    assert threading.get_ident() not in model.threads


async def test_slow_models_never_run_on_the_event_loop(executor, quiet_process):
    model = ThreadRecorder()
    model.delay = INLINE_MAX_S * 2
    batcher = make(model, executor)
    for v in range(3):
        await spaced(batcher, v)
    assert threading.get_ident() not in model.threads


async def test_a_lone_run_that_fails_fails_only_its_request(executor, quiet_process):
    model = FakeModel(fail_when=lambda x: (x == 7).any())
    batcher = make(model, executor)
    await spaced(batcher, 1)
    with pytest.raises(InferenceError, match="failed to run this request"):
        await spaced(batcher, 7)
    assert float((await spaced(batcher, 2))["y"][0, 0]) == 4.0
    assert Activity.in_flight == 0
    await batcher.close()
