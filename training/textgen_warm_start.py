"""Continued training of textgen_transformer (`TextgenSettings.init_from`): loading a trained entry's
model.onnx weights into the Keras model, and the model card's account of the run it continued from."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from training.export import session
from training.models import CausalSelfAttention, TokenAndPositionEmbedding
from training.textgen_settings import TextgenSettings


def load_onnx_weights(model: keras.Model, onnx_path: Path, check: dict[str, np.ndarray]) -> float:
    """Load the weights of a model.onnx exported from `build_transformer` (same spec) into `model`.

    tf2onnx keeps each variable as an initializer named after its layer's scope: `<layer>_1/.../ReadVariableOp:0`
    for kernels, biases and embeddings, `<ln>_1/Reshape:0` (the Mul: gamma) and `Reshape_1:0` (the Add: beta)
    for LayerNorms. The MLP Dense layers are not scoped by block: theirs are `dense_<n>_1`, in block order by n.
    Returns the max |logits difference| between the loaded Keras model and ONNX Runtime on (8 rows of) `check`,
    and raises if it is over 1e-3, so a wrong mapping cannot pass silently."""
    import re

    import onnx
    from onnx import numpy_helper

    arrays = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    variables = {n: a for n, a in arrays.items() if n.endswith("ReadVariableOp:0")}

    def one(names: list[str], what: str) -> str:
        if len(names) != 1:
            raise ValueError(f"{onnx_path}: {len(names)} initializers for {what}: {names}")
        return names[0]

    def shaped(shape: tuple[int, ...], scope: str = "") -> str:
        return one([n for n, a in variables.items() if a.shape == shape and scope in n], f"{scope} {shape}")

    def dense(kernel: str) -> list[np.ndarray]:
        return [variables[kernel], variables[kernel.replace("/Cast/ReadVariableOp:0", "/BiasAdd/ReadVariableOp:0")]]

    mlp: dict[tuple[int, ...], list[str]] = {}
    for name, a in variables.items():
        found = re.search(r"/dense_(\d+)_1/Cast/ReadVariableOp:0$", name)
        if found and "_attention_1/" not in name:
            mlp.setdefault(a.shape, []).append(name)
    for names in mlp.values():
        names.sort(key=lambda n: int(re.search(r"/dense_(\d+)_1/", n).group(1)))
    seen: dict[tuple[int, ...], int] = {}
    for layer in model.layers:
        if isinstance(layer, TokenAndPositionEmbedding):
            layer.tokens.set_weights([variables[shaped((layer.vocab_size, layer.d_model))]])
            layer.positions.set_weights([variables[shaped((layer.context_length, layer.d_model))]])
        elif isinstance(layer, keras.layers.LayerNormalization):
            layer.set_weights(
                [
                    arrays[one([n for n in arrays if n.endswith(f"/{layer.name}_1/{r}:0")], layer.name)].reshape(-1)
                    for r in ("Reshape", "Reshape_1")
                ]
            )
        elif isinstance(layer, CausalSelfAttention):
            d, scope = layer.d_model, f"/{layer.name}_1/"
            layer.qkv.set_weights(dense(shaped((d, 3 * d), scope)))
            layer.out.set_weights(dense(shaped((d, d), scope)))
        elif isinstance(layer, keras.layers.Dense) and layer.name == "logits":
            layer.set_weights(dense(shaped(tuple(layer.kernel.shape), "/logits_1/")))
        elif isinstance(layer, keras.layers.Dense):
            shape = tuple(layer.kernel.shape)
            index = seen[shape] = seen.get(shape, -1) + 1
            layer.set_weights(dense(mlp[shape][index]))
        elif layer.weights:
            raise ValueError(f"load_onnx_weights: no mapping for layer {layer.name}")
    rows = {k: v[:8] for k, v in check.items()}
    expected = session(onnx_path).run(None, rows)[0]
    diff = float(np.max(np.abs(np.asarray(model(rows, training=False)) - expected)))
    if diff > 1e-3:
        raise RuntimeError(f"{onnx_path}: weights loaded into Keras differ from ONNX Runtime by {diff:.3g}")
    return diff


def warm_start(settings: TextgenSettings, result) -> dict:
    """For a continued run: what it continued from (that entry's own training section) and the totals."""
    if settings.init_from is None:
        return {}
    earlier = json.loads((settings.init_from / "model_card.json").read_text())["training"]
    return {
        "continued_from": {
            "entry": settings.init_from.name,
            "learning_rate": f"{settings.continue_learning_rate} peak for the continued passes (same warm-up and "
            "cosine decay to a tenth)",
            "earlier_training": earlier,
        },
        "total_epochs": earlier.get("total_epochs", earlier["epochs_run"]) + result.epochs_run,
        "total_seconds": round(earlier.get("total_seconds", earlier["seconds"]) + result.seconds, 1),
    }
