"""Triton's model repository and statistics extensions on the HTTP port, through `tritonclient.http` unchanged:
the index (all, or ready only), load and unload with `--model-control-mode explicit` (403 without it, the `admin`
scope with tokens, as on gRPC), and statistics that count the HTTP requests; every answer validates against the
OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import tritonclient.http as tc
from tritonclient.utils import InferenceServerException

from service.http import openapi
from tests.conftest import FREE_PORT, RunningServer, start_server
from tests.http_tokens import OPS, TOKEN, tokens_file
from tests.integration.conftest import serving
from tests.integration.http_calls import call
from tests.tiny_models import make_repository
from tests.triton_inputs import add_sub_inputs


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "models", names=("add_sub", "token_sum"))


@pytest.fixture
def running(repo: Path) -> Iterator[RunningServer]:
    yield from serving(repo, model_control_mode="explicit", http_port=FREE_PORT)


@pytest.fixture
def client(running: RunningServer) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(f"127.0.0.1:{running.app.http_port}")
    yield client
    client.close()


def infer_add_sub(client: tc.InferenceServerClient) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(client.infer("add_sub", add_sub_inputs(tc, a)).as_numpy("OUTPUT0"), a * 2)


def index(client: tc.InferenceServerClient, ready: bool = False) -> dict[str, tuple[str, str, str]]:
    return {m["name"]: (m["version"], m["state"], m["reason"]) for m in client.get_model_repository_index()}


def error(call: object) -> tuple[str | None, str]:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return info.value.status(), str(info.value.message())


def conforms(schema_name: str, value: object) -> None:
    doc = openapi.document(False)
    jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", **doc}).validate(value)


def test_index_load_and_unload_with_tritonclient_http(client: tc.InferenceServerClient) -> None:
    infer_add_sub(client)
    assert index(client) == {"add_sub": ("1", "READY", ""), "token_sum": ("1", "READY", "")}
    client.unload_model("add_sub")
    assert not client.is_model_ready("add_sub") and client.is_server_ready()
    status, message = error(lambda: infer_add_sub(client))
    assert status == "404" and "unknown model 'add_sub'" in message
    assert index(client)["add_sub"] == ("", "UNAVAILABLE", "not loaded")
    for entry in client.get_model_repository_index():
        conforms("RepositoryIndexEntry", entry)
    client.load_model("add_sub")
    assert client.is_model_ready("add_sub")
    infer_add_sub(client)
    status, message = error(lambda: client.load_model("nope"))
    assert status == "404" and "model 'nope' is not in the repository" in message
    status, message = error(lambda: client.load_model("add_sub", config='{"max_batch_size": 2}'))
    assert status == "400" and "RepositoryModelLoad parameters are not supported (got 'config')" in message


def test_index_of_ready_models_only(running: RunningServer, client: tc.InferenceServerClient) -> None:
    client.unload_model("token_sum")
    url = f"127.0.0.1:{running.app.http_port}"
    status, _, body = call(url, "POST", "/v2/repository/index", json.dumps({"ready": True}).encode())
    assert status == 200 and [e["name"] for e in json.loads(body)] == ["add_sub"]
    status, _, body = call(url, "POST", "/v2/repository/index", b"")  # no body: all of them
    assert status == 200 and [e["name"] for e in json.loads(body)] == ["add_sub", "token_sum"]
    status, _, body = call(url, "POST", "/v2/repository/index", b'{"ready": "yes"}')
    assert status == 400 and json.loads(body) == {"error": "'ready' must be true or false"}


def test_statistics_count_http_requests(client: tc.InferenceServerClient) -> None:
    before = client.get_inference_statistics("add_sub")["model_stats"][0]["inference_stats"]["success"]["count"]
    infer_add_sub(client)
    infer_add_sub(client)
    stats = client.get_inference_statistics("add_sub", "1")
    conforms("ModelStatisticsResponse", stats)
    (entry,) = stats["model_stats"]
    assert (entry["name"], entry["version"]) == ("add_sub", "1")
    assert entry["inference_stats"]["success"]["count"] == before + 2
    assert entry["inference_stats"]["success"]["ns"] > 0 and entry["last_inference"] > 0
    assert {b["batch_size"] for b in entry["batch_stats"]} == {2}
    every = client.get_inference_statistics()
    assert sorted((e["name"], e["version"]) for e in every["model_stats"]) == [("add_sub", "1"), ("token_sum", "1")]
    status, message = error(lambda: client.get_inference_statistics("nope"))
    assert status == "404" and "nope" in message
    status, message = error(lambda: client.get_inference_statistics("add_sub", "7"))
    assert status == "404" and "no version '7'" in message


def test_model_control_off_is_403(repo: Path) -> None:
    server = start_server(repo, http_port=FREE_PORT)
    try:
        client = tc.InferenceServerClient(f"127.0.0.1:{server.app.http_port}")
        for action in (client.load_model, client.unload_model):
            status, message = error(lambda action=action: action("add_sub"))  # type: ignore[misc]
            assert status == "403" and "--model-control-mode explicit" in message
        assert client.is_model_ready("add_sub")
        assert len(client.get_model_repository_index()) == 2  # the index and statistics stay open to infer
        client.close()
    finally:
        server.stop()


def test_load_and_unload_need_the_admin_scope(repo: Path, tmp_path: Path) -> None:
    server = start_server(
        repo, http_port=FREE_PORT, model_control_mode="explicit", auth_tokens_file=tokens_file(tmp_path)
    )
    url = f"127.0.0.1:{server.app.http_port}"
    reader, ops = {"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"Bearer {OPS}"}
    try:
        assert call(url, "POST", "/v2/repository/models/add_sub/unload", b"", reader)[0] == 403
        assert call(url, "POST", "/v2/repository/models/add_sub/unload", b"")[0] == 401
        status, _, body = call(url, "POST", "/v2/repository/models/add_sub/unload", b"", ops)
        assert (status, body) == (200, b"")
        assert call(url, "POST", "/v2/repository/index", b"", ops)[0] == 403  # admin alone cannot read
        assert call(url, "POST", "/v2/repository/index", b"", reader)[0] == 200
        assert call(url, "GET", "/v2/models/stats", None, reader)[0] == 200
        assert call(url, "POST", "/v2/repository/models/add_sub/load", b"{}", ops)[0] == 200
        assert call(url, "GET", "/v2/models/add_sub/ready", None, reader)[0] == 200
    finally:
        server.stop()
