"""Triton's example models `simple`, `simple_int8`, `simple_string` and `simple_identity`, rebuilt with
`onnx.helper` under the names, datatypes and dims Triton's example clients expect (max_batch_size 8), with
Triton's configs: no warm-up section.

`simple_string` takes the decimal text of integers, casts it to INT32, adds and subtracts, and casts the
results back to text, as Triton's own model does: its outputs are BYTES strings such as b"-1". It cannot
take the default warm-up's empty strings (ONNX Runtime's Cast calls std::stoll, which throws), so it loads
with a warning; `SIMPLE_STRING_WARMUP` is a warm-up it can take.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from onnx import TensorProto, helper

from tests.tiny_models import _save

WIDTH = 16
_TYPES = {"INT32": TensorProto.INT32, "INT8": TensorProto.INT8, "BYTES": TensorProto.STRING}


def add_sub_graph(path: Path, datatype: str) -> None:
    """OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 on [batch, 16]; BYTES goes through INT32."""
    elem = _TYPES[datatype]
    tensor = lambda name: helper.make_tensor_value_info(name, elem, ["batch", WIDTH])  # noqa: E731
    if datatype == "BYTES":
        nodes = [
            helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
            helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Sub", ["a", "b"], ["difference"]),
            helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
            helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
        ]
    else:
        nodes = [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ]
    inputs, outputs = [tensor("INPUT0"), tensor("INPUT1")], [tensor("OUTPUT0"), tensor("OUTPUT1")]
    _save(helper.make_graph(nodes, f"simple_{datatype.lower()}", inputs, outputs), path)


def identity_graph(path: Path) -> None:
    tensor = lambda name: helper.make_tensor_value_info(name, TensorProto.STRING, ["batch", "n"])  # noqa: E731
    nodes = [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])]
    _save(helper.make_graph(nodes, "simple_identity", [tensor("INPUT0")], [tensor("OUTPUT0")]), path)


def add_sub_config(datatype: str) -> dict:
    tensors = lambda *names: [{"name": n, "datatype": datatype, "dims": [WIDTH]} for n in names]  # noqa: E731
    return {"max_batch_size": 8, "inputs": tensors("INPUT0", "INPUT1"), "outputs": tensors("OUTPUT0", "OUTPUT1")}


SIMPLE_STRING_WARMUP = [
    {"name": "random numbers", "batch_size": 8, "inputs": {"INPUT0": {"data": "random"}, "INPUT1": {"data": "random"}}}
]


def write_triton_examples(root: Path) -> Path:
    """A repository of Triton's four example models."""
    models: dict[str, tuple[dict, object]] = {
        "simple": (add_sub_config("INT32"), lambda p: add_sub_graph(p, "INT32")),
        "simple_int8": (add_sub_config("INT8"), lambda p: add_sub_graph(p, "INT8")),
        "simple_string": (add_sub_config("BYTES"), lambda p: add_sub_graph(p, "BYTES")),
        "simple_identity": (
            {
                "max_batch_size": 8,
                "inputs": [{"name": "INPUT0", "datatype": "BYTES", "dims": [-1]}],
                "outputs": [{"name": "OUTPUT0", "datatype": "BYTES", "dims": [-1]}],
            },
            identity_graph,
        ),
    }
    for name, (config, build) in models.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        build(root / name / "1" / "model.onnx")  # type: ignore[operator]
    return root
