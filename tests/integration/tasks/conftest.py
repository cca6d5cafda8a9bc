"""Servers the task-API tests share: the tiny task models (one server per test module), and the committed
models when the repository has them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.client import TaskClient
from tests.conftest import RunningServer
from tests.integration.conftest import serving

MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.fixture(scope="module")
def task_server(task_repo: Path) -> Iterator[RunningServer]:
    """The server on `tests.tiny_task_models` (quadrants, tiny_sentiment, tiny_lm, slow_lm, ...)."""
    yield from serving(task_repo)


@pytest.fixture(scope="module")
def client(task_server: RunningServer) -> Iterator[TaskClient]:
    with TaskClient(task_server.address, timeout=60) as c:
        yield c


def serve_committed(model: str) -> Iterator[RunningServer]:
    """For a module fixture: the server on models/, skipping the module's tests while `model` is not there."""
    if not (MODELS / model / "config.yaml").is_file():
        pytest.skip(f"models/{model} is not in the repository yet (the trainer writes it)")
    yield from serving(MODELS)
