"""Generations that end before their text does: cancelled, the client gone, a deadline, a full queue, the model
unloaded; each frees its slot and is counted once."""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service import pipeline
from service.client import ClientError, GenerationStream, TaskClient
from service.config import Task
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc
from tests.conftest import RunningServer, start_server
from tests.integration.tasks.calls import PROMPT
from tests.tiny_task_models import write_lm
from tests.waiting import eventually


def test_cancelling_frees_the_slot_and_stops_computing(task_server: RunningServer, client: TaskClient) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    gauge = {"model": "slow_lm", "version": "1"}
    registry = task_server.app.metrics.registry
    stream = client.generate(PROMPT, max_new_tokens=2000, temperature=0.0, model="slow_lm")
    pieces = iter(stream)
    next(pieces), next(pieces)
    assert registry.get_sample_value("deepserve_generation_active_sequences", gauge) == 1
    steps_at_cancel = scheduler.steps
    stream.cancel()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: registry.get_sample_value("deepserve_generation_active_sequences", gauge) == 0)
    steps = scheduler.steps
    time.sleep(0.3)
    assert scheduler.steps == steps  # nothing is computed for it any more
    assert steps - steps_at_cancel < 100  # a few steps while the cancellation travels, not the 2000 asked for
    with pytest.raises(ClientError) as caught:
        list(pieces)
    assert caught.value.code is grpc.StatusCode.CANCELLED


def test_client_going_away_frees_the_slot(task_server: RunningServer) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    channel = grpc.insecure_channel(task_server.address)
    call = tg_grpc.TextGeneratorStub(channel).Generate(
        tg.GenerateRequest(prompt=PROMPT, max_new_tokens=2000, temperature=0.0, model_name="slow_lm")
    )
    next(call)
    assert scheduler.active == 1
    channel.close()  # the connection goes away without a cancel from the application
    assert eventually(lambda: scheduler.active == 0)


def test_every_cancelled_stream_is_counted_once_as_cancelled(task_server: RunningServer, client: TaskClient) -> None:
    """Wherever the server is when the client cancels (computing the next token, or writing the last one,
    its handler then suspended at a `yield`), the call is counted once, as CANCELLED, and leaves nothing
    in flight."""
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    registry = task_server.app.metrics.registry
    labels = {"model": "slow_lm", "version": "1", "api": "generate"}

    def counted(code: str) -> float:
        return registry.get_sample_value("deepserve_requests_total", {**labels, "code": code}) or 0

    before = {code: counted(code) for code in ("OK", "CANCELLED")}
    cancelled = 40
    for i in range(cancelled):
        stream = client.generate(PROMPT, max_new_tokens=2000, temperature=0.0, model="slow_lm")
        pieces = iter(stream)
        for _ in range(1 + i % 3):
            next(pieces)
        stream.cancel()
    gauge = {"model": "slow_lm", "version": "1"}
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: registry.get_sample_value("deepserve_inflight_requests", gauge) == 0)
    assert eventually(lambda: counted("CANCELLED") == before["CANCELLED"] + cancelled), {
        code: counted(code) - before[code] for code in before
    }
    assert counted("OK") == before["OK"]


@pytest.mark.parametrize("named", [True, False], ids=["named", "default_model"])
def test_deadline_ends_the_stream_with_deadline_exceeded(task_server: RunningServer, named: bool) -> None:
    """Counted under its model (named, or the task's default: slow_lm comes first by name), never `_unknown`."""
    assert task_server.app.tasks.choose(Task.TEXT_GENERATION).name == "slow_lm"
    registry = task_server.app.metrics.registry
    labels = {"model": "slow_lm", "version": "1", "api": "generate", "code": "DEADLINE_EXCEEDED"}
    unknown = {**labels, "model": "_unknown", "version": ""}
    before = registry.get_sample_value("deepserve_requests_total", labels) or 0
    with TaskClient(task_server.address, timeout=0.5) as client:
        stream = client.generate(PROMPT, max_new_tokens=2000, temperature=0.0, model="slow_lm" if named else "")
        received: list[str] = []
        with pytest.raises(ClientError) as caught:
            for text in stream:
                received.append(text)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert received  # the text streamed before the deadline arrived
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None and eventually(lambda: scheduler.active == 0)
    # counted as the client saw it, whether gRPC's deadline or the scheduler's ended the stream
    assert eventually(lambda: registry.get_sample_value("deepserve_requests_total", labels) == before + 1)
    assert registry.get_sample_value("deepserve_requests_total", unknown) is None


def test_too_many_waiting_requests_get_queue_full(task_server: RunningServer) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    capacity = scheduler.config.max_active_sequences + scheduler.config.max_waiting

    def drain(stream: GenerationStream) -> None:
        with contextlib.suppress(ClientError):
            for _ in stream:
                pass

    with TaskClient(task_server.address) as client, ThreadPoolExecutor(capacity) as readers:
        held = [client.generate(PROMPT, max_new_tokens=2000, temperature=0.0, model="slow_lm") for _ in range(capacity)]
        for stream in held:
            readers.submit(drain, stream)  # read as a real client would (HTTP/2 flow control)
        try:
            assert eventually(lambda: scheduler.active + scheduler.waiting == capacity, 20), (
                scheduler.active,
                scheduler.waiting,
            )
            for _ in range(2):
                with pytest.raises(ClientError, match="queue full") as caught:
                    client.generate(PROMPT, max_new_tokens=5, model="slow_lm").text()
                assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        finally:
            for stream in held:
                stream.cancel()
    assert eventually(lambda: scheduler.active == 0 and scheduler.waiting == 0)


def test_unloading_the_model_ends_its_streams_and_its_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "DRAIN_SECONDS", 0.2)
    running = start_server(write_lm(tmp_path, "slow_lm", context=1024, slow_repeats=24).parent)
    try:
        with TaskClient(running.address) as client, grpc.insecure_channel(running.address) as channel:
            stream = client.generate(PROMPT, max_new_tokens=2000, temperature=0.0)
            pieces = iter(stream)
            next(pieces)
            running.call(running.app.registry.unload("slow_lm"))
            with pytest.raises(ClientError, match="was unloaded before the generation ended") as caught:
                list(pieces)
            assert caught.value.code is grpc.StatusCode.UNAVAILABLE
            with pytest.raises(ClientError) as caught:
                client.generate(PROMPT).text()
            assert caught.value.code is grpc.StatusCode.NOT_FOUND
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="deepserve.v1.TextGenerator")
            assert eventually(lambda: health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING)
            running.call(running.app.registry.load("slow_lm"))
            reloaded = client.generate(PROMPT, max_new_tokens=3)
            reloaded.text()
            assert reloaded.summary is not None and reloaded.summary.generated_tokens >= 1, "serves again once loaded"
    finally:
        running.stop()
