"""The dynamic batcher's lone requests on the event loop (BatchPolicy.inline): when they run there, and when not."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import activity
from service.batching.activity import PROBE_AFTER, QUIET_GAP_S, Activity
from service.batching.batcher import DynamicBatcher
from service.batching.policy import INLINE_MAX_S, BatchPolicy
from service.batching.slots import RunSlots
from service.errors import InferenceError
from tests.unit.batcher_helpers import FakeModel, make, req


class ThreadRecorder(FakeModel):
    """Also records the thread each call ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.threads.append(threading.get_ident())
        return super().__call__(feed)


@pytest.fixture
def quiet_process(monkeypatch):
    """No request of another test in flight, and no sign of load left from one. Every lone request counts
    towards a probe, however slowly a busy test machine runs the test."""
    monkeypatch.setattr(activity, "PROBE_GAP_S", 60.0)

    def reset() -> None:
        Activity.streak = Activity.signs = Activity.signs_at_probe = 0
        Activity.probe_after = PROBE_AFTER
        Activity.busy_until = Activity.last_answer = 0.0

    Activity.in_flight = 0
    reset()
    yield
    reset()


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


async def test_requests_waiting_behind_each_other_batch_even_where_the_loop_is_slow_between_them(
    executor, quiet_process
):
    """On a machine where the loop takes longer than QUIET_GAP_S from one answer to the next waiting request,
    requests already waiting look like one client's back-to-back requests. Without the probe every one of them
    ran alone on the loop, one after another, and none was ever batched."""
    model = ThreadRecorder()
    batcher = make(model, executor)
    await spaced(batcher, 0)  # the model's time is known now

    async def waiting(value: float) -> dict[str, np.ndarray]:
        time.sleep(QUIET_GAP_S * 2)  # the slow loop's own work for this call, before it reaches the batcher
        return await batcher.submit(req(value))

    count = 4 * PROBE_AFTER
    results = await asyncio.gather(*(waiting(v) for v in range(count)))
    assert [float(r["y"][0, 0]) for r in results] == [2.0 * v for v in range(count)]
    loop_runs = sum(t == threading.get_ident() for t in model.threads[1:])
    assert loop_runs <= PROBE_AFTER + 1, f"{loop_runs} of {count} waiting requests ran alone on the loop"
    assert max(model.calls[1:]) > 1, "once the probe saw them, the waiting requests were batched"
    assert Activity.signs > Activity.signs_at_probe
    await batcher.close()


async def test_a_client_alone_is_probed_ever_more_rarely(executor, quiet_process):
    model = ThreadRecorder()
    batcher = make(model, executor)
    await spaced(batcher, 0)
    for v in range(PROBE_AFTER + 1 + 2 * PROBE_AFTER + 1):
        await spaced(batcher, v)
    loop_thread = threading.get_ident()
    in_workers = [i for i, t in enumerate(model.threads[1:]) if t != loop_thread]
    assert in_workers == [PROBE_AFTER, 3 * PROBE_AFTER + 1], "after PROBE_AFTER lone runs, then twice as many"
    assert Activity.probe_after == 4 * PROBE_AFTER
    assert Activity.busy_until < time.monotonic(), "a probe that finds nobody waiting is no sign of load"
    await batcher.close()


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


class Recorder:
    """A BatchObserver that keeps what it is told: (items, waits, ok) per run."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int, bool]] = []

    def rejected(self, reason: str, count: int = 1) -> None:
        pass

    def batch_done(
        self, items: int, waits: list[float], collate_s: float, infer_s: float, split_s: float, ok: bool
    ) -> None:
        assert all(w >= 0 for w in waits) and infer_s >= 0
        self.runs.append((items, len(waits), ok))


async def test_a_lone_run_on_the_loop_is_observed_and_counted_like_any_run(executor, quiet_process):
    observer, lone = Recorder(), ThreadRecorder()
    lone.fail_when = lambda x: (x == 7).any()
    batcher = DynamicBatcher("m", FakeModel(), BatchPolicy(max_batch_size=8), executor, observer, run_inline=lone)
    await spaced(batcher, 1)  # the model's time is measured in a worker first
    assert float((await spaced(batcher, 2))["y"][0, 0]) == 4.0
    with pytest.raises(InferenceError, match="failed to run this request"):
        await spaced(batcher, 7)
    assert lone.threads == [threading.get_ident()] * 2, "both ran on the loop"
    assert observer.runs == [(1, 1, True), (1, 1, True), (1, 1, False)]
    assert batcher.executions == 3 and batcher.queue_depth == 0 and Activity.in_flight == 0
    await batcher.close()


async def test_a_lone_request_that_finds_every_run_slot_taken_waits_for_one_in_a_worker(executor, quiet_process):
    slots = RunSlots(1)
    model, lone = ThreadRecorder(), ThreadRecorder()
    batcher = DynamicBatcher("m", model, BatchPolicy(max_batch_size=8), executor, run_inline=lone, slots=slots)
    await spaced(batcher, 1)
    slots.acquire()  # a generation step holds the only slot
    waiting = asyncio.ensure_future(spaced(batcher, 2))
    await asyncio.sleep(0.1)
    assert not waiting.done(), "it waits for the slot, and not on the loop"
    slots.release()
    assert float((await waiting)["y"][0, 0]) == 4.0
    assert lone.threads == [] and len(model.threads) == 2 and threading.get_ident() not in model.threads
    assert Activity.in_flight == 0
    await batcher.close()
