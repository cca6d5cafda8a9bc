"""TextGenerator on the committed textgen_transformer (skipped while models/ does not have it): streaming, seeds under
load, stop, length, context, cancel and parameter limits."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from service.client import ClientError, TaskClient
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from tests.conftest import RunningServer
from tests.integration.tasks.calls import messages
from tests.integration.tasks.conftest import serve_committed
from tests.waiting import eventually


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
        others = [
            pool.submit(lambda i=i: client.generate(f"def f{i}(x):", max_new_tokens=16 + 8 * i, seed=i).text())
            for i in range(6)
        ]
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
