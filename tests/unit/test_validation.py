"""Request tensors checked against the model config before they are queued; each error names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from service.config import ModelConfig, parse_model_config
from service.errors import InvalidInputError
from service.validation import datatype_of, validate_inputs, validate_outputs

CONFIG = parse_model_config(
    {
        "max_batch_size": 4,
        "inputs": [
            {"name": "ids", "datatype": "INT64", "dims": [-1]},
            {"name": "text", "datatype": "BYTES", "dims": [1]},
        ],
        "outputs": [{"name": "out", "datatype": "FP32", "dims": [2]}],
    },
    "m",
)
UNBATCHED = parse_model_config(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [2, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "dims": [2, 3]}],
    },
    "u",
)


def text(*items: bytes) -> np.ndarray:
    arr = np.empty((len(items), 1), dtype=object)
    arr[:, 0] = list(items)
    return arr


def ids(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.int64)


def error(config: ModelConfig, inputs: dict[str, np.ndarray]) -> str:
    with pytest.raises(InvalidInputError) as info:
        validate_inputs(config, "m", inputs)
    return info.value.message


def test_valid_inputs_pass() -> None:
    validate_inputs(CONFIG, "m", {"ids": ids(2, 7), "text": text(b"a", "é".encode())})
    validate_inputs(UNBATCHED, "u", {"x": np.zeros((2, 3), dtype=np.float32)})


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({"ids": ids(1, 3), "text": text(b"a"), "extra": ids(1)}, "model 'm' has no input named 'extra'"),
        ({"ids": ids(1, 3)}, "model 'm' needs input 'text', which the request does not carry"),
        (
            {"ids": ids(1, 3).astype(np.int32), "text": text(b"a")},
            "'ids' of model 'm' must be INT64, the request sent INT32",
        ),
        ({"ids": ids(3), "text": text(b"a")}, "must have shape [-1, -1] (-1: any size), the request sent [3]"),
        (
            {"ids": ids(1, 3), "text": np.array([[b"a", b"b"]], dtype=object)},
            "'text' of model 'm' must have shape [-1, 1]",
        ),
        ({"ids": ids(1, 0), "text": text(b"a")}, "input 'ids' has an empty dimension: shape [1, 0]"),
        ({"ids": ids(2, 3), "text": text(b"a")}, "all inputs must have the same batch size; 'text' has 1, others 2"),
        ({"ids": ids(5, 3), "text": text(*[b"a"] * 5)}, "batch size 5 exceeds max_batch_size 4 of model 'm'"),
        ({"ids": ids(1, 3), "text": text(b"\xff\xfe")}, "input 'text' of model 'm': element 0 is not valid UTF-8"),
    ],
)
def test_invalid_inputs_named(inputs: dict[str, np.ndarray], fragment: str) -> None:
    assert fragment in error(CONFIG, inputs)


def test_unbatched_model_checks_full_shape() -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_inputs(UNBATCHED, "u", {"x": np.zeros((1, 2, 3), dtype=np.float32)})
    assert "must have shape [2, 3] (-1: any size), the request sent [1, 2, 3]" in info.value.message


def test_unknown_output_named() -> None:
    validate_outputs(CONFIG, "m", ["out"])
    with pytest.raises(InvalidInputError, match=r"model 'm' has no output named 'nope'; its outputs are \['out'\]"):
        validate_outputs(CONFIG, "m", ["out", "nope"])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.float32, "FP32"),
        (np.float16, "FP16"),
        (np.int64, "INT64"),
        (np.uint8, "UINT8"),
        (np.bool_, "BOOL"),
        (object, "BYTES"),
    ],
)
def test_datatype_of(dtype: type, expected: str) -> None:
    assert datatype_of(np.zeros(2, dtype=dtype)) == expected
