"""`POST /v1/generate` on the HTTP port: the gRPC TextGenerator's text, whole or as Server-Sent Events, and errors."""

from __future__ import annotations

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.calls import PROMPT, events, open_stream, post


def test_generate_whole_text_equals_grpc(task_server: RunningServer, client: TaskClient) -> None:
    params = {"max_new_tokens": 20, "temperature": 0.9, "top_k": 50, "top_p": 0.95, "seed": 7, "model": "tiny_lm"}
    status, doc = post(task_server, "/v1/generate", {"prompt": PROMPT, **params})
    assert status == 200, doc
    stream = client.generate(PROMPT, **params)  # type: ignore[arg-type]
    assert doc["text"] == stream.text()
    s = stream.summary
    assert s is not None
    assert (doc["finish_reason"], doc["prompt_tokens"], doc["generated_tokens"], doc["prompt_truncated"]) == (
        s.finish_reason,
        s.prompt_tokens,
        s.generated_tokens,
        s.prompt_truncated,
    )
    assert (doc["model_name"], doc["model_version"], doc["finish_reason"]) == ("tiny_lm", "1", "length")


def test_generate_stream_is_events_then_finished(task_server: RunningServer, client: TaskClient) -> None:
    doc = {"prompt": PROMPT, "max_new_tokens": 12, "temperature": 0.0, "model": "tiny_lm", "stop": []}
    conn, response = open_stream(task_server, doc)
    try:
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        got = list(events(response))
    finally:
        conn.close()
    names = [name for name, _ in got]
    assert names.count("delta") > 1 and names[-1] == "finished" and names.count("finished") == 1
    finished = got[-1][1]
    assert finished["finish_reason"] == "length" and finished["generated_tokens"] == 12
    assert finished["prompt_tokens"] > 1 and finished["model_name"] == "tiny_lm"
    text = "".join(data["text"] for name, data in got if name == "delta")
    assert text == client.generate(PROMPT, max_new_tokens=12, temperature=0.0, model="tiny_lm").text()


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"prompt": PROMPT, "max_new_tokens": -1}, 400, "'max_new_tokens' must be a whole number"),
        ({"prompt": PROMPT, "max_new_tokens": 10**6, "model": "tiny_lm"}, 400, "max_new_tokens must be between"),
        ({"prompt": PROMPT, "temperature": "hot"}, 400, "'temperature' must be a number"),
        ({"prompt": PROMPT, "top_p": 1.5, "model": "tiny_lm"}, 400, "top_p"),
        ({"prompt": PROMPT, "repetition_penalty": 0.5, "model": "tiny_lm"}, 400, "repetition_penalty"),
        ({"prompt": PROMPT, "stop": [1]}, 400, "'stop' must be a string or a list of strings"),
        ({"prompt": PROMPT, "stream": "yes"}, 400, "'stream' must be true or false"),
        ({"prompt": 5}, 400, "'prompt' must be a string"),
        ({"prompt": PROMPT, "max_tokens": 5}, 400, "unknown field 'max_tokens'"),
        ({"prompt": PROMPT, "model": "nope"}, 404, "nope"),
        ({"prompt": PROMPT, "model": "nope", "stream": True}, 404, "nope"),
        ({"prompt": PROMPT, "model": "quadrants"}, 400, "serves the task image_classification"),
    ],
)
def test_generate_errors(task_server: RunningServer, doc: dict, status: int, message: str) -> None:
    got, answer = post(task_server, "/v1/generate", doc)
    assert got == status and message in answer["error"], answer
