"""The task endpoints on the HTTP port (`/v1/classify`, `/v1/sentiment`, `/v1/generate`) against a real server on the
tiny task models: the same answers as the gRPC task services for the same inputs, 400s that say what is wrong, 404
for unknown models, Server-Sent Events parsed event by event, a client that goes away freeing its generation slot,
and a token's in-flight count held for as long as its stream runs."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer, start_server
from tests.http_tokens import OPS, TOKEN, tokens_file
from tests.integration.tasks.test_image import ink_box
from tests.ports import free_port
from tests.tiny_task_models import make_task_repository
from tests.waiting import eventually

PROMPT = "The quick brown fox"
IMAGE = ink_box((20, 20, 80, 80))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_task_repository(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    running = start_server(repo, http_port=free_port(), max_message_bytes=256 * 1024)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[TaskClient]:
    with TaskClient(server.address, timeout=60) as c:
        yield c


def request(
    server: RunningServer, path: str, body: bytes, content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def post(server: RunningServer, path: str, doc: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return request(server, path, json.dumps(doc).encode(), headers=headers)


def multipart(images: list[bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in (fields or {}).items()
    ]
    for i, image in enumerate(images):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{i}.png"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode()
            + image
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def open_stream(server: RunningServer, doc: dict, headers: dict[str, str] | None = None) -> tuple[
    http.client.HTTPConnection, http.client.HTTPResponse
]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    conn.request("POST", "/v1/generate", json.dumps({**doc, "stream": True}).encode(),
                 {"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    return conn, conn.getresponse()


def events(response: http.client.HTTPResponse) -> Iterator[tuple[str, dict]]:
    """Server-Sent Events, parsed line by line as they arrive: (event name, JSON data)."""
    name, data = "message", ""
    while line := response.readline():
        text = line.decode().rstrip("\n")
        if text.startswith("event: "):
            name = text[len("event: ") :]
        elif text.startswith("data: "):
            data += text[len("data: ") :]
        elif text == "":
            yield name, json.loads(data)
            name, data = "message", ""


# ---- classify ---------------------------------------------------------------------------------------------
def test_classify_one_image_body_equals_grpc(server: RunningServer, client: TaskClient) -> None:
    image = ink_box((120, 20, 180, 80))
    status, doc = request(server, "/v1/classify?top_k=3&model=quadrants", image, "image/png")
    assert status == 200, doc
    assert (doc["model_name"], doc["model_version"]) == ("quadrants", "1")
    expected = client.classify([image], top_k=3, model="quadrants").results[0]
    labels = doc["classifications"][0]["labels"]
    assert [(s["label"], s["index"]) for s in labels] == [(s.label, s.index) for s in expected]
    assert [s["probability"] for s in labels] == pytest.approx([s.probability for s in expected], abs=1e-6)
    assert labels[0]["label"] == "top_right"


def test_classify_multipart_keeps_order_and_top_k(server: RunningServer, client: TaskClient) -> None:
    images = [ink_box(b) for b in [(20, 20, 80, 80), (120, 120, 180, 180), (20, 120, 80, 180)]]
    body, content_type = multipart(images, {"top_k": "2"})
    status, doc = request(server, "/v1/classify", body, content_type)
    assert status == 200, doc
    assert doc["model_name"] == "quadrants"  # the task's default model
    got = [[s["label"] for s in c["labels"]] for c in doc["classifications"]]
    assert got == [[s.label for s in r] for r in client.classify(images, top_k=2).results]
    assert [g[0] for g in got] == ["top_left", "bottom_right", "bottom_left"]


@pytest.mark.parametrize(
    ("path", "body", "content_type", "message"),
    [
        ("/v1/classify", b"not an image", "image/png", "image"),
        ("/v1/classify?top_k=99", IMAGE, "image/png", "top_k must be between 1 and 4"),
        ("/v1/classify?top_k=two", IMAGE, "image/png", "top_k must be a whole number"),
        ("/v1/classify", b"{}", "application/json", "multipart/form-data"),
        ("/v1/classify", b"--x\r\n", "multipart/form-data; boundary=x", "closing boundary"),
        ("/v1/classify", b"--x--\r\n", "multipart/form-data; boundary=x", "no images"),
        ("/v1/classify", b"--x\r\nbroken\r\n--x--", "multipart/form-data; boundary=x", "part 0"),
        ("/v1/classify", b"--x--", "multipart/form-data", "no boundary"),
        ("/v1/classify", multipart([IMAGE], {"note": "hi"})[0], "multipart/form-data; boundary=", "boundary"),
    ],
)
def test_classify_bad_input_is_400(
    server: RunningServer, path: str, body: bytes, content_type: str, message: str
) -> None:
    status, doc = request(server, path, body, content_type)
    assert status == 400 and message in doc["error"], doc


def test_classify_unexpected_form_field_and_unknown_model(server: RunningServer) -> None:
    body, content_type = multipart([IMAGE], {"note": "hi"})
    status, doc = request(server, "/v1/classify", body, content_type)
    assert status == 400 and "unexpected form field 'note'" in doc["error"], doc
    status, doc = request(server, "/v1/classify?model=nope", ink_box((20, 20, 80, 80)), "image/png")
    assert status == 404 and "nope" in doc["error"]
    status, doc = request(server, "/v1/classify?model=tiny_sentiment", ink_box((20, 20, 80, 80)), "image/png")
    assert status == 400 and "serves the task sentiment" in doc["error"]


def test_classify_body_over_the_limit_is_413(server: RunningServer) -> None:
    status, doc = request(server, "/v1/classify", b"\0" * (300 * 1024), "image/png")
    assert status == 413 and "--max-message-bytes" in doc["error"]


# ---- sentiment ----------------------------------------------------------------------------------------------
def test_sentiment_equals_grpc(server: RunningServer, client: TaskClient) -> None:
    texts = ["a great film, loved it", "terrible and boring", "ok"]
    status, doc = post(server, "/v1/sentiment", {"texts": texts})
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
def test_sentiment_errors(server: RunningServer, doc: object, status: int, message: str) -> None:
    got, answer = post(server, "/v1/sentiment", doc)
    assert got == status and message in answer["error"], answer


def test_sentiment_body_must_be_json(server: RunningServer) -> None:
    assert request(server, "/v1/sentiment", b"{", "application/json")[1]["error"].startswith("the request body is not")
    status, doc = request(server, "/v1/sentiment", b'{"texts": ["hi"]}', "application/x-www-form-urlencoded")
    assert status == 200, doc  # curl -d's default Content-Type


# ---- generate -----------------------------------------------------------------------------------------------
def test_generate_whole_text_equals_grpc(server: RunningServer, client: TaskClient) -> None:
    params = {"max_new_tokens": 20, "temperature": 0.9, "top_k": 50, "top_p": 0.95, "seed": 7, "model": "tiny_lm"}
    status, doc = post(server, "/v1/generate", {"prompt": PROMPT, **params})
    assert status == 200, doc
    stream = client.generate(PROMPT, **params)  # type: ignore[arg-type]
    assert doc["text"] == stream.text()
    s = stream.summary
    assert s is not None
    assert (doc["finish_reason"], doc["prompt_tokens"], doc["generated_tokens"], doc["prompt_truncated"]) == (
        s.finish_reason, s.prompt_tokens, s.generated_tokens, s.prompt_truncated,
    )  # fmt: skip
    assert (doc["model_name"], doc["model_version"], doc["finish_reason"]) == ("tiny_lm", "1", "length")


def test_generate_stream_is_events_then_finished(server: RunningServer, client: TaskClient) -> None:
    doc = {"prompt": PROMPT, "max_new_tokens": 12, "temperature": 0.0, "model": "tiny_lm", "stop": []}
    conn, response = open_stream(server, doc)
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


def closed(server: RunningServer) -> float:
    """Generations counted as ended by their client going away (code 499)."""
    labels = {"model": "slow_lm", "version": "1", "api": "http_generate", "code": "499"}
    return server.app.metrics.registry.get_sample_value("deepserve_requests_total", labels) or 0


def test_disconnecting_cancels_the_generation_and_frees_the_slot(server: RunningServer) -> None:
    scheduler = server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = closed(server)
    conn, response = open_stream(server, {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0,
                                          "model": "slow_lm"})  # fmt: skip
    stream = events(response)
    assert next(stream)[0] == "delta" and next(stream)[0] == "delta"
    assert scheduler.active == 1
    response.close()
    conn.close()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: closed(server) == before + 1)


def test_disconnecting_cancels_a_generation_that_is_not_streamed(server: RunningServer) -> None:
    scheduler = server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = closed(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.app.http_port, timeout=30)
    doc = {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm"}
    conn.request("POST", "/v1/generate", json.dumps(doc).encode(), {"Content-Type": "application/json"})
    assert eventually(lambda: scheduler.active == 1)
    conn.close()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: closed(server) == before + 1)  # counted as the client closing, not as finished


def timed_out(server: RunningServer) -> float:
    labels = {"model": "slow_lm", "version": "1", "api": "http_generate", "code": "504"}
    return server.app.metrics.registry.get_sample_value("deepserve_requests_total", labels) or 0


def test_timeout_ms_ends_a_generation_with_504(server: RunningServer) -> None:
    scheduler = server.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    before = timed_out(server)
    doc = {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm", "timeout_ms": 300}
    status, answer = post(server, "/v1/generate", doc)
    assert status == 504 and "deadline" in answer["error"], answer
    conn, response = open_stream(server, doc)
    try:
        got = list(events(response))
    finally:
        conn.close()
    assert response.status == 200 and got[0][0] == "delta"  # the text generated in time, then the error
    assert got[-1] == ("error", {"error": got[-1][1]["error"], "status": 504}) and "deadline" in got[-1][1]["error"]
    assert {name for name, _ in got[:-1]} == {"delta"}
    assert eventually(lambda: scheduler.active == 0)
    assert timed_out(server) == before + 2


def test_timeout_ms_leaves_requests_that_finish_in_time_alone(server: RunningServer) -> None:
    status, doc = request(server, "/v1/classify?timeout_ms=30000", IMAGE, "image/png")
    assert status == 200, doc
    assert post(server, "/v1/sentiment", {"texts": ["fine"], "timeout_ms": 30000})[0] == 200
    status, doc = post(server, "/v1/generate", {"prompt": PROMPT, "max_new_tokens": 3, "model": "tiny_lm",
                                                "timeout_ms": 30000})  # fmt: skip
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
def test_bad_timeout_ms_is_400(server: RunningServer, path: str, doc: dict | None, message: str) -> None:
    status, answer = request(server, path, IMAGE, "image/png") if doc is None else post(server, path, doc)
    assert status == 400 and message in answer["error"], answer


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
def test_generate_errors(server: RunningServer, doc: dict, status: int, message: str) -> None:
    got, answer = post(server, "/v1/generate", doc)
    assert got == status and message in answer["error"], answer


def test_task_requests_are_counted_in_the_metrics(server: RunningServer) -> None:
    registry = server.app.metrics.registry
    labels = {"model": "tiny_sentiment", "version": "1", "api": "http_sentiment", "code": "200"}
    before = registry.get_sample_value("deepserve_requests_total", labels) or 0
    assert post(server, "/v1/sentiment", {"texts": ["fine"]})[0] == 200
    assert registry.get_sample_value("deepserve_requests_total", labels) == before + 1
    unknown = {"model": "_unknown", "version": "", "api": "http_generate", "code": "404"}
    before = registry.get_sample_value("deepserve_requests_total", unknown) or 0
    assert post(server, "/v1/generate", {"prompt": "x", "model": "nope"})[0] == 404
    assert registry.get_sample_value("deepserve_requests_total", unknown) == before + 1


# ---- tokens -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tokens_file(tmp_path_factory.mktemp("tokens"))
    running = start_server(repo, http_port=free_port(), auth_tokens_file=path)
    yield running
    running.stop()


def test_task_endpoints_need_an_infer_token(secured: RunningServer) -> None:
    reader = {"Authorization": f"Bearer {TOKEN}"}
    for path, doc in [("/v1/sentiment", {"texts": ["x"]}), ("/v1/generate", {"prompt": "x", "max_new_tokens": 2})]:
        assert post(secured, path, doc)[0] == 401
        assert post(secured, path, doc, {"Authorization": f"Bearer {OPS}"})[0] == 403
        assert post(secured, path, doc, reader)[0] == 200
    status, _ = request(secured, "/v1/classify", ink_box((20, 20, 80, 80)), "image/png")
    assert status == 401
    assert request(secured, "/v1/classify", ink_box((20, 20, 80, 80)), "image/png", reader)[0] == 200


def test_a_stream_holds_its_token_until_it_ends(secured: RunningServer) -> None:
    """max_concurrent_requests 1: while a stream runs the token's second request is 429; once the client has gone
    away, the count is released."""
    reader = {"Authorization": f"Bearer {TOKEN}"}
    scheduler = secured.app.tasks.scheduler("slow_lm")
    assert scheduler is not None
    doc = {"prompt": PROMPT, "max_new_tokens": 2000, "temperature": 0.0, "model": "slow_lm"}
    conn, response = open_stream(secured, doc, reader)
    assert next(events(response))[0] == "delta"
    assert scheduler.active == 1
    status, doc = post(secured, "/v1/sentiment", {"texts": ["x"]}, reader)
    assert status == 429, doc
    response.close()
    conn.close()
    assert eventually(lambda: scheduler.active == 0)
    assert eventually(lambda: post(secured, "/v1/sentiment", {"texts": ["x"]}, reader)[0] == 200)
