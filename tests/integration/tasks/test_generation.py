"""TextGenerator over real gRPC: streaming, seeds, stop/length/eos/context, cancellation, deadlines, errors.

Runs on the tiny stand-in language models (a bigram table; `slow_lm` takes milliseconds per step), and on
the committed textgen_transformer when it is present.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from service import pipeline
from service.client import ClientError, GenerationStream, TaskClient
from service.config import Task
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc
from tests.conftest import RunningServer, start_server
from tests.integration.tasks.conftest import serve_committed
from tests.tiny_task_models import EOS_TRIGGER_TEXT, LM_CONTEXT, write_lm, write_quadrants
from tests.waiting import eventually

PROMPT = "The quick brown fox"


def messages(task_server: RunningServer, request: tg.GenerateRequest, timeout: float = 30) -> list[tg.GenerateResponse]:
    """The raw stream of response messages (to count them)."""
    with grpc.insecure_channel(task_server.address) as channel:
        return list(tg_grpc.TextGeneratorStub(channel).Generate(request, timeout=timeout))


def test_streams_several_deltas_then_one_final_message(task_server: RunningServer) -> None:
    request = tg.GenerateRequest(prompt=PROMPT, max_new_tokens=12, temperature=0.0, model_name="tiny_lm")
    stream = messages(task_server, request)
    kinds = [m.WhichOneof("event") for m in stream]
    assert kinds.count("delta") > 1 and kinds[-1] == "finished" and kinds.count("finished") == 1
    done = stream[-1].finished
    assert done.finish_reason == tg.FINISH_REASON_LENGTH and done.generated_tokens == 12
    assert done.prompt_tokens > 1  # bos + the prompt's tokens
    assert (done.model_name, done.model_version, done.prompt_truncated) == ("tiny_lm", "1", False)


def test_same_seed_same_text_alone_and_under_load(client: TaskClient) -> None:
    params = {"max_new_tokens": 40, "temperature": 0.9, "top_k": 50, "top_p": 0.95, "seed": 1234, "model": "tiny_lm"}
    alone = client.generate(PROMPT, **params).text()  # type: ignore[arg-type]
    with ThreadPoolExecutor(8) as pool:
        others = [
            pool.submit(
                lambda i=i: client.generate(f"Tokens {i}", max_new_tokens=30 + i, seed=i, model="tiny_lm").text()
            )
            for i in range(7)
        ]
        loaded = pool.submit(lambda: client.generate(PROMPT, **params).text())  # type: ignore[arg-type]
        assert loaded.result() == alone
        assert all(isinstance(o.result(), str) for o in others)
    different = client.generate(PROMPT, **{**params, "seed": 99}).text()  # type: ignore[arg-type]
    assert different != alone


def test_repetition_penalty_is_a_request_field(client: TaskClient) -> None:
    greedy = {"max_new_tokens": 30, "temperature": 0.0, "model": "tiny_lm"}
    plain = client.generate(PROMPT, **greedy).text()  # type: ignore[arg-type]
    assert client.generate(PROMPT, repetition_penalty=1.0, **greedy).text() == plain  # type: ignore[arg-type]
    assert client.generate(PROMPT, repetition_penalty=10.0, **greedy).text() != plain  # type: ignore[arg-type]


def test_stop_sequence_ends_with_stop_and_is_not_returned(client: TaskClient) -> None:
    greedy = {"temperature": 0.0, "model": "tiny_lm"}
    full = client.generate(PROMPT, max_new_tokens=30, **greedy).text()  # type: ignore[arg-type]
    printable = [m.start() for m in re.finditer(r"[A-Za-z]{2}", full) if m.start() > 3]
    assert printable, f"no stop candidate in {full!r}"
    stop = full[printable[0] : printable[0] + 2]
    stream = client.generate(PROMPT, max_new_tokens=30, stop=[stop], **greedy)  # type: ignore[arg-type]
    text = stream.text()
    assert text == full[: full.index(stop)]
    assert stream.summary is not None and stream.summary.finish_reason == "stop"


def test_max_new_tokens_ends_with_length(client: TaskClient) -> None:
    stream = client.generate(PROMPT, max_new_tokens=5, temperature=0.0, model="tiny_lm")
    stream.text()
    assert stream.summary is not None
    assert (stream.summary.finish_reason, stream.summary.generated_tokens) == ("length", 5)


def test_end_of_text_token_ends_with_eos(client: TaskClient) -> None:
    stream = client.generate(EOS_TRIGGER_TEXT, max_new_tokens=20, temperature=0.0, model="tiny_lm")
    assert stream.text() == ""
    assert stream.summary is not None
    assert (stream.summary.finish_reason, stream.summary.generated_tokens) == ("eos", 1)


def test_long_prompt_keeps_its_last_tokens_and_context_fills(client: TaskClient) -> None:
    stream = client.generate("The quick brown fox jumps over the lazy dog. " * 20, max_new_tokens=10, model="tiny_lm")
    stream.text()
    s = stream.summary
    assert s is not None and s.prompt_truncated
    assert (s.prompt_tokens, s.generated_tokens, s.finish_reason) == (LM_CONTEXT - 1, 1, "context")


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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": ""}, "the prompt is empty"),
        ({"temperature": -1.0}, "temperature must be between 0 and 10"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"repetition_penalty": 0.5}, "repetition_penalty must be between 1"),
        ({"top_k": 10**6}, "top_k must be between 0"),
        ({"max_new_tokens": 5000}, "max_new_tokens must be between 1 and 2048"),
        ({"stop": ["."] * 9}, "at most 8 stop sequences"),
        ({"model_name": "quadrants"}, "serves the task image_classification"),
    ],
)
def test_bad_requests_are_invalid_argument(task_server: RunningServer, fields: dict, message: str) -> None:
    request = tg.GenerateRequest(**{"prompt": PROMPT, "model_name": "tiny_lm", **fields})
    with pytest.raises(grpc.RpcError) as caught:
        messages(task_server, request)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert re.search(message, caught.value.details())  # type: ignore[attr-defined]


def test_invalid_utf8_prompt_is_invalid_argument(task_server: RunningServer) -> None:
    with grpc.insecure_channel(task_server.address) as channel:
        call = channel.unary_stream("/deepserve.v1.TextGenerator/Generate")
        with pytest.raises(grpc.RpcError) as caught:
            list(call(b"\x0a\x03a\x80b", timeout=10))  # GenerateRequest.prompt = b"a\x80b"
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert caught.value.details().startswith("prompt is not valid UTF-8 (byte 0x80 at offset 1)")  # type: ignore[attr-defined]


def test_generation_metrics(task_server: RunningServer, client: TaskClient) -> None:
    registry = task_server.app.metrics.registry
    labels = {"model": "tiny_lm", "version": "1"}
    tokens = registry.get_sample_value("deepserve_generation_tokens_total", labels) or 0
    ttft = registry.get_sample_value("deepserve_generation_time_to_first_token_seconds_count", labels) or 0
    client.generate(PROMPT, max_new_tokens=7, temperature=0.0, model="tiny_lm").text()
    assert registry.get_sample_value("deepserve_generation_tokens_total", labels) == tokens + 7
    assert registry.get_sample_value("deepserve_generation_time_to_first_token_seconds_count", labels) == ttft + 1
    assert registry.get_sample_value("deepserve_generation_inter_token_latency_seconds_count", labels)


def test_generation_metrics_only_for_generation_models(task_server: RunningServer) -> None:
    """Scraped over HTTP: every loaded model has its serving metrics; only text_generation models have the
    generation ones (no series of zeros for the others)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{task_server.app.metrics_port}/metrics", timeout=5) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    models = lambda prefix: {  # noqa: E731
        s.labels["model"] for f in families if f.name.startswith(prefix) for s in f.samples if "model" in s.labels
    }
    assert models("deepserve_queue_capacity") == {"quadrants", "tiny_sentiment", "tiny_lm", "slow_lm"}
    assert models("deepserve_generation_") == {"tiny_lm", "slow_lm"}
    for family in ("tokens", "active_sequences", "waiting_sequences", "time_to_first_token_seconds"):
        assert models(f"deepserve_generation_{family}") == {"tiny_lm", "slow_lm"}, family


