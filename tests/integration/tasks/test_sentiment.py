"""SentimentAnalyzer over real gRPC: the tiny stand-in model, and the committed sentiment_rnn when present."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from service.client import ClientError, TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.conftest import serve_committed

ANALYZE = "/deepserve.v1.SentimentAnalyzer/Analyze"


def test_labels_and_every_class_probability(client: TaskClient) -> None:
    texts = ["I love it, a wonderful film", "awful and terrible, I hate it", "the train is late"]
    result = client.analyze(texts)
    assert result.model == "tiny_sentiment"
    assert [r.label for r in result.results] == ["positive", "negative", "neutral"]
    for r in result.results:
        assert list(r.scores) == ["negative", "neutral", "positive"]
        assert sum(r.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert r.probability == max(r.scores.values()) and not r.truncated


def test_long_text_is_truncated_and_says_so(client: TaskClient) -> None:
    long = "the report has ten pages about the river " * 5 + "I love it"
    result = client.analyze([long, "love"]).results
    assert result[0].truncated and result[0].tokens == 16
    assert result[0].label == "neutral"  # "love" came after the first 16 tokens
    assert not result[1].truncated and result[1].tokens == 1


def test_texts_of_different_lengths_share_batches(task_server: RunningServer, client: TaskClient) -> None:
    stats = task_server.app.registry.get("tiny_sentiment").observer.stats
    before = stats.execution_count
    texts = ["love"] + ["the river and the train " * (i % 4 + 1) for i in range(30)]
    result = client.analyze(texts)
    assert result.results[0].label == "positive"
    assert stats.execution_count - before < len(texts)


def _raw_analyze(address: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(ANALYZE)
        with pytest.raises(grpc.RpcError) as caught:
            call(payload, timeout=10)
    return caught.value


def test_invalid_utf8_is_invalid_argument_naming_the_text(task_server: RunningServer) -> None:
    # AnalyzeRequest.texts (field 1, length-delimited): "ok", then b"caf\xe9" (Latin-1, not UTF-8)
    payload = b"\x0a\x02ok" + b"\x0a\x04caf\xe9"
    err = _raw_analyze(task_server.address, payload)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert err.details() == (  # type: ignore[attr-defined]
        "texts[1] is not valid UTF-8 (byte 0xe9 at offset 3); send text encoded as UTF-8"
    )


def test_garbage_request_is_invalid_argument(task_server: RunningServer) -> None:
    err = _raw_analyze(task_server.address, b"\xff\xff\xff")
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "not a valid deepserve.v1.AnalyzeRequest" in err.details()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("texts", "message"),
    [([], "the request has no texts"), (["fine", ""], r"texts\[1\] is empty"), (["   "], "only whitespace")],
)
def test_empty_input_is_invalid_argument(client: TaskClient, texts: list[str], message: str) -> None:
    with pytest.raises(ClientError, match=message) as caught:
        client.analyze(texts)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_wrong_task_model_is_invalid_argument(client: TaskClient) -> None:
    with pytest.raises(ClientError, match="serves the task image_classification") as caught:
        client.analyze(["hello"], model="quadrants")
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


# ---- the committed sentiment model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def rnn_server() -> Iterator[RunningServer]:
    yield from serve_committed("sentiment_rnn")


POSITIVE = [
    "I love this, it is wonderful and amazing!",
    "What a great day, I am so happy :)",
    "This movie was excellent, best I've seen",
    "Thank you so much, you made my day!",
]
NEGATIVE = [
    "I hate this, it is awful and terrible.",
    "Worst service ever, I am so angry and sad",
    "This is the worst film I have ever seen.",
    "I am so disappointed and upset.",
]


def test_obvious_sentences_get_the_right_label(rnn_server: RunningServer) -> None:
    with TaskClient(rnn_server.address) as client:
        result = client.analyze(POSITIVE + NEGATIVE, model="sentiment_rnn")
    labels = [r.label for r in result.results]
    assert labels == ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE), result.results


def test_rnn_truncates_long_texts_to_its_max_length(rnn_server: RunningServer) -> None:
    with TaskClient(rnn_server.address) as client:
        result = client.analyze(["I love it! " * 40, "I love it!"], model="sentiment_rnn").results
    assert result[0].truncated and result[0].tokens == 64
    assert not result[1].truncated and result[1].label == result[0].label == "positive"


def test_rnn_refuses_invalid_utf8(rnn_server: RunningServer) -> None:
    err = _raw_analyze(rnn_server.address, b"\x0a\x02\xc3\x28")
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "texts[0] is not valid UTF-8" in err.details()  # type: ignore[attr-defined]
