"""What the ONNX Runtime layer's tests share: the tiny `add_sub` model's config, with changes."""

from __future__ import annotations

import copy

from service.config import ModelConfig, parse_model_config
from tests.tiny_models import CONFIGS


def add_sub_config(**changes: object) -> ModelConfig:
    data = copy.deepcopy(CONFIGS["add_sub"][0])
    data.update(changes)
    return parse_model_config(data, "add_sub")
