"""The registry's answers to `get`: NOT_FOUND messages stay short (the client's name is a bounded prefix, the
list of models a bounded list), and a request naming no version gets the newest."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from service.config import Device
from service.errors import ModelNotFoundError
from service.metrics import Metrics
from service.registry import MAX_LISTED, ModelRegistry
from service.repository import ModelRepository
from tests.tiny_models import make_repository


def registry(names: list[str]) -> ModelRegistry:
    registry = ModelRegistry(repository=None, metrics=None, executor=None)  # type: ignore[arg-type]
    pipeline: Any = object()
    registry._models = {name: {"1": pipeline} for name in names}
    return registry


def test_unknown_model_lists_at_most_max_listed_names() -> None:
    names = [f"model_{i:03d}" for i in range(MAX_LISTED + 5)]
    with pytest.raises(ModelNotFoundError) as caught:
        registry(names).get("x" * 100_000)
    message = caught.value.message
    assert message.startswith("Request for unknown model 'xxxx") and "…(99936 more characters)" in message
    assert f"{names[MAX_LISTED - 1]!r}] and 5 more" in message and names[MAX_LISTED] not in message
    assert len(message) < 600


def test_unknown_version_is_quoted_and_short() -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        registry(["m"]).get("m", "9" * 100_000)
    assert caught.value.message.startswith("model 'm' has no version '9999")
    assert caught.value.message.endswith("more characters) loaded; loaded versions: ['1']")


def test_no_models_says_none() -> None:
    with pytest.raises(ModelNotFoundError, match=r"available models: none$"):
        registry([]).get("m")


async def test_a_request_naming_no_version_gets_the_newest_through_reloads_and_unloads(tmp_path: Path) -> None:
    """`get(name)` answers from the newest-version map the registry keeps beside its versions: it follows a
    reload that adds a version, and an unload."""
    repo = make_repository(tmp_path, ("add_sub",))
    with ThreadPoolExecutor(1) as executor:
        models = ModelRegistry(ModelRepository(repo), Metrics(), executor, Device.CPU)
        await models.load("add_sub")
        assert models.get("add_sub").version == models.get("add_sub", "1").version == "1"
        shutil.copytree(repo / "add_sub" / "1", repo / "add_sub" / "2")
        await models.load("add_sub")
        assert models.get("add_sub").version == "2"
        assert models.get("add_sub") is models.get("add_sub", "2")
        await models.unload("add_sub")
        with pytest.raises(ModelNotFoundError, match="unknown model 'add_sub'"):
            models.get("add_sub")
        await models.close()
