"""What the integration tests share: a server for a module fixture, the tiny task models (also with the HTTP port
open), and V2 clients of the module's `server`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tc

from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import FREE_PORT, RunningServer, start_server
from tests.tiny_task_models import make_task_repository


def serving(repo: Path, **overrides: object) -> Iterator[RunningServer]:
    """For a fixture to `yield from`: a server on `repo` (see `start_server`), stopped after its tests."""
    running = start_server(repo, **overrides)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def task_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository of `tests.tiny_task_models` (quadrants, tiny_sentiment, tiny_lm, slow_lm, ...), one a module."""
    return make_task_repository(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def http_task_server(task_repo: Path) -> Iterator[RunningServer]:
    """The tiny task models with the HTTP port open, and requests limited to 256 KiB."""
    yield from serving(task_repo, http_port=FREE_PORT, max_message_bytes=256 * 1024)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(server.address)


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
