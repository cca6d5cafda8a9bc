"""Model metadata, model config and the repository index, read through tritonclient."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException


def tensors(items: object) -> list[tuple[str, str, list[int]]]:
    return [(t.name, t.datatype, list(t.shape)) for t in items]  # type: ignore[attr-defined]


def test_model_metadata_has_a_variable_batch_dim(client: tc.InferenceServerClient) -> None:
    meta = client.get_model_metadata("add_sub")
    assert meta.name == "add_sub"
    assert list(meta.versions) == ["1"]
    assert meta.platform == "onnxruntime_onnx"
    assert tensors(meta.inputs) == [("INPUT0", "FP32", [-1, 4]), ("INPUT1", "FP32", [-1, 4])]
    assert tensors(meta.outputs) == [("OUTPUT0", "FP32", [-1, 4]), ("OUTPUT1", "FP32", [-1, 4])]


@pytest.mark.parametrize(
    ("model", "inputs", "outputs"),
    [
        (
            "token_sum",
            [("token_ids", "INT64", [-1, -1])],
            [("total", "INT64", [-1, 1]), ("doubled", "INT64", [-1, -1])],
        ),
        ("bytes_identity", [("text", "BYTES", [-1, 1])], [("echo", "BYTES", [-1, 1])]),
        ("fp16_double", [("x", "FP16", [-1, 3])], [("y", "FP16", [-1, 3])]),
    ],
)
def test_model_metadata_datatypes(client: tc.InferenceServerClient, model: str, inputs: list, outputs: list) -> None:
    meta = client.get_model_metadata(model, "1")
    assert tensors(meta.inputs) == inputs
    assert tensors(meta.outputs) == outputs


def test_model_config(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("add_sub").config
    assert config.name == "add_sub"
    assert config.platform == "onnxruntime_onnx" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("INPUT0", mc.TYPE_FP32, [4]),
        ("INPUT1", mc.TYPE_FP32, [4]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("OUTPUT0", mc.TYPE_FP32, [4]),
        ("OUTPUT1", mc.TYPE_FP32, [4]),
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 1024
    assert list(config.version_policy.specific.versions) == [1]
    assert config.instance_group[0].count == 1


def test_model_config_variable_dims_and_types(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("token_sum").config
    assert config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("token_ids", mc.TYPE_INT64, [-1])]
    assert [list(o.dims) for o in config.output] == [[1], [-1]]
    assert client.get_model_config("bytes_identity").config.input[0].data_type == mc.TYPE_STRING
    assert client.get_model_config("fp16_double").config.input[0].data_type == mc.TYPE_FP16


def test_model_config_as_json(client: tc.InferenceServerClient) -> None:
    config = client.get_model_config("fp16_double", as_json=True)["config"]
    assert config["max_batch_size"] == 4
    assert config["input"][0] == {"name": "x", "data_type": "TYPE_FP16", "dims": ["3"]}


def test_repository_index(client: tc.InferenceServerClient) -> None:
    index = client.get_model_repository_index().models
    assert [(m.name, m.version, m.state, m.reason) for m in index] == [
        (name, "1", "READY", "") for name in ("add_sub", "bytes_identity", "fp16_double", "token_sum")
    ]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c: c.get_model_metadata("nope"), "unknown model 'nope'"),
        (lambda c: c.get_model_metadata("add_sub", "3"), "model 'add_sub' has no version '3' loaded"),
        (lambda c: c.get_model_config("nope"), "unknown model 'nope'"),
        (lambda c: c.get_model_metadata("../add_sub"), "unknown model '../add_sub'"),
    ],
)
def test_metadata_of_unknown_model_or_version(client: tc.InferenceServerClient, call: object, fragment: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        call(client)  # type: ignore[operator]
    assert info.value.status() == "StatusCode.NOT_FOUND"
    assert fragment in info.value.message()


def test_statistics_count_inferences(client: tc.InferenceServerClient) -> None:
    x = tc.InferInput("x", [2, 3], "FP16")
    x.set_data_from_numpy(np.ones((2, 3), dtype=np.float16))
    before = client.get_inference_statistics("fp16_double").model_stats[0]
    client.infer("fp16_double", [x])
    after = client.get_inference_statistics("fp16_double").model_stats[0]
    assert (after.name, after.version) == ("fp16_double", "1")
    assert after.inference_count == before.inference_count + 2
    assert after.execution_count == before.execution_count + 1
    assert after.inference_stats.success.count == before.inference_stats.success.count + 1
