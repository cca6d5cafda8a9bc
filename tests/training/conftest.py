"""Fixtures for the training tests: the committed model repository entries and what they should hold."""

from __future__ import annotations

from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "models"
COMMITTED = ("digits_cnn", "sentiment_rnn", "textgen_transformer")


@pytest.fixture(params=COMMITTED)
def committed_entry(request: pytest.FixtureRequest) -> Path:
    entry = MODELS / request.param
    if not (entry / "1" / "model.onnx").exists():
        pytest.fail(f"{entry} is missing; run `make train` (deepserve-train all --output models)")
    return entry


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS
