"""Process lanes (`generation.engine: process`, service/batching/engine_process.py): each lane's steps in a child
process of its own. The same texts as a thread lane, and the same answers to cancellation, deadlines, failures, a
child that dies, and closing."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from pathlib import Path

import pytest

from service.batching.decoders import RecomputeDecoder
from service.batching.engine_process import EngineProcess
from service.batching.scheduler import GenerationScheduler, SchedulerConfig
from service.batching.sequences import FinishReason
from service.batching.slots import RunSlots
from service.errors import DeadlineExceededError, InferenceError, ModelLoadError
from service.handlers import process_lanes
from service.runtime import CPU, CUDA
from service.types import SamplingParams
from tests.unit import process_decoders
from tests.unit.scheduler_helpers import Recorder, collect, submit
from tests.waiting import eventually


def engine(factory: object) -> EngineProcess:
    return EngineProcess("model 'test:1' lane 0", factory)  # type: ignore[arg-type]


def scheduler_on(*engines: object, **config: object) -> GenerationScheduler:
    settings = {"context_length": 64, "max_active_sequences": 4, "max_waiting": 8, **config}
    scheduler = GenerationScheduler("test:1", list(engines), SchedulerConfig(**settings))  # type: ignore[arg-type]
    scheduler.start()
    return scheduler


@pytest.mark.parametrize(
    ("engine", "provider", "expected"),
    [
        ("thread", CPU, False),
        ("thread", CUDA, False),
        ("process", CPU, True),
        ("process", CUDA, True),
        ("auto", CPU, True),  # off the server's GIL: 1.10-1.40x the tokens/s of 16 gRPC streams on two cores
        ("auto", CUDA, False),  # no gain measured on a GPU, and a child costs a CUDA context (docs/gpu.md)
    ],
)
def test_generation_engine_chooses_process_lanes(engine: str, provider: str, expected: bool) -> None:
    assert process_lanes(engine, provider) is expected


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"


WORKLOAD = [
    ([1, 2], 30, SamplingParams(temperature=1.0, top_k=10, top_p=0.9, seed=1234, repetition_penalty=1.3)),
    ([3], 7, SamplingParams(temperature=0.7, seed=5)),
    ([4, 5, 6], 20, SamplingParams(temperature=0.0, repetition_penalty=2.0)),
    ([7], 12, SamplingParams(top_p=0.5, seed=9)),
    ([8, 9], 25, SamplingParams(temperature=1.3, top_k=3, seed=11)),
    ([2], 5, SamplingParams(seed=0)),
]


async def run_workload(scheduler: GenerationScheduler) -> list[tuple[str, FinishReason, int]]:
    streams = [submit(scheduler, prompt, n, sampling=s) for prompt, n, s in WORKLOAD]
    done = await asyncio.gather(*(collect(s) for s in streams))
    return [(text, finished.reason, finished.generated_tokens) for text, finished in done]


async def test_the_same_texts_as_a_thread_lane_with_requests_joining_and_leaving() -> None:
    """Six seeded requests, four slots (two wait), sampling with top-k, top-p, penalties and greedy rows, an
    end-of-text token and a context that cuts the longest: token for token what a thread lane generates."""
    config = {"eos_id": 25, "context_length": 24}
    threaded = scheduler_on(RecomputeDecoder(Recorder(table=process_decoders.table())), **config)
    expected = await run_workload(threaded)
    await threaded.close()
    child = engine(process_decoders.sampled)
    remote = scheduler_on(child, **config)
    got = await run_workload(remote)
    await remote.close()
    assert got == expected
    assert {reason for _, reason, _ in got} >= {FinishReason.LENGTH, FinishReason.CONTEXT}
    assert remote.steps > 0


async def test_two_process_lanes_share_the_slots() -> None:
    lanes = [engine(process_decoders.sampled) for _ in range(2)]
    scheduler = scheduler_on(*lanes, eos_id=25, context_length=24)
    got = await run_workload(scheduler)
    threaded = scheduler_on(RecomputeDecoder(Recorder(table=process_decoders.table())), eos_id=25, context_length=24)
    assert got == await run_workload(threaded)
    await threaded.close()
    assert all(lane.steps > 0 for lane in scheduler._lanes)
    await scheduler.close()


async def test_cancel_frees_the_slot_and_the_child_drops_the_sequence() -> None:
    scheduler = scheduler_on(engine(functools.partial(process_decoders.letters, 0.01)), max_active_sequences=1)
    stream = submit(scheduler, [0], 1000)
    waiting = submit(scheduler, [5], 3)
    await anext(stream)
    await anext(stream)
    stream.cancel()
    text, done = await collect(waiting)  # the freed slot goes to the waiting request
    assert (text, done.reason) == ("ghi", FinishReason.LENGTH)
    assert stream.sequence.finish_reason is FinishReason.CANCELLED
    assert stream.sequence.generated < 20  # it stopped being computed (a step takes 10 ms)
    await asyncio.sleep(0.1)
    assert scheduler.active == 0 and scheduler._lanes[0].running == []
    await scheduler.close()


async def test_deadline_ends_a_running_request() -> None:
    scheduler = scheduler_on(engine(functools.partial(process_decoders.letters, 0.01)))
    stream = submit(scheduler, [0], 1000, deadline=time.monotonic() + 0.2)
    with pytest.raises(DeadlineExceededError, match="deadline passed after"):
        await collect(stream)
    text, _ = await collect(submit(scheduler, [0], 3))
    assert text == "bcd"
    await scheduler.close()


async def test_a_step_that_fails_in_the_child_fails_its_batch_and_the_lane_goes_on(tmp_path: Path) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    scheduler = scheduler_on(engine(functools.partial(process_decoders.failing_once, str(marker))))
    with pytest.raises(InferenceError, match="failed during generation; the error was logged"):
        await collect(submit(scheduler, [0], 3))
    text, _ = await collect(submit(scheduler, [0], 3))
    assert text == "bcd"
    await scheduler.close()


async def test_a_child_that_dies_fails_its_requests_and_a_new_child_serves_the_next() -> None:
    child = engine(functools.partial(process_decoders.letters, 0.01))
    scheduler = scheduler_on(child)
    stream = submit(scheduler, [0], 1000)
    await anext(stream)
    first = child.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    with pytest.raises(InferenceError, match="failed during generation"):
        await collect(stream)
    text, done = await collect(submit(scheduler, [0], 3))
    assert (text, done.reason) == ("bcd", FinishReason.LENGTH)
    assert child.pid not in (None, first)
    await scheduler.close()


async def test_close_ends_the_child_and_fails_what_is_unfinished() -> None:
    child = engine(functools.partial(process_decoders.letters, 0.01))
    scheduler = scheduler_on(child)
    pid = child.pid
    assert pid is not None and alive(pid)
    stream = submit(scheduler, [0], 1000)
    await anext(stream)
    await scheduler.close(timeout=0.05)
    with pytest.raises(Exception, match="unloaded before the generation ended"):
        await collect(stream)
    assert not alive(pid) and child.pid is None


def test_a_child_that_cannot_build_its_decoder_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="could not load the step model: FileNotFoundError: no step model at x"):
        engine(functools.partial(process_decoders.broken, "/nowhere/x"))


async def served_once() -> tuple[EngineProcess, GenerationScheduler, int]:
    """A process lane that has served one request and is idle, and its child's pid."""
    child = engine(process_decoders.letters)
    scheduler = scheduler_on(child)
    await collect(submit(scheduler, [0], 3))
    assert child.pid is not None
    return child, scheduler, child.pid


