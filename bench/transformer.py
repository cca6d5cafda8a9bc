"""A stand-in for models/textgen_transformer when it is missing: same shape, random weights.

A decoder-only Transformer written with `onnx.helper` (token + learned position embeddings, pre-LayerNorm
blocks with causal self-attention that also masks right padding, a tanh-GELU MLP, logits at every
position), d_model 128, 4 heads, 3 layers, context 128, vocabulary 2048 (the committed model has 4 layers, a
context of 256 and a vocabulary of 4,096: `training/textgen_settings.py`), and a byte-level BPE tokenizer trained
on the standard library's documentation. Its text is noise, and its steps cost somewhat less than the real
model's; the generation benchmark uses it only when the real model is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

D_MODEL, HEADS, LAYERS, CONTEXT, VOCAB = 128, 4, 3, 128, 2048


class _Graph:
    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def weight(self, *shape: int, scale: float = 0.02) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32), "w")

    def op(self, kind: str, *inputs: str, **attrs: object) -> str:
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def i64(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64), "i")

    def layer_norm(self, x: str) -> str:
        ones, zeros = np.ones(D_MODEL, np.float32), np.zeros(D_MODEL, np.float32)
        return self.op("LayerNormalization", x, self.const(ones), self.const(zeros), axis=-1, epsilon=1e-5)

    def dense(self, x: str, n_in: int, n_out: int) -> str:
        return self.op("Add", self.op("MatMul", x, self.weight(n_in, n_out)), self.const(np.zeros(n_out, np.float32)))

    def gelu(self, x: str) -> str:
        """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
        cube = self.op("Mul", self.op("Mul", x, x), x)
        inner = self.op("Add", x, self.op("Mul", cube, self.const(np.float32(0.044715))))
        t = self.op("Tanh", self.op("Mul", inner, self.const(np.float32(np.sqrt(2 / np.pi)))))
        return self.op(
            "Mul", self.op("Mul", x, self.const(np.float32(0.5))), self.op("Add", t, self.const(np.float32(1)))
        )


def _attention(g: _Graph, x: str, bias: str, batch_len: str) -> str:
    head_dim = D_MODEL // HEADS
    qkv = g.op(
        "Reshape", g.dense(x, D_MODEL, 3 * D_MODEL), g.op("Concat", batch_len, g.i64(3, HEADS, head_dim), axis=0)
    )
    qkv = g.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", qkv, g.const(np.int64(i)), axis=0) for i in range(3))
    scores = g.op(
        "Mul", g.op("MatMul", q, g.op("Transpose", k, perm=[0, 1, 3, 2])), g.const(np.float32(head_dim**-0.5))
    )
    weights = g.op("Softmax", g.op("Add", scores, bias), axis=-1)
    context = g.op("Transpose", g.op("MatMul", weights, v), perm=[0, 2, 1, 3])
    merged = g.op("Reshape", context, g.op("Concat", batch_len, g.i64(D_MODEL), axis=0))
    return g.dense(merged, D_MODEL, D_MODEL)


def build_onnx(path: Path, seed: int = 0) -> None:
    g = _Graph(seed)
    shape = g.op("Shape", "token_ids")
    batch_len = g.op("Slice", shape, g.i64(0), g.i64(2))
    length = g.op("Squeeze", g.op("Slice", shape, g.i64(1), g.i64(2)), g.i64(0))
    positions = g.op("Range", g.const(np.int64(0)), length, g.const(np.int64(1)))
    x = g.op(
        "Add",
        g.op("Gather", g.weight(VOCAB, D_MODEL), "token_ids"),
        g.op("Gather", g.weight(CONTEXT, D_MODEL), positions),
    )
    causal = g.op("GreaterOrEqual", g.op("Unsqueeze", positions, g.i64(1)), g.op("Unsqueeze", positions, g.i64(0)))
    keys = g.op("Unsqueeze", g.op("Cast", "attention_mask", to=TensorProto.BOOL), g.i64(1, 2))
    allowed = g.op("And", g.op("Unsqueeze", causal, g.i64(0, 1)), keys)
    bias = g.op("Where", allowed, g.const(np.float32(0)), g.const(np.float32(-1e9)))
    for _ in range(LAYERS):
        x = g.op("Add", x, _attention(g, g.layer_norm(x), bias, batch_len))
        hidden = g.gelu(g.dense(g.layer_norm(x), D_MODEL, 4 * D_MODEL))
        x = g.op("Add", x, g.dense(hidden, 4 * D_MODEL, D_MODEL))
    g.nodes.append(helper.make_node("MatMul", [g.layer_norm(x), g.weight(D_MODEL, VOCAB, scale=1.0)], ["logits"]))
    graph = helper.make_graph(
        g.nodes,
        "textgen_standin",
        [
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", VOCAB])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_tokenizer() -> Tokenizer:
    from pydoc_data.topics import topics

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|pad|>", "<|bos|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(topics.values()), trainer)
    return tokenizer


def write_standin(root: Path, name: str = "textgen_transformer") -> Path:
    """models/<name>/ with config.yaml, tokenizer.json and 1/model.onnx, shaped like the trained model."""
    folder = root / name
    build_onnx(folder / "1" / "model.onnx")
    (folder / "tokenizer.json").write_text(build_tokenizer().to_str(), encoding="utf-8")
    config = {
        "task": "text_generation",
        "max_batch_size": 16,
        "inputs": [
            {"name": "token_ids", "datatype": "INT64", "dims": [-1], "pad_value": 0},
            {"name": "attention_mask", "datatype": "INT64", "dims": [-1], "pad_value": 0},
        ],
        "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, VOCAB]}],
        "text": {"tokenizer": "tokenizer.json", "max_length": CONTEXT, "pad_id": 0},
        "generation": {"context_length": CONTEXT, "max_active_sequences": 16, "eos_id": 2, "bos_id": 1},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return folder
