"""`POST /v1/classify` on the HTTP port: the gRPC ImageClassifier's answers, and a 400, 404 or 413 that says why."""

from __future__ import annotations

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer
from tests.integration.tasks.calls import IMAGE, multipart, request
from tests.integration.tasks.test_image import ink_box


def test_classify_one_image_body_equals_grpc(task_server: RunningServer, client: TaskClient) -> None:
    image = ink_box((120, 20, 180, 80))
    status, doc = request(task_server, "/v1/classify?top_k=3&model=quadrants", image, "image/png")
    assert status == 200, doc
    assert (doc["model_name"], doc["model_version"]) == ("quadrants", "1")
    expected = client.classify([image], top_k=3, model="quadrants").results[0]
    labels = doc["classifications"][0]["labels"]
    assert [(s["label"], s["index"]) for s in labels] == [(s.label, s.index) for s in expected]
    assert [s["probability"] for s in labels] == pytest.approx([s.probability for s in expected], abs=1e-6)
    assert labels[0]["label"] == "top_right"


def test_classify_multipart_keeps_order_and_top_k(task_server: RunningServer, client: TaskClient) -> None:
    images = [ink_box(b) for b in [(20, 20, 80, 80), (120, 120, 180, 180), (20, 120, 80, 180)]]
    body, content_type = multipart(images, {"top_k": "2"})
    status, doc = request(task_server, "/v1/classify", body, content_type)
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
    task_server: RunningServer, path: str, body: bytes, content_type: str, message: str
) -> None:
    status, doc = request(task_server, path, body, content_type)
    assert status == 400 and message in doc["error"], doc


def test_classify_unexpected_form_field_and_unknown_model(task_server: RunningServer) -> None:
    body, content_type = multipart([IMAGE], {"note": "hi"})
    status, doc = request(task_server, "/v1/classify", body, content_type)
    assert status == 400 and "unexpected form field 'note'" in doc["error"], doc
    status, doc = request(task_server, "/v1/classify?model=nope", ink_box((20, 20, 80, 80)), "image/png")
    assert status == 404 and "nope" in doc["error"]
    status, doc = request(task_server, "/v1/classify?model=tiny_sentiment", ink_box((20, 20, 80, 80)), "image/png")
    assert status == 400 and "serves the task sentiment" in doc["error"]


def test_classify_body_over_the_limit_is_413(task_server: RunningServer) -> None:
    status, doc = request(task_server, "/v1/classify", b"\0" * (300 * 1024), "image/png")
    assert status == 413 and "--max-message-bytes" in doc["error"]
