"""`--workers` bounds every model run: V2 batches, lone requests on the event loop and generation steps share
one set of run slots (`RunSlots`), so a generation lane cannot add a run beyond it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching.activity import QUIET_GAP_S, Activity
from service.batching.batcher import DynamicBatcher
from service.batching.policy import BatchPolicy
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from service.batching.slots import RunSlots
from service.types import SamplingParams


class Meter:
    """Counts the model runs under way at once (batches and generation steps alike), and the most seen."""

    def __init__(self, seconds: float = 0.004) -> None:
        self.seconds = seconds
        self.now = self.most = 0
        self.lock = threading.Lock()
        self.threads: list[int] = []

    def run(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        self.threads.append(threading.get_ident())
        time.sleep(self.seconds)
        with self.lock:
            self.now -= 1


class MeteredModel:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.meter.run()
        return {"y": feed["x"] * 2}


class MeteredDecoder:
    """Next token = 1; each step is one metered run."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    def next_logits(self, seq_ids: Sequence[int], tokens: Sequence[Sequence[int]]) -> np.ndarray:
        self.meter.run()
        logits = np.zeros((len(seq_ids), 4), np.float32)
        logits[:, 1] = 1.0
        return logits

    def release(self, seq_ids: Iterable[int]) -> None:
        pass


class Text:
    def add(self, token_id: int) -> tuple[str, bool]:
        return "x", False

    def flush(self) -> str:
        return ""


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)


async def load(slots: threading.Semaphore, executor: ThreadPoolExecutor) -> Meter:
    """Batches from two models and two generation lanes at once, all through `slots`; the meter of their runs."""
    meter = Meter()
    policy = BatchPolicy(max_batch_size=1)
    batchers = [DynamicBatcher(f"m{i}", MeteredModel(meter), policy, executor, slots=slots) for i in range(2)]
    config = SchedulerConfig(64, max_active_sequences=2)
    scheduler = GenerationScheduler("g", [MeteredDecoder(meter), MeteredDecoder(meter)], config, slots=slots)
    scheduler.start()
    streams = [scheduler.submit([1], 15, SamplingParams(temperature=0.0), Text()) for _ in range(2)]

    async def drain(stream) -> None:  # type: ignore[no-untyped-def]
        async for _ in stream:
            pass

    x = {"x": np.ones((1, 2), np.float32)}
    await asyncio.gather(*(drain(s) for s in streams), *(b.submit(x) for b in batchers for _ in range(12)))
    await scheduler.close()
    for batcher in batchers:
        await batcher.close()
    return meter


async def test_one_worker_means_one_model_run_at_a_time(executor):
    meter = await load(RunSlots(1), executor)
    assert meter.most == 1


async def test_two_workers_let_two_runs_overlap(executor):
    """The same load with two slots does overlap, so the test above can fail."""
    meter = await load(RunSlots(2), executor)
    assert meter.most == 2


async def test_a_lone_request_waits_for_a_slot_in_a_worker_not_on_the_event_loop(executor):
    Activity.in_flight = 0
    Activity.busy_until = Activity.last_answer = 0.0
    meter, slots = Meter(seconds=0.0), RunSlots(1)
    batcher = DynamicBatcher("m", MeteredModel(meter), BatchPolicy(max_batch_size=8), executor, slots=slots)
    x = {"x": np.ones((1, 2), np.float32)}
    loop = threading.get_ident()
    for _ in range(10):  # the first run measures the model in a worker; later lone ones run on the loop
        await asyncio.sleep(QUIET_GAP_S * 4)
        await batcher.submit(x)
        if meter.threads[-1] == loop:
            break
    assert meter.threads[-1] == loop, "no lone request ran on the event loop"
    slots.acquire()  # a generation step holds the only slot
    await asyncio.sleep(QUIET_GAP_S * 4)
    answer = asyncio.ensure_future(batcher.submit(x))
    await asyncio.sleep(0.05)  # the loop is free meanwhile: this sleep returns
    assert not answer.done()
    slots.release()
    await answer
    assert meter.threads[-1] != loop
    await batcher.close()
    Activity.busy_until = Activity.last_answer = 0.0


def test_run_slots_count_what_is_taken_and_wait_for_a_slot_given_back() -> None:
    slots = RunSlots(2)
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    assert not slots.acquire(blocking=False) and slots.free == 0
    taken = threading.Event()

    def worker() -> None:
        with slots:
            taken.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert not taken.wait(0.05), "a slot was taken while none was free"
    slots.release()
    assert taken.wait(5)
    thread.join(5)
    assert slots.free == 1  # the worker gave its slot back
    slots.release()
    assert slots.free == 2
    with pytest.raises(ValueError, match="at least 1"):
        RunSlots(0)
