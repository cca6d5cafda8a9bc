"""Checks shared by the tests of committed and freshly trained repository entries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.config import DATATYPES, ModelConfig, load_model_config

ONNX_TYPES = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
}


def session(entry: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(entry / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def card(entry: Path) -> dict:
    return json.loads((entry / "model_card.json").read_text(encoding="utf-8"))


def check_entry(entry: Path) -> ModelConfig:
    """config.yaml parses with the server's schema and agrees with the ONNX graph; assets exist."""
    config = load_model_config(entry)
    model = onnx.load(str(entry / "1" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    for specs, values in ((config.inputs, model.graph.input), (config.outputs, model.graph.output)):
        graph = {v.name: v.type.tensor_type for v in values}
        assert [s.name for s in specs] == list(graph), f"{entry.name}: config names != graph names"
        for spec in specs:
            tensor = graph[spec.name]
            assert ONNX_TYPES[tensor.elem_type] == spec.datatype and spec.datatype in DATATYPES
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            assert dims[0] == -1, f"{entry.name}: {spec.name} needs a dynamic batch axis"
            assert tuple(dims[1:]) == spec.dims, f"{entry.name}: {spec.name} dims {dims[1:]} != {spec.dims}"
    assert config.max_batch_size > 0
    if config.labels:
        labels = (entry / config.labels).read_text(encoding="utf-8").splitlines()
        assert len(labels) == config.outputs[0].dims[-1]
    if config.generation and config.generation.step_model:
        onnx.checker.check_model(str(entry / "1" / config.generation.step_model), full_check=True)
    if config.text:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(entry / config.text.tokenizer))
        assert tokenizer.id_to_token(config.text.pad_id) is not None
    return config


def reference_parity(entry: Path) -> float:
    """Max |ONNX Runtime - Keras| on the held-out examples whose Keras outputs were saved at export time."""
    reference = np.load(entry / "parity_reference.npz")
    inputs = {k.removeprefix("input_"): reference[k] for k in reference.files if k.startswith("input_")}
    outputs = session(entry).run(None, inputs)[0]
    if "last_position" in reference.files:
        outputs = outputs[np.arange(len(outputs)), reference["last_position"]]
    return float(np.max(np.abs(outputs - reference["expected"])))


def step_parity_on_reference(entry: Path) -> float:
    """Max |incremental decoding with the step model - model.onnx| at every real position of the committed
    held-out rows (prefill, then one token at a time; see training/step_parity.py)."""
    from training.step_parity import step_parity

    config = load_model_config(entry)
    assert config.generation is not None and config.generation.step_model
    reference = np.load(entry / "parity_reference.npz")
    inputs = {k.removeprefix("input_"): reference[k] for k in reference.files if k.startswith("input_")}
    full = session(entry)
    expected = np.concatenate(
        [
            full.run(None, {k: v[i : i + 20] for k, v in inputs.items()})[0]
            for i in range(0, len(inputs["token_ids"]), 20)
        ]
    )
    step = ort.InferenceSession(str(entry / "1" / config.generation.step_model), providers=["CPUExecutionProvider"])
    return step_parity(step, inputs, expected, config.generation.context_length)
