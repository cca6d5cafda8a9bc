"""Keras → ONNX with tf2onnx, then proof that ONNX Runtime computes what Keras computes.

Keras 3 models are wrapped in a `tf.function` with a named input signature (batch and sequence axes
dynamic) and converted with `tf2onnx.convert.from_function`; the graph outputs are then renamed to the
model's output names, checked with `onnx.checker`, and compared with Keras on held-out examples.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """ONNX Runtime disagrees with Keras by more than the tolerance; the export is rejected."""


def input_signature(model: keras.Model) -> list[tf.TensorSpec]:
    """One named spec per model input with every None axis (batch, sequence) left dynamic."""
    return [tf.TensorSpec([None, *t.shape[1:]], tf.as_dtype(t.dtype), name=t.name.split(":")[0]) for t in model.inputs]


def _rename_outputs(proto: onnx.ModelProto, names: Sequence[str]) -> None:
    graph = proto.graph
    for output, new in zip(graph.output, names, strict=True):
        old = output.name
        for node in graph.node:
            node.output[:] = [new if n == old else n for n in node.output]
            node.input[:] = [new if n == old else n for n in node.input]
        output.name = new


def export_onnx(model: keras.Model, path: Path, opset: int = OPSET) -> onnx.ModelProto:
    """Convert `model` to ONNX at `path`; inputs keep the Keras input names, outputs the output layer names."""
    signature = input_signature(model)
    names = [spec.name for spec in signature]

    @tf.function(input_signature=signature)
    def forward(*tensors):
        inputs = dict(zip(names, tensors, strict=True)) if len(tensors) > 1 else tensors[0]
        return model(inputs, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    _rename_outputs(proto, [name.split("/")[0] for name in model.output_names])
    proto.producer_name = "deepserve-train (tf2onnx)"
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(sess: ort.InferenceSession, inputs: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Run the first output over `inputs` in batches (all arrays share the first axis)."""
    count = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, count, batch_size):
        feed = {name: value[start : start + batch_size] for name, value in inputs.items()}
        parts.append(sess.run(None, feed)[0])
    return np.concatenate(parts)


def keras_predict(model: keras.Model, inputs: Mapping[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    feed = dict(inputs) if len(inputs) > 1 else next(iter(inputs.values()))
    return np.asarray(model.predict(feed, batch_size=batch_size, verbose=0))


def check_parity(
    model: keras.Model, path: Path, inputs: Mapping[str, np.ndarray], tolerance: float = PARITY_TOLERANCE
) -> tuple[float, np.ndarray]:
    """Max |ONNX Runtime - Keras| over `inputs` and Keras' outputs; raises ParityError above `tolerance`."""
    expected = keras_predict(model, inputs)
    actual = onnx_predict(session(path), inputs)
    if expected.shape != actual.shape:
        raise ParityError(f"{path}: ONNX output shape {actual.shape} != Keras {expected.shape}")
    diff = float(np.max(np.abs(expected - actual)))
    if not diff <= tolerance:
        raise ParityError(f"{path}: ONNX Runtime differs from Keras by {diff:.3g} > {tolerance:g}")
    return diff, expected


def parity_reference(inputs: Mapping[str, np.ndarray], expected: np.ndarray, **extra: np.ndarray) -> bytes:
    """An .npz of held-out inputs and Keras' outputs, committed so tests can re-check the ONNX file later."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"input_{k}": v for k, v in inputs.items()}, expected=expected, **extra)
    return buffer.getvalue()
