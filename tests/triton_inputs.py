"""Inputs the tests send through tritonclient (its gRPC or its HTTP client): the tiny add_sub model's two inputs."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np


def add_sub_inputs(tc: ModuleType, a: np.ndarray) -> list[Any]:
    """INPUT0 and INPUT1 of add_sub, both `a` (FP32), as `tc.InferInput`s (`tc`: tritonclient.grpc or .http)."""
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = tc.InferInput(name, list(a.shape), "FP32")
        tensor.set_data_from_numpy(a)
        inputs.append(tensor)
    return inputs
