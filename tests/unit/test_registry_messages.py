"""NOT_FOUND messages of the registry stay short: the client's name is a bounded prefix, the list of
models a bounded list."""

from __future__ import annotations

from typing import Any

import pytest

from service.errors import ModelNotFoundError
from service.registry import MAX_LISTED, ModelRegistry


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
