"""Task requests on the HTTP port that end early (the client goes away: 499; `timeout_ms`: 504), and their counts."""

from __future__ import annotations

import http.client
import json

import pytest

from tests.conftest import RunningServer
from tests.integration.tasks.calls import IMAGE, PROMPT, events, open_stream, post, request
from tests.waiting import eventually


def ended(task_server: RunningServer, code: str) -> float:
    """slow_lm's HTTP generations counted under `code`: 499, its client went away; 504, its timeout_ms passed."""
    labels = {"model": "slow_lm", "version": "1", "api": "http_generate", "code": code}
    return task_server.app.metrics.registry.get_sample_value("deepserve_requests_total", labels) or 0


def test_disconnecting_cancels_the_generation_and_frees_the_slot(task_server: RunningServer) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = ended(task_server, "499")
    conn, response = open_stream(
        task_server, {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm"}
    )
    stream = events(response)
    assert next(stream)[0] == "delta" and next(stream)[0] == "delta"
    assert scheduler.active == 1
    response.close()
    conn.close()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: ended(task_server, "499") == before + 1)


def test_disconnecting_cancels_a_generation_that_is_not_streamed(task_server: RunningServer) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = ended(task_server, "499")
    conn = http.client.HTTPConnection("127.0.0.1", task_server.app.http_port, timeout=30)
    doc = {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm"}
    conn.request("POST", "/v1/generate", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert eventually(lambda: scheduler.active == 1)
    conn.close()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: ended(task_server, "499") == before + 1)  # counted as the client closing, not as finished


def test_timeout_ms_ends_a_generation_with_504(task_server: RunningServer) -> None:
    scheduler = task_server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = ended(task_server, "504")
    doc = {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm", "timeout_ms": 300}
    status, answer = post(task_server, "/v1/generate", doc)
    assert status == 504 and "deadline" in answer["error"], answer
    conn, response = open_stream(task_server, doc)
    try:
        got = list(events(response))
    finally:
        conn.close()
    assert response.status == 200 and got[0][0] == "delta"  # the text generated in time, then the error
    assert got[-1] == ("error", {"error": got[-1][1]["error"], "status": 504}) and "deadline" in got[-1][1]["error"]
    assert {name for name, _ in got[:-1]} == {"delta"}
    assert eventually(lambda: scheduler.active == 0)
    assert ended(task_server, "504") == before + 2


def test_timeout_ms_leaves_requests_that_finish_in_time_alone(task_server: RunningServer) -> None:
    status, doc = request(task_server, "/v1/classify?timeout_ms=30000", IMAGE, "image/png")
    assert status == 200, doc
    assert post(task_server, "/v1/sentiment", {"texts": ["fine"], "timeout_ms": 30000})[0] == 200
    # greedy: unseeded sampling may draw tiny_lm's end-of-text trigger and end after 2 tokens (a CI run did)
    generate = {"prompt": PROMPT, "max_new_tokens": 3, "temperature": 0.0, "model": "tiny_lm", "timeout_ms": 30000}
    status, doc = post(task_server, "/v1/generate", generate)
    assert status == 200 and doc["generated_tokens"] == 3


@pytest.mark.parametrize(
    ("path", "doc", "message"),
    [
        ("/v1/classify?timeout_ms=0", None, "timeout_ms must be from 1 to"),
        ("/v1/classify?timeout_ms=soon", None, "timeout_ms must be a whole number"),
        ("/v1/sentiment", {"texts": ["x"], "timeout_ms": -5}, "'timeout_ms' must be a whole number"),
        ("/v1/sentiment", {"texts": ["x"], "timeout_ms": 1.5}, "'timeout_ms' must be a whole number"),
        ("/v1/generate", {"prompt": PROMPT, "timeout_ms": 0}, "timeout_ms must be from 1 to"),
        ("/v1/generate", {"prompt": PROMPT, "timeout_ms": 10**12}, "'timeout_ms' must be a whole number"),
    ],
)
def test_bad_timeout_ms_is_400(task_server: RunningServer, path: str, doc: dict | None, message: str) -> None:
    status, answer = request(task_server, path, IMAGE, "image/png") if doc is None else post(task_server, path, doc)
    assert status == 400 and message in answer["error"], answer


def test_task_requests_are_counted_in_the_metrics(task_server: RunningServer) -> None:
    registry = task_server.app.metrics.registry
    labels = {"model": "tiny_sentiment", "version": "1", "api": "http_sentiment", "code": "200"}
    before = registry.get_sample_value("deepserve_requests_total", labels) or 0
    assert post(task_server, "/v1/sentiment", {"texts": ["fine"]})[0] == 200
    assert registry.get_sample_value("deepserve_requests_total", labels) == before + 1
    unknown = {"model": "_unknown", "version": "", "api": "http_generate", "code": "404"}
    before = registry.get_sample_value("deepserve_requests_total", unknown) or 0
    assert post(task_server, "/v1/generate", {"prompt": "x", "model": "nope"})[0] == 404
    assert registry.get_sample_value("deepserve_requests_total", unknown) == before + 1
