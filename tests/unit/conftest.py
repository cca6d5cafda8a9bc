"""Fixtures that several unit test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.tiny_models import add_sub


@pytest.fixture(scope="module")
def add_sub_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny `add_sub` model, written once per test module."""
    path = tmp_path_factory.mktemp("runtime") / "add_sub" / "1" / "model.onnx"
    add_sub(path)
    return path


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    """The worker threads a dynamic batcher runs its batches on."""
    pool = ThreadPoolExecutor(4)
    yield pool
    pool.shutdown(wait=True)
