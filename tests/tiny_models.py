"""Tiny ONNX models built with `onnx.helper`, and model repositories made of them (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_sub(path: Path, width: int = 4) -> None:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1; FP32 [batch, width]."""
    t = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", width])  # noqa: E731
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "add_sub",
        [t("INPUT0"), t("INPUT1")],
        [t("OUTPUT0"), t("OUTPUT1")],
    )
    _save(graph, path)


def token_sum(path: Path) -> None:
    """INT64 token_ids [batch, seq] → total [batch, 1] (sum) and doubled [batch, seq] (ids times 2)."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["token_ids", "axes"], ["total"], keepdims=1),
            helper.make_node("Add", ["token_ids", "token_ids"], ["doubled"]),
        ],
        "token_sum",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"])],
        [
            helper.make_tensor_value_info("total", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch", "seq"]),
        ],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    _save(graph, path)


def bytes_identity(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "bytes_identity",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch", 1])],
    )
    _save(graph, path)


def fp16_double(path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        "fp16_double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 3])],
    )
    _save(graph, path)


def slow_matmul(path: Path, repeats: int = 12, width: int = 512) -> None:
    """x [batch, 64, width] through `repeats` matmuls with one weight: tens of ms per run on a CPU."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, prev = [], "x"
    for i in range(repeats):
        out = "y" if i == repeats - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "w"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, width])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    _save(graph, path)


def _write(root: Path, name: str, config: dict, build, versions: tuple[int, ...] = (1,)) -> None:  # type: ignore[no-untyped-def]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for v in versions:
        build(folder / str(v) / "model.onnx")


CONFIGS: dict[str, tuple[dict, object]] = {
    "add_sub": (
        {
            "max_batch_size": 8,
            "inputs": [
                {"name": "INPUT0", "datatype": "FP32", "dims": [4]},
                {"name": "INPUT1", "datatype": "FP32", "dims": [4]},
            ],
            "outputs": [
                {"name": "OUTPUT0", "datatype": "FP32", "dims": [4]},
                {"name": "OUTPUT1", "datatype": "FP32", "dims": [4]},
            ],
            "dynamic_batching": {"max_queue_delay_ms": 5},
        },
        add_sub,
    ),
    "token_sum": (
        {
            "max_batch_size": 16,
            "inputs": [{"name": "token_ids", "datatype": "INT64", "dims": [-1], "pad_value": 0}],
            "outputs": [
                {"name": "total", "datatype": "INT64", "dims": [1]},
                {"name": "doubled", "datatype": "INT64", "dims": [-1]},
            ],
            "dynamic_batching": {"max_queue_delay_ms": 5},
        },
        token_sum,
    ),
    "bytes_identity": (
        {
            "max_batch_size": 8,
            "inputs": [{"name": "text", "datatype": "BYTES", "dims": [1]}],
            "outputs": [{"name": "echo", "datatype": "BYTES", "dims": [1]}],
        },
        bytes_identity,
    ),
    "fp16_double": (
        {
            "max_batch_size": 4,
            "inputs": [{"name": "x", "datatype": "FP16", "dims": [3]}],
            "outputs": [{"name": "y", "datatype": "FP16", "dims": [3]}],
        },
        fp16_double,
    ),
    "slow": (
        {
            "max_batch_size": 4,
            "inputs": [{"name": "x", "datatype": "FP32", "dims": [64, 512]}],
            "outputs": [{"name": "y", "datatype": "FP32", "dims": [64, 512]}],
            "dynamic_batching": {"max_queue_delay_ms": 0, "max_queue_size": 8},
        },
        slow_matmul,
    ),
    "slower": (  # hundreds of ms per batch of 4: a queue that stays put while a test looks at it
        {
            "max_batch_size": 4,
            "inputs": [{"name": "x", "datatype": "FP32", "dims": [64, 512]}],
            "outputs": [{"name": "y", "datatype": "FP32", "dims": [64, 512]}],
            "dynamic_batching": {"max_queue_delay_ms": 0, "max_queue_size": 8},
        },
        lambda path: slow_matmul(path, repeats=120),
    ),
}


def make_repository(
    root: Path, names: tuple[str, ...] = ("add_sub", "token_sum", "bytes_identity", "fp16_double")
) -> Path:
    for name in names:
        config, build = CONFIGS[name]
        _write(root, name, config, build)
    return root


def not_onnx(path: Path) -> None:
    """A model.onnx that is not an ONNX model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00not an onnx model")


def make_broken(root: Path, name: str = "broken", part: str = "model") -> Path:
    """A model that fails to load, next to the others in `root`: an add_sub whose model.onnx is not ONNX
    (`part="model"`: the version it would serve, 1, is known), or whose config.yaml has an unknown key
    (`part="config"`: its versions are not)."""
    config, build = CONFIGS["add_sub"]
    if part == "config":
        _write(root, name, {**config, "bogus": 1}, build)
    else:
        _write(root, name, config, not_onnx)
    return root
