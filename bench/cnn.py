"""A CIFAR-size CNN built with onnx.helper (random weights), for benchmarks when no trained model is around."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper


def build_cnn(folder: Path, size: int = 32, channels: int = 1, classes: int = 10) -> None:
    """NHWC [batch, 32, 32, 1] → 4 conv layers (32, 32, 64, 64) with pooling → dense 256 → softmax 10."""
    rng = np.random.default_rng(0)
    inits, nodes = [], [helper.make_node("Transpose", ["image"], ["x0"], perm=[0, 3, 1, 2])]

    def weight(name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name))
        return name

    prev, c_in = "x0", channels
    for i, c_out in enumerate((32, 32, 64, 64)):
        w, b = weight(f"w{i}", (c_out, c_in, 3, 3)), weight(f"b{i}", (c_out,))
        nodes += [
            helper.make_node("Conv", [prev, w, b], [f"c{i}"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev, c_in = f"r{i}", c_out
        if i % 2 == 1:
            nodes.append(helper.make_node("MaxPool", [prev], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            prev = f"p{i}"
    flat = 64 * (size // 4) ** 2
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"]),
        helper.make_node("Gemm", ["flat", weight("fc1", (flat, 256)), weight("fb1", (256,))], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", weight("fc2", (256, classes)), weight("fb2", (classes,))], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", size, size, channels])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    config = {
        "max_batch_size": 64,
        "inputs": [{"name": "image", "datatype": "FP32", "dims": [size, size, channels]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "dims": [classes]}],
        "dynamic_batching": {"max_queue_delay_ms": 0},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