def test_health_and_reflection_list_the_task_services(task_server: RunningServer) -> None:
    with grpc.insecure_channel(task_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("deepserve.v1.TextGenerator", "deepserve.v1.ImageClassifier", "deepserve.v1.SentimentAnalyzer"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, service
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
    assert {"deepserve.v1.TextGenerator", "deepserve.v1.ImageClassifier", "deepserve.v1.SentimentAnalyzer"} <= names


def test_task_services_are_not_serving_without_their_models(tmp_path: Path) -> None:
    running = start_server(write_quadrants(tmp_path).parent)
    try:
        with grpc.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = lambda name: health.Check(health_pb2.HealthCheckRequest(service=name)).status  # noqa: E731
            assert check("deepserve.v1.ImageClassifier") == health_pb2.HealthCheckResponse.SERVING
            assert check("deepserve.v1.TextGenerator") == health_pb2.HealthCheckResponse.NOT_SERVING
        with TaskClient(running.address) as client, pytest.raises(ClientError) as caught:
            client.generate(PROMPT).text()
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert "no loaded model serves the task 'text_generation'" in caught.value.message
    finally:
        running.stop()


# ---- the committed transformer ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_server() -> Iterator[RunningServer]:
    yield from serve_committed("textgen_transformer")


def test_transformer_streams_and_reproduces_its_seed_under_load(lm_server: RunningServer) -> None:
    request = tg.GenerateRequest(
        prompt="The return statement", max_new_tokens=24, seed=7, model_name="textgen_transformer"
    )
    stream = messages(lm_server, request, timeout=120)
    assert sum(1 for m in stream if m.HasField("delta")) > 1 and stream[-1].HasField("finished")
    alone = "".join(m.delta.text for m in stream if m.HasField("delta"))
    with TaskClient(lm_server.address, timeout=120) as client, ThreadPoolExecutor(8) as pool:
        others = [pool.submit(lambda i=i: client.generate(f"def f{i}(x):", max_new_tokens=16 + 8 * i, seed=i).text())
                  for i in range(6)]  # fmt: skip
        again = pool.submit(
            lambda: client.generate(
                "The return statement", max_new_tokens=24, seed=7, model="textgen_transformer"
            ).text()
        )
        assert again.result() == alone
        assert all(isinstance(o.result(), str) for o in others)


def test_transformer_stop_and_length(lm_server: RunningServer) -> None:
    with TaskClient(lm_server.address, timeout=120) as client:
        full = client.generate("The for statement", max_new_tokens=40, temperature=0.0).text()
        words = [m.start() for m in re.finditer(r"\w\w", full) if m.start() > 2]
        assert words, full
        stop = full[words[0] : words[0] + 2]
        stream = client.generate("The for statement", max_new_tokens=40, temperature=0.0, stop=[stop])
        assert stream.text() == full[: full.index(stop)]
        assert stream.summary is not None and stream.summary.finish_reason == "stop"
        short = client.generate("The for statement", max_new_tokens=3, temperature=0.0)
        assert full.startswith(short.text())
        assert short.summary is not None
        assert (short.summary.finish_reason, short.summary.generated_tokens) == ("length", 3)


def test_transformer_long_prompt_is_truncated_and_fills_the_context(lm_server: RunningServer) -> None:
    prompt = "The while statement is used for repeated execution as long as an expression is true. " * 16
    with TaskClient(lm_server.address, timeout=120) as client:
        stream = client.generate(prompt, max_new_tokens=50, temperature=0.0)
        stream.text()
    s = stream.summary
    assert s is not None and s.prompt_truncated
    assert (s.prompt_tokens, s.generated_tokens, s.finish_reason) == (255, 1, "context")


def test_transformer_cancel_frees_the_slot(lm_server: RunningServer) -> None:
    scheduler = lm_server.app.tasks.scheduler("textgen_transformer")
    assert scheduler is not None
    with TaskClient(lm_server.address, timeout=120) as client:
        stream = client.generate("The while statement", max_new_tokens=120, temperature=0.0)
        pieces = iter(stream)
        next(pieces)
        stream.cancel()
        with pytest.raises(ClientError) as caught:
            list(pieces)
        assert caught.value.code is grpc.StatusCode.CANCELLED  # it was stopped mid-stream
        assert eventually(lambda: scheduler.active == 0)
        gauge = {"model": "textgen_transformer", "version": "1"}
        registry = lm_server.app.metrics.registry
        assert eventually(lambda: registry.get_sample_value("deepserve_generation_active_sequences", gauge) == 0)
        steps = scheduler.steps
        time.sleep(0.3)
        assert scheduler.steps == steps
        assert stream.summary is None


def test_transformer_refuses_bad_parameters(lm_server: RunningServer) -> None:
    with TaskClient(lm_server.address, timeout=120) as client:
        for kwargs, message in [
            ({"max_new_tokens": 513}, "max_new_tokens must be between 1 and 512"),
            ({"top_k": 5000}, r"top_k must be between 0 \(no limit\) and 4096"),
            ({"temperature": 11.0}, "temperature must be between 0 and 10"),
        ]:
            with pytest.raises(ClientError, match=message) as caught:
                client.generate("Hello", **kwargs).text()  # type: ignore[arg-type]
            assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


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
