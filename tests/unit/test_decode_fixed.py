"""The one-pass decoding of V2 requests whose tensors match a model's fixed signature (`RequestLimits.fixed`):
whatever it accepts, the full path (declared-shape limits, decoding, `validate_inputs`, `check_values`,
`validate_outputs`) accepts as the same arrays; whatever it declines goes through the full path, so every
refusal keeps its message."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.config import ModelConfig, parse_model_config
from service.errors import InvalidInputError
from service.grpc import convert
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.validation import RequestLimits, validate_inputs, validate_outputs

IMAGE = parse_model_config(
    {
        "max_batch_size": 8,
        "inputs": [
            {"name": "image", "datatype": "FP32", "dims": [4, 4, 1]},
            {"name": "scale", "datatype": "INT8", "dims": [2]},
        ],
        "outputs": [{"name": "probs", "datatype": "FP32", "dims": [10]}],
    },
    "img",
)
UNBATCHED = parse_model_config(
    {
        "inputs": [{"name": "x", "datatype": "FP64", "dims": [2, 3]}],
        "outputs": [{"name": "y", "datatype": "FP64", "dims": [2, 3]}],
    },
    "u",
)
TIGHT = parse_model_config(  # max_input_elements lets 3 images of 16 through, not max_batch_size's 8
    {
        "max_batch_size": 8,
        "limits": {"max_input_elements": 50},
        "inputs": [{"name": "image", "datatype": "FP32", "dims": [4, 4, 1]}],
        "outputs": [{"name": "probs", "datatype": "FP32", "dims": [10]}],
    },
    "tight",
)


def request(*tensors: tuple[str, str, list[int], bytes], **fields: object) -> pb.ModelInferRequest:
    out = pb.ModelInferRequest(model_name="img", raw_input_contents=[raw for *_, raw in tensors], **fields)
    for name, datatype, shape, _ in tensors:
        out.inputs.add(name=name, datatype=datatype, shape=shape)
    return out


def image(rows: int, dtype: str = "float32", datatype: str = "FP32") -> tuple[str, str, list[int], bytes]:
    data = np.arange(rows * 16, dtype=dtype).reshape(rows, 4, 4, 1)
    return ("image", datatype, [rows, 4, 4, 1], data.tobytes())


def scale(rows: int) -> tuple[str, str, list[int], bytes]:
    return ("scale", "INT8", [rows, 2], np.arange(rows * 2, dtype=np.int8).tobytes())


def full_path(config: ModelConfig, req: pb.ModelInferRequest) -> dict[str, np.ndarray] | str:
    """What the full path makes of `req`: its arrays, or its error's message."""
    limits = dataclasses.replace(RequestLimits.resolve(config.name, config), fixed=None)
    try:
        decoded = convert.decode_infer_request(req, None, limits)
        validate_inputs(config, config.name, decoded.inputs)
        limits.check_values(decoded.inputs)
        validate_outputs(config, config.name, decoded.outputs)
    except InvalidInputError as err:
        return err.message
    assert not decoded.validated
    return decoded.inputs


def both_paths(config: ModelConfig, req: pb.ModelInferRequest) -> tuple[dict[str, np.ndarray] | str, bool]:
    """The decoder with the model's fixed signature, checked to agree with the full path; and whether it took
    the one-pass path."""
    limits = RequestLimits.resolve(config.name, config)
    assert limits.fixed is not None
    reference = full_path(config, req)
    try:
        decoded = convert.decode_infer_request(req, None, limits)
    except InvalidInputError as err:
        assert err.message == reference
        return reference, False
    if not decoded.validated:  # declined: the pipeline validates it, as before
        return reference, False
    assert not isinstance(reference, str), f"the one-pass path accepted what the full path refuses: {reference}"
    assert decoded.inputs.keys() == reference.keys()
    for name, arr in decoded.inputs.items():
        assert arr.dtype == reference[name].dtype and arr.shape == reference[name].shape
        np.testing.assert_array_equal(arr, reference[name])
    return decoded.inputs, True


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_matching_tensors_decode_in_one_pass_to_the_full_paths_arrays(rows: int) -> None:
    inputs, fast = both_paths(IMAGE, request(image(rows), scale(rows)))
    assert fast
    assert not isinstance(inputs, str) and inputs["image"].shape == (rows, 4, 4, 1)
    _, fast = both_paths(IMAGE, request(scale(rows), image(rows)))  # in either order
    assert fast


