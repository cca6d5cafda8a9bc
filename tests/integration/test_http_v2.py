"""KServe V2 REST on the HTTP port, against a real server: `tritonclient.http` unchanged (JSON and binary tensor
data), plain JSON requests, and the errors a client acts on: 400 with the reason, 404, 413, 401/403/429 with
tokens, and that the HTTP requests share the gRPC port's models and metrics."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc_grpc
import tritonclient.http as tc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

import tests.conftest as harness
from service.errors import BindError
from tests.conftest import FREE_PORT, RunningServer, start_server
from tests.http_tokens import OPS, TOKEN, tokens_file
from tests.integration.conftest import serving
from tests.integration.http_calls import call, post_json
from tests.ports import free_port


@pytest.fixture(scope="module")
def server(model_repo: Path) -> Iterator[RunningServer]:
    yield from serving(model_repo, http_port=FREE_PORT, max_message_bytes=64 * 1024)


@pytest.fixture(scope="module")
def url(server: RunningServer) -> str:
    return f"127.0.0.1:{server.app.http_port}"


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[tc.InferenceServerClient]:
    client = tc.InferenceServerClient(url)
    yield client
    client.close()


# ---- tritonclient.http unchanged ------------------------------------------------------------------
def test_health_and_metadata_through_tritonclient(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("no_such_model")
    server = client.get_server_metadata()
    assert server["name"] == "deepserve" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("add_sub")
    assert meta["name"] == "add_sub" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [-1, 4]},
    ]


MODELS = ("add_sub", "bytes_identity", "fp16_double", "token_sum")


@pytest.mark.parametrize("model", MODELS)
def test_model_config_through_tritonclient_equals_grpc(
    client: tc.InferenceServerClient, server: RunningServer, model: str
) -> None:
    """GET /v2/models/{name}[/versions/{v}]/config is the JSON of what gRPC's ModelConfig returns, with 64-bit
    integers as numbers, as Triton answers (perf_analyzer -i http reads it)."""
    config = client.get_model_config(model)
    assert client.get_model_config(model, "1") == config
    grpc_client = tc_grpc.InferenceServerClient(server.address)
    assert json_format.ParseDict(config, mc.ModelConfig()) == grpc_client.get_model_config(model).config
    assert all(isinstance(d, int) for t in config["input"] + config["output"] for d in t["dims"])


def test_model_config_of_add_sub(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("add_sub")
    assert config["max_batch_size"] == 8 and config["platform"] == "onnxruntime_onnx"
    assert config["input"] == [
        {"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
        {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]},
    ]
    assert config["version_policy"] == {"specific": {"versions": [1]}}
    assert "dynamic_batching" in config
    assert "model_configuration" in client.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException, match="Request for unknown model 'nope'"):
        client.get_model_config("nope")
    with pytest.raises(InferenceServerException, match="has no version '3'"):
        client.get_model_config("add_sub", "3")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_through_tritonclient_equals_grpc(
    client: tc.InferenceServerClient, server: RunningServer, binary: bool
) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, dtype=np.float32)
    inputs = [tc.InferInput("INPUT0", [2, 4], "FP32"), tc.InferInput("INPUT1", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=binary)
    inputs[1].set_data_from_numpy(b, binary_data=binary)
    outputs = [tc.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("add_sub", inputs, outputs=outputs, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response()["id"] == "r-1"

    grpc_client = tc_grpc.InferenceServerClient(server.address)
    grpc_inputs = [tc_grpc.InferInput("INPUT0", [2, 4], "FP32"), tc_grpc.InferInput("INPUT1", [2, 4], "FP32")]
    grpc_inputs[0].set_data_from_numpy(a)
    grpc_inputs[1].set_data_from_numpy(b)
    np.testing.assert_array_equal(grpc_client.infer("add_sub", grpc_inputs).as_numpy("OUTPUT0"), a + b)


def test_infer_bytes_and_int64_through_tritonclient(client: tc.InferenceServerClient) -> None:
    text = np.array([["hello"], ["naïve ☃"], [""]], dtype=object)
    tensor = tc.InferInput("text", [3, 1], "BYTES")
    tensor.set_data_from_numpy(text)
    result = client.infer("bytes_identity", [tensor])  # no outputs named: all, as binary data
    assert result.as_numpy(result.get_response()["outputs"][0]["name"]).reshape(-1).tolist() == [
        b"hello",
        "naïve ☃".encode(),
        b"",
    ]
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    tokens = tc.InferInput("token_ids", [2, 3], "INT64")
    tokens.set_data_from_numpy(ids, binary_data=False)
    out = client.infer("token_sum", [tokens], outputs=[tc.InferRequestedOutput("total", binary_data=False)])
    assert out.as_numpy("total").reshape(-1).tolist() == [6, 15]


def test_tritonclient_sees_the_error_message(client: tc.InferenceServerClient) -> None:
    tensor = tc.InferInput("INPUT0", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"^\[400\] model 'add_sub' needs input 'INPUT1'"):
        client.infer("add_sub", [tensor])
    with pytest.raises(InferenceServerException, match="Request for unknown model 'nope'"):
        client.get_model_metadata("nope")


def test_keep_alive_requests_are_not_held_back_by_nagle(url: str) -> None:
    """Each response is written in two parts (headers, body); without TCP_NODELAY the second waits for the client's
    delayed ACK of the first, about 40 ms a request on a kept-alive connection."""
    host, port = url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    took = []
    for _ in range(20):
        start = time.perf_counter()
        connection.request("GET", "/v2/health/live")
        assert connection.getresponse().read() == b'{"live":true}'
        took.append(time.perf_counter() - start)
    connection.close()
    assert sorted(took)[len(took) // 2] < 0.02, took


# ---- plain JSON and the errors --------------------------------------------------------------------
def test_plain_json_infer_and_live_ready(url: str) -> None:
    assert call(url, "GET", "/v2/health/live")[0] == 200
    status, _, body = call(url, "GET", "/v2/health/ready")
    assert (status, json.loads(body)) == (200, {"ready": True})
    doc = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]},
            {"name": "INPUT1", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]},
        ],
        "outputs": [{"name": "OUTPUT0"}],
    }
    status, answer = post_json(url, "/v2/models/add_sub/versions/1/infer", doc)
    assert status == 200, answer
    output = {"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4], "data": [2, 3, 4, 5]}
    assert answer == {"model_name": "add_sub", "model_version": "1", "outputs": [output]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
            "input 'INPUT0': 3 values in data but shape [1, 4] needs 4",
        ),
        (
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": ["a", 1, 2, 3]}]},
            "input 'INPUT0': FP32 data must be numbers",
        ),
        (
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            "model 'add_sub' needs input 'INPUT1'",
        ),
        (
            {"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]},
            "model 'add_sub' has no input named 'nope'",
        ),
        (
            {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP99", "data": [1, 2, 3, 4]}]},
            "input 'INPUT0': unknown datatype 'FP99'",
        ),
        (
            {"inputs": [{"name": "INPUT0", "shape": [10**6, 4], "datatype": "FP32", "data": []}]},
            "batch size 1000000 exceeds max_batch_size",
        ),
        ({"inputs": []}, "the request must have 'inputs'"),
        ([1, 2], "the request body must be a JSON object"),
        (
            {
                "inputs": [
                    {
                        "name": "INPUT0",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [1, 2, 3, 4],
                        "parameters": {"shared_memory_region": "r"},
                    }
                ]
            },
            "deepserve has no shared memory",
        ),
    ],
)
def test_bad_input_is_400_with_the_reason(url: str, doc: object, message: str) -> None:
    status, answer = post_json(url, "/v2/models/add_sub/infer", doc)
    assert status == 400
    assert message in answer["error"]


def test_body_that_is_not_json_is_400(url: str) -> None:
    status, _, body = call(url, "POST", "/v2/models/add_sub/infer", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"].startswith("the request body is not valid JSON")


def test_unknown_model_version_and_path_are_404(url: str) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/add_sub/versions/7"):
        status, _, body = call(url, "GET", path)
        assert status == 404, path
        assert "error" in json.loads(body)
    status, answer = post_json(url, "/v2/models/nope/infer", {"inputs": []})
    assert status == 404 and answer["error"].startswith("Request for unknown model 'nope'")
    status, _, body = call(url, "GET", "/v3/anything")
    assert status == 404 and "/v2" in json.loads(body)["error"]
    status, _, body = call(url, "GET", "/v2/models/add_sub/infer")
    assert status == 405 and json.loads(body)["error"] == "GET is not allowed on /v2/models/add_sub/infer"


def test_oversized_body_is_413(url: str) -> None:
    data = [0.0] * (64 * 1024 // 4 + 100)
    doc = {"inputs": [{"name": "INPUT0", "shape": [len(data) // 4, 4], "datatype": "FP32", "data": data}]}
    status, answer = post_json(url, "/v2/models/add_sub/infer", doc)
    assert status == 413
    assert "this server accepts at most 65536 (--max-message-bytes)" in answer["error"]


def test_http_requests_are_counted_in_the_metrics(url: str, server: RunningServer) -> None:
    post_json(url, "/v2/models/add_sub/infer", {"inputs": []})
    registry = server.app.metrics.registry
    labels = {"model": "add_sub", "version": "1", "api": "http_v2", "code": "400"}
    assert (registry.get_sample_value("deepserve_requests_total", labels) or 0) >= 1


def test_http_port_zero_disables_it(model_repo: Path) -> None:
    running = start_server(model_repo, http_port=0)
    try:
        assert running.app.http_port is None and running.app.http is None
    finally:
        running.stop()


def test_a_test_server_whose_free_http_port_was_taken_starts_on_another(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`start_server(..., http_port=FREE_PORT)` (tests/conftest.py): a port that another process takes between the
    kernel's pick and the server's bind (here on purpose) costs a second start, not the tests."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(BindError, match=f"cannot bind HTTP port 127.0.0.1:{busy}"):
            start_server(model_repo, http_port=busy)
        picks = iter([busy, free_port()])
        monkeypatch.setattr(harness, "free_port", lambda: next(picks))
        running = start_server(model_repo, http_port=FREE_PORT)
        try:
            assert running.app.http_port not in (None, busy)
            assert next(picks, None) is None  # both picks were used
        finally:
            running.stop()


# ---- tokens ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def secured(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tokens_file(tmp_path_factory.mktemp("tokens"))
    running = start_server(model_repo, http_port=FREE_PORT, auth_tokens_file=path)
    yield f"127.0.0.1:{running.app.http_port}"
    running.stop()


def test_tokens_apply_to_http(secured: str) -> None:
    assert call(secured, "GET", "/v2/health/live")[0] == 200  # open, as on gRPC
    assert call(secured, "GET", "/v2/health/ready")[0] == 200
    status, headers, body = call(secured, "GET", "/v2/models/add_sub")
    assert status == 401 and "Bearer" in headers["www-authenticate"]
    assert "no credentials" in json.loads(body)["error"]
    assert call(secured, "GET", "/v2/models/add_sub", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(secured, "GET", "/v2/models/add_sub", headers={"Authorization": f"Bearer {OPS}"})[0] == 403
    status, _, body = call(secured, "GET", "/v2/models/add_sub", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["name"] == "add_sub"
    client = tc.InferenceServerClient(secured)
    with pytest.raises(InferenceServerException, match="no credentials"):
        client.get_model_metadata("add_sub")
    assert client.get_model_metadata("add_sub", headers={"Authorization": f"Bearer {TOKEN}"})["name"] == "add_sub"
    client.close()
