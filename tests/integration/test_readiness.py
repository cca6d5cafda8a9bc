"""Readiness (strict by default, like Triton's --strict-readiness) over real gRPC, with /metrics scraped over HTTP:
a model that fails to load makes the server not ready, is not ready itself, shows UNAVAILABLE with its reason in
RepositoryIndex and is exported as `deepserve_model_ready` 0 with a load failure counted; readiness follows
loads and unloads at run time."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from service.app import App
from service.client import ClientError, TaskClient
from service.config import ServerSettings
from service.errors import ConfigError
from tests.conftest import RunningServer, start_server
from tests.tiny_models import add_sub, make_broken, make_repository, not_onnx
from tests.tiny_task_models import write_sentiment
from tests.waiting import eventually

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
V2 = "inference.GRPCInferenceService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(running: RunningServer) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{running.app.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample `name` with exactly `labels`, or None when there is no such series."""
    return samples.get((name, frozenset(labels.items())))


def health(running: RunningServer, service: str = "") -> int:
    with grpc.insecure_channel(running.address) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


def index(client: tc.InferenceServerClient) -> dict[str, tuple[str, str, str]]:
    return {m.name: (m.version, m.state, m.reason) for m in client.get_model_repository_index().models}


@pytest.fixture(scope="module")
def partly_broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """add_sub, and two models that fail to load: `broken` (model.onnx is not ONNX; version 1 known) and
    `broken_config` (an unknown key in config.yaml; versions unknown)."""
    root = make_repository(tmp_path_factory.mktemp("partly_broken") / "models", names=("add_sub",))
    make_broken(root, "broken", part="model")
    return make_broken(root, "broken_config", part="config")


@pytest.mark.parametrize("strict", [True, False])
def test_a_model_that_failed_to_load(partly_broken: Path, strict: bool) -> None:
    running = start_server(partly_broken, strict_readiness=strict)
    try:
        client = tc.InferenceServerClient(running.address)
        assert client.is_server_live()
        # strict (the default): not ready while a model of the repository does not serve; else the old behaviour
        assert client.is_server_ready() is not strict
        assert health(running) == health(running, V2) == (NOT_SERVING if strict else SERVING)
        assert health(running, "liveness") == SERVING  # for liveness probes: a broken model is no reason to restart

        assert client.is_model_ready("add_sub") and client.is_model_ready("add_sub", "1")
        for name in ("broken", "broken_config"):
            assert not client.is_model_ready(name) and not client.is_model_ready(name, "1")
        entries = index(client)
        assert entries["add_sub"] == ("1", "READY", "")
        assert entries["broken"][:2] == ("", "UNAVAILABLE")
        assert "model 'broken': cannot load 1/model.onnx: the file is not a valid ONNX model" in entries["broken"][2]
        assert entries["broken_config"][:2] == ("", "UNAVAILABLE")
        assert "unknown key `bogus`" in entries["broken_config"][2]

        samples = scrape(running)
        assert sample(samples, "deepserve_model_ready", model="add_sub", version="1") == 1
        assert sample(samples, "deepserve_model_ready", model="broken", version="1") == 0  # the version it would serve
        assert sample(samples, "deepserve_model_ready", model="broken_config", version="") == 0  # versions unknown
        failures = "deepserve_model_load_failures_total"
        assert sample(samples, failures, model="broken") == sample(samples, failures, model="broken_config") == 1
        assert sample(samples, failures, model="add_sub") == 0
    finally:
        running.stop()


def test_task_assets_load_with_the_model_one_state_everywhere(tmp_path: Path) -> None:
    """A sentiment model whose labels cannot be read fails to load: not ready to ModelReady and RepositoryIndex,
    UNAVAILABLE with the same reason to the task API, and its task service is not serving."""
    root = make_repository(tmp_path / "models", names=("add_sub",))
    (write_sentiment(root, "bad_labels") / "labels.txt").write_bytes(b"\xffnegative\nneutral\npositive\n")
    running = start_server(root, strict_readiness=False)
    try:
        client = tc.InferenceServerClient(running.address)
        assert client.is_model_ready("add_sub") and not client.is_model_ready("bad_labels")
        version, state, reason = index(client)["bad_labels"]
        assert (version, state) == ("", "UNAVAILABLE")
        assert reason == "model 'bad_labels': cannot read 'labels.txt' (`labels`): it is not UTF-8 text (byte 0)"
        with TaskClient(running.address) as tasks, pytest.raises(ClientError) as caught:
            tasks.analyze(["great"], model="bad_labels")
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert caught.value.message == f"model 'bad_labels' failed to load: {reason}"
        assert health(running, "deepserve.v1.SentimentAnalyzer") == NOT_SERVING
    finally:
        running.stop()


