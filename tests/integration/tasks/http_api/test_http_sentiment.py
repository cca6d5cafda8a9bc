"""`POST /v1/sentiment` on the HTTP port: the gRPC SentimentAnalyzer's answers, and errors that say what is wrong."""

from __future__ import annotations

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.calls import post, request


def test_sentiment_equals_grpc(task_server: RunningServer, client: TaskClient) -> None:
    texts = ["a great film, loved it", "terrible and boring", "ok"]
    status, doc = post(task_server, "/v1/sentiment", {"texts": texts})
    assert status == 200, doc
    assert doc["model_name"] == "tiny_sentiment"
    expected = client.analyze(texts).results
    assert [s["label"] for s in doc["sentiments"]] == [r.label for r in expected]
    for got, want in zip(doc["sentiments"], expected, strict=True):
        assert got["probability"] == pytest.approx(want.probability, abs=1e-6)
        assert (got["tokens"], got["truncated"]) == (want.tokens, want.truncated)
        assert {s["label"]: s["probability"] for s in got["scores"]} == pytest.approx(want.scores, abs=1e-6)


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"texts": "one text"}, 400, "'texts' must be a list of strings"),
        ({"texts": [1, 2]}, 400, "'texts' must be a list of strings"),
        ({"texts": []}, 400, "no texts"),
        ({"text": ["x"]}, 400, "unknown field 'text'"),
        ([1], 400, "must be a JSON object"),
        ({"texts": ["x"], "model": "nope"}, 404, "nope"),
        ({"texts": ["x"], "model": "tiny_lm"}, 400, "serves the task text_generation"),
    ],
)
def test_sentiment_errors(task_server: RunningServer, doc: object, status: int, message: str) -> None:
    got, answer = post(task_server, "/v1/sentiment", doc)
    assert got == status and message in answer["error"], answer


def test_sentiment_body_must_be_json(task_server: RunningServer) -> None:
    assert request(task_server, "/v1/sentiment", b"{", "application/json")[1]["error"].startswith(
        "the request body is not"
    )
    status, doc = request(task_server, "/v1/sentiment", b'{"texts": ["hi"]}', "application/x-www-form-urlencoded")
    assert status == 200, doc  # curl -d's default Content-Type