async def test_an_idle_lane_waits_without_spinning() -> None:
    """With nothing to run, neither the lane's thread nor its child uses the CPU."""
    _, scheduler, pid = await served_once()

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu()
    await asyncio.sleep(0.5)
    assert cpu() - before < 0.05
    assert eventually(lambda: scheduler.active == 0, 2)
    await scheduler.close()


async def test_a_child_that_died_while_idle_is_replaced_before_the_next_request() -> None:
    child, scheduler, first = await served_once()
    os.kill(first, signal.SIGKILL)
    assert eventually(lambda: not alive(first), 5)
    text, done = await collect(submit(scheduler, [0], 3))  # no request pays for the death it did not see
    assert (text, done.reason) == ("bcd", FinishReason.LENGTH)
    assert child.pid not in (None, first)
    await scheduler.close()


async def test_requests_without_a_token_yet_move_to_the_next_child_once(tmp_path: Path) -> None:
    """The child dies at their first step: they have nothing to lose, and the next child generates their text.
    A child that keeps dying fails them (no endless retries)."""
    marker = tmp_path / "die"
    marker.touch()
    child = engine(functools.partial(process_decoders.dying_once, str(marker)))
    scheduler = scheduler_on(child)
    first = child.pid
    texts = await asyncio.gather(*(collect(submit(scheduler, [i], 3)) for i in range(3)))
    assert [text for text, _ in texts] == ["bcd", "cde", "def"]
    assert not marker.exists() and child.pid not in (None, first)
    await scheduler.close()

    always = engine(functools.partial(process_decoders.dying_always, str(tmp_path / "count")))
    scheduler = scheduler_on(always)
    with pytest.raises(InferenceError, match="failed during generation"):
        await collect(submit(scheduler, [0], 3))
    assert (tmp_path / "count").read_text() == "xx"  # the first child and one more
    await scheduler.close()


async def test_a_process_lane_holds_a_run_slot_while_its_child_generates() -> None:
    """`--workers`: the child's steps are model runs, so the lane holds one slot while it has sequences."""
    slots = RunSlots(2)
    child = engine(functools.partial(process_decoders.letters, 0.01))
    scheduler = GenerationScheduler("test:1", [child], SchedulerConfig(64, 4, 8), slots=slots)
    scheduler.start()
    stream = submit(scheduler, [0], 1000)
    await anext(stream)
    assert slots.free == 1
    stream.cancel()
    assert eventually(lambda: slots.free == 2, 5)
    await scheduler.close()