def test_a_repository_without_models_does_not_start(tmp_path: Path) -> None:
    """In-process: `App` refuses before it binds a port (tests/e2e/test_readiness.py runs the command)."""
    (tmp_path / "empty").mkdir()
    make_repository(tmp_path / "no_config", names=("add_sub",))
    (tmp_path / "no_config" / "add_sub" / "config.yaml").unlink()
    cases = {
        "missing": "does not exist",
        "empty": "holds no models",
        "no_config": "holds no models",
    }
    for folder, problem in cases.items():
        settings = ServerSettings(model_repository=tmp_path / folder, port=0, metrics_port=None, http_port=0)
        with pytest.raises(ConfigError, match=re.escape(f"--model-repository {tmp_path / folder} {problem}")):
            asyncio.run(_app(settings))


async def _app(settings: ServerSettings) -> App:
    return App(settings)


@pytest.fixture
def controlled(tmp_path: Path) -> Iterator[tuple[RunningServer, Path]]:
    repo = make_repository(tmp_path / "models", names=("add_sub", "token_sum"))
    running = start_server(repo, model_control_mode="explicit")
    yield running, repo
    running.stop()


def test_readiness_follows_loads_and_unloads(controlled: tuple[RunningServer, Path]) -> None:
    running, repo = controlled
    client = tc.InferenceServerClient(running.address)
    ready = lambda: client.is_server_ready() and health(running) == SERVING  # noqa: E731
    not_ready = lambda: not client.is_server_ready() and health(running) == NOT_SERVING  # noqa: E731
    failures = lambda name: sample(scrape(running), "deepserve_model_load_failures_total", model=name)  # noqa: E731
    assert ready() and failures("token_sum") == 0

    # A reload that fails keeps the old version serving: still ready, the failure counted, the reason indexed.
    not_onnx(repo / "token_sum" / "1" / "model.onnx")
    with pytest.raises(InferenceServerException, match="not a valid ONNX model"):
        client.load_model("token_sum")
    assert ready() and client.is_model_ready("token_sum")
    assert sample(scrape(running), "deepserve_model_ready", model="token_sum", version="1") == 1
    assert failures("token_sum") == 1
    version, state, reason = index(client)["token_sum"]
    assert (version, state) == ("1", "READY") and reason.startswith("last reload failed, older version serving")

    # A model of the repository that fails to load (first time) makes the server not ready...
    make_broken(repo, "late")
    with pytest.raises(InferenceServerException, match="not a valid ONNX model"):
        client.load_model("late")
    assert eventually(not_ready)
    assert sample(scrape(running), "deepserve_model_ready", model="late", version="1") == 0
    # ...until it is repaired and loads,
    add_sub(repo / "late" / "1" / "model.onnx")
    client.load_model("late")
    assert eventually(ready) and client.is_model_ready("late")
    assert sample(scrape(running), "deepserve_model_ready", model="late", version="1") == 1
    assert failures("late") == 1

    # or is unloaded: a model unloaded on purpose is not expected to serve, and has no readiness series.
    not_onnx(repo / "late" / "1" / "model.onnx")
    with pytest.raises(InferenceServerException):
        client.load_model("late")
    assert ready(), "the older version still serves"
    client.unload_model("late")
    assert eventually(ready) and not client.is_model_ready("late")
    assert sample(scrape(running), "deepserve_model_ready", model="late", version="1") is None
    assert index(client)["late"] == ("", "UNAVAILABLE", "not loaded")

    # With every model unloaded there is nothing to serve: not ready.
    client.unload_model("add_sub")
    assert eventually(ready)
    client.unload_model("token_sum")
    assert eventually(not_ready)
    client.load_model("add_sub")
    assert eventually(ready)


def test_failed_first_load_without_strict_readiness(tmp_path: Path) -> None:
    repo = make_repository(tmp_path / "models", names=("add_sub",))
    running = start_server(repo, model_control_mode="explicit", strict_readiness=False)
    try:
        client = tc.InferenceServerClient(running.address)
        make_broken(repo, "late")
        with pytest.raises(InferenceServerException):
            client.load_model("late")
        time.sleep(0.2)
        assert client.is_server_ready() and health(running) == SERVING
        assert not client.is_model_ready("late")
        assert sample(scrape(running), "deepserve_model_ready", model="late", version="1") == 0
    finally:
        running.stop()


def test_a_replaced_version_has_no_readiness_series(controlled: tuple[RunningServer, Path]) -> None:
    """`deepserve_model_ready` 0 means a model that should serve and does not: a version a reload replaced is
    not one of those (an alert on 0 would otherwise fire for it forever)."""
    running, repo = controlled
    add_sub(repo / "add_sub" / "2" / "model.onnx")
    tc.InferenceServerClient(running.address).load_model("add_sub")
    samples = scrape(running)
    assert sample(samples, "deepserve_model_ready", model="add_sub", version="2") == 1
    assert sample(samples, "deepserve_model_ready", model="add_sub", version="1") is None
