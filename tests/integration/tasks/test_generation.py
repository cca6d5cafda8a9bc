"""TextGenerator over real gRPC on the tiny stand-in language models: streaming, seeds, what ends a generation
(stop, length, eos, context), and the requests it refuses."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from service.client import TaskClient
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from tests.conftest import RunningServer
from tests.integration.tasks.calls import PROMPT, messages
from tests.tiny_task_models import EOS_TRIGGER_TEXT, LM_CONTEXT


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