def test_a_model_without_a_batch_dim_decodes_in_one_pass() -> None:
    x = np.arange(6, dtype=np.float64).reshape(2, 3)
    inputs, fast = both_paths(UNBATCHED, request(("x", "FP64", [2, 3], x.tobytes())))
    assert fast and not isinstance(inputs, str)
    np.testing.assert_array_equal(inputs["x"], x)


DECLINED = {
    "wrong datatype": request(image(1, "float64", "FP64"), scale(1)),
    "batch over max_batch_size": request(image(9), scale(9)),
    "batch 0": request(("image", "FP32", [0, 4, 4, 1], b""), ("scale", "INT8", [0, 2], b"")),
    "batches that differ": request(image(2), scale(1)),
    "wrong dims": request(("image", "FP32", [1, 16, 1], np.zeros(16, np.float32).tobytes()), scale(1)),
    "negative batch": request(("image", "FP32", [-1, 4, 4, 1], np.zeros(16, np.float32).tobytes()), scale(1)),
    "no batch dim": request(("image", "FP32", [4, 4, 1], np.zeros(16, np.float32).tobytes()), scale(1)),
    "bytes short": request(("image", "FP32", [1, 4, 4, 1], np.zeros(15, np.float32).tobytes()), scale(1)),
    "bytes over": request(("image", "FP32", [1, 4, 4, 1], np.zeros(17, np.float32).tobytes()), scale(1)),
    "missing input": request(image(1)),
    "unknown input": request(image(1), scale(1), ("extra", "FP32", [1], b"\0" * 4)),
    "input twice": request(image(1), image(1)),
    "an output asked for that the model lacks": request(
        image(1), scale(1), outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]
    ),
    "an output asked for": request(
        image(1), scale(1), outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="probs")]
    ),
}


@pytest.mark.parametrize("case", DECLINED)
def test_anything_else_takes_the_full_path(case: str) -> None:
    _, fast = both_paths(IMAGE, DECLINED[case])
    assert not fast


def test_contents_parameters_and_raw_counts_take_the_full_path() -> None:
    mixed = request(image(1), scale(1))
    mixed.inputs[1].contents.int_contents.extend([1, 2])
    refused, fast = both_paths(IMAGE, mixed)
    assert not fast and "contents field must not be specified" in str(refused)
    tensor_parameter = request(image(1), scale(1))
    tensor_parameter.inputs[0].parameters["binary_data_size"].int64_param = 64
    assert both_paths(IMAGE, tensor_parameter)[1] is False
    timeout = request(image(1), scale(1))
    timeout.parameters["timeout"].int64_param = 1_000_000
    assert both_paths(IMAGE, timeout)[1] is False
    short = request(image(1), scale(1))
    del short.raw_input_contents[1]
    assert both_paths(IMAGE, short) == ("1 raw_input_contents for 2 inputs; send one per input, or none", False)


def test_the_element_bound_limits_the_batch_the_one_pass_path_takes() -> None:
    limits = RequestLimits.resolve("tight", TIGHT)
    assert limits.fixed is not None and limits.fixed["image"].max_rows == 3
    assert both_paths(TIGHT, request(image(3)))[1]
    refused, fast = both_paths(TIGHT, request(image(4)))
    assert not fast and "at most 50 elements per input" in str(refused)


def test_variable_dims_text_and_value_ranges_leave_no_fixed_signature() -> None:
    def fixed(inputs: list[dict[str, object]]) -> object:
        config = parse_model_config(
            {"max_batch_size": 4, "inputs": inputs, "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}]}, "m"
        )
        return RequestLimits.resolve("m", config).fixed

    assert fixed([{"name": "x", "datatype": "FP32", "dims": [3]}]) is not None
    assert fixed([{"name": "x", "datatype": "FP32", "dims": [-1]}]) is None
    assert fixed([{"name": "x", "datatype": "BYTES", "dims": [1]}]) is None
    assert fixed([{"name": "x", "datatype": "INT64", "dims": [3], "value_range": [0, 9]}]) is None
