"""Repository control at run time (load, unload, reload) and start-up on partly broken repositories.

Every test works on its own copy of the repository, since it edits it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import RunningServer, start_server
from tests.integration.conftest import serving
from tests.tiny_models import add_sub, make_repository
from tests.triton_inputs import add_sub_inputs

UNAVAILABLE, NOT_FOUND = "StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "models", names=("add_sub", "token_sum"))


@pytest.fixture
def running(repo: Path) -> Iterator[RunningServer]:
    yield from serving(repo, model_control_mode="explicit")


@pytest.fixture
def client(running: RunningServer) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(running.address)


def infer_add_sub(client: tc.InferenceServerClient, version: str = "") -> np.ndarray:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("add_sub", add_sub_inputs(tc, a), model_version=version)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)
    return result.as_numpy("OUTPUT0")


def index(client: tc.InferenceServerClient) -> dict[str, tuple[str, str, str]]:
    return {m.name: (m.version, m.state, m.reason) for m in client.get_model_repository_index().models}


def expect_error(call: object, status: str, *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    assert info.value.status() == status
    for fragment in fragments:
        assert fragment in info.value.message()
    return str(info.value.message())


def test_unload_then_reload(client: tc.InferenceServerClient) -> None:
    infer_add_sub(client)
    client.unload_model("add_sub")
    assert not client.is_model_ready("add_sub")
    assert client.is_server_ready()
    expect_error(lambda: infer_add_sub(client), NOT_FOUND, "unknown model 'add_sub'")
    expect_error(lambda: client.get_model_metadata("add_sub"), NOT_FOUND, "unknown model 'add_sub'")
    assert index(client)["add_sub"] == ("", "UNAVAILABLE", "not loaded")
    assert index(client)["token_sum"] == ("1", "READY", "")
    assert [m.name for m in client.get_model_repository_index().models if m.state == "READY"] == ["token_sum"]

    client.load_model("add_sub")
    assert client.is_model_ready("add_sub")
    infer_add_sub(client)
    assert index(client)["add_sub"] == ("1", "READY", "")


def test_unload_twice_and_unknown(client: tc.InferenceServerClient) -> None:
    client.unload_model("token_sum")
    client.unload_model("token_sum")
    expect_error(lambda: client.unload_model("nope"), NOT_FOUND, "model 'nope' is not in the repository")
    expect_error(lambda: client.load_model("nope"), NOT_FOUND, "model 'nope' is not in the repository")
    infer_add_sub(client)


def test_reload_of_a_serving_model_is_seamless(client: tc.InferenceServerClient) -> None:
    client.load_model("add_sub")
    client.load_model("add_sub")
    assert client.is_model_ready("add_sub")
    infer_add_sub(client)


@pytest.mark.parametrize(
    ("breakage", "fragments"),
    [
        ("config_key", ["model 'add_sub': invalid config.yaml", "unknown key `bogus`"]),
        ("config_yaml", ["model 'add_sub': config.yaml is not valid YAML at line 2, column 1"]),
        ("config_value", ["model 'add_sub': invalid config.yaml", "`max_batch_size`"]),
        ("config_graph", ["model 'add_sub': inputs `INPUT0` has datatype INT64", "set `datatype: FP32`"]),
        ("model_file", ["model 'add_sub': cannot load 1/model.onnx: the file is not a valid ONNX model"]),
        ("no_model_file", ["model 'add_sub': no version folder with a model.onnx"]),
    ],
)
def test_failed_reload_keeps_the_old_version_serving(
    client: tc.InferenceServerClient, repo: Path, breakage: str, fragments: list[str]
) -> None:
    folder = repo / "add_sub"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    good_config = (folder / "config.yaml").read_text()
    if breakage == "config_key":
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "bogus": 1}))
    elif breakage == "config_yaml":
        (folder / "config.yaml").write_text("inputs: [\n")
    elif breakage == "config_value":
        (folder / "config.yaml").write_text(yaml.safe_dump({**config, "max_batch_size": -4}))
    elif breakage == "config_graph":
        config["inputs"][0]["datatype"] = "INT64"
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    elif breakage == "model_file":
        (folder / "1" / "model.onnx").write_bytes(b"not an onnx model")
    else:
        shutil.rmtree(folder / "1")

    expect_error(lambda: client.load_model("add_sub"), UNAVAILABLE, *fragments)
    assert client.is_model_ready("add_sub")
    infer_add_sub(client)
    assert client.get_model_metadata("add_sub").versions == ["1"]
    assert index(client)["add_sub"][:2] == ("1", "READY")

    # repaired, it loads again
    (folder / "config.yaml").write_text(good_config)
    add_sub(folder / "1" / "model.onnx")
    client.load_model("add_sub")
    infer_add_sub(client)


def test_reload_picks_up_a_new_version(client: tc.InferenceServerClient, repo: Path) -> None:
    add_sub(repo / "add_sub" / "2" / "model.onnx")
    client.load_model("add_sub")
    assert client.get_model_metadata("add_sub").versions == ["2"]
    assert client.is_model_ready("add_sub", "2") and not client.is_model_ready("add_sub", "1")
    infer_add_sub(client, version="2")
    expect_error(lambda: infer_add_sub(client, version="1"), NOT_FOUND, "has no version '1' loaded")


def test_model_added_after_start_can_be_loaded(client: tc.InferenceServerClient, repo: Path) -> None:
    make_repository(repo, names=("fp16_double",))
    assert index(client)["fp16_double"] == ("", "UNAVAILABLE", "not loaded")
    client.load_model("fp16_double")
    assert client.is_model_ready("fp16_double")


def health(running: RunningServer) -> int:
    with grpc.insecure_channel(running.address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


# An empty or missing repository is a start-up error: tests/integration/test_readiness.py, tests/e2e/test_readiness.py.


@pytest.mark.parametrize("strict", [True, False])
def test_server_starts_on_a_partly_broken_repository(tmp_path: Path, strict: bool) -> None:
    root = make_repository(tmp_path / "models", names=("add_sub",))
    make_repository(tmp_path / "spare", names=("add_sub", "token_sum"))
    shutil.copytree(tmp_path / "spare" / "add_sub", root / "bad_config")
    (root / "bad_config" / "config.yaml").write_text("max_batch_size: 8\nbatch_size: 8\n")
    shutil.copytree(tmp_path / "spare" / "token_sum", root / "bad_onnx")
    (root / "bad_onnx" / "1" / "model.onnx").write_bytes(b"\x00garbage")

    running = start_server(root, strict_readiness=strict)
    try:
        client = tc.InferenceServerClient(running.address)
        # It serves what loaded; ready (health SERVING) only without strict readiness, since two models failed.
        assert client.is_server_ready() is not strict
        expected = health_pb2.HealthCheckResponse.NOT_SERVING if strict else health_pb2.HealthCheckResponse.SERVING
        assert health(running) == expected
        infer_add_sub(client)
        entries = index(client)
        assert entries["add_sub"] == ("1", "READY", "")
        version, state, reason = entries["bad_config"]
        assert (version, state) == ("", "UNAVAILABLE")
        assert "model 'bad_config': invalid config.yaml" in reason and "unknown key `batch_size`" in reason
        version, state, reason = entries["bad_onnx"]
        assert (version, state) == ("", "UNAVAILABLE")
        assert "model 'bad_onnx': cannot load" in reason
        assert not client.is_model_ready("bad_config")
        expect_error(
            lambda: client.get_model_metadata("bad_onnx"), UNAVAILABLE, "model 'bad_onnx' failed to load", "cannot load"
        )
    finally:
        running.stop()
