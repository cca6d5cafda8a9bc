"""The task endpoints with bearer tokens: the `infer` scope, and a stream holding its token's in-flight count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import FREE_PORT, RunningServer
from tests.http_tokens import OPS, TOKEN, tokens_file
from tests.integration.conftest import serving
from tests.integration.tasks.calls import PROMPT, events, open_stream, post, request
from tests.integration.tasks.test_image import ink_box
from tests.waiting import eventually


@pytest.fixture(scope="module")
def secured(task_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tokens_file(tmp_path_factory.mktemp("tokens"))
    yield from serving(task_repo, http_port=FREE_PORT, auth_tokens_file=path)


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
