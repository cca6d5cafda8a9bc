"""The KV-cache decoding graph (`decoder_step.onnx`) of a trained textgen transformer, built from its model.onnx.

The full model (`model.onnx`, exported from Keras by tf2onnx) recomputes every position each step. This
module reads its trained weights back out of that graph and writes a second graph, with `onnx.helper`, that
computes only the new tokens of each sequence against a cache of the keys and values of the earlier ones:

    inputs   token_ids    INT64 [batch, new]       the tokens not yet in the cache (new = 1 when decoding)
             positions    INT64 [batch, new]       their positions (0 .. context_length - 1)
             past_mask    INT64 [batch, past]      1 where a cache slot holds a real earlier token
             past_key_<l>, past_value_<l>  FP32 [batch, heads, past, head_dim], one pair per layer l
    outputs  logits       FP32 [batch, new, vocab] next-token logits at every new position
             new_key_<l>, new_value_<l>    FP32 [batch, heads, new, head_dim], to append to the cache

Each new token attends to the valid past slots and to the new tokens at or before it (causal), so one
graph serves both prefill (new = prompt length, past = 0) and decoding (new = 1). Per-layer cache tensors
(rather than one stacked [layers, ...] tensor) let the server feed views of its own cache buffers with no
copy. The weights are found by the graph's structure, not by names: in topological order, the matrix
products with a constant [d, *] weight are qkv, attention output, MLP in, MLP out for each block and then
the logits; LayerNorm scales and offsets are the [1, 1, d] constants, in the same order (scale first).
The export is accepted only when incremental decoding reproduces the full model (`check_step_parity`).
Needs onnx and numpy only (no TensorFlow), so tests can re-derive and re-check the committed files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STEP_FILE = "decoder_step.onnx"
MASKED = -1e9
"""Score of a masked position (as the Keras model's attention uses)."""


class StepExportError(RuntimeError):
    """The step graph cannot be derived, or it disagrees with the full model; the export is rejected."""


@dataclass(frozen=True)
class Dense:
    kernel: np.ndarray
    bias: np.ndarray


@dataclass(frozen=True)
class Block:
    ln1: tuple[np.ndarray, np.ndarray]
    qkv: Dense
    out: Dense
    ln2: tuple[np.ndarray, np.ndarray]
    mlp_in: Dense
    mlp_out: Dense


@dataclass(frozen=True)
class TransformerWeights:
    tokens: np.ndarray
    """[vocab, d_model] token embedding."""
    positions: np.ndarray
    """[context_length, d_model] position embedding."""
    blocks: tuple[Block, ...]
    final_ln: tuple[np.ndarray, np.ndarray]
    logits: Dense

    @property
    def d_model(self) -> int:
        return int(self.tokens.shape[1])


def weights_from_onnx(model: onnx.ModelProto) -> TransformerWeights:
    """The trained weights of a full-recompute textgen transformer graph (see the module docstring)."""
    graph = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    denses, norms, embeddings = [], [], []
    for node in graph.node:
        weights = [consts[i] for i in node.input if i in consts]
        if node.op_type == "MatMul" and len(weights) == 1 and weights[0].ndim == 2:
            denses.append(Dense(weights[0], _bias_after(node.output[0], consumers, consts, weights[0].shape[1])))
        elif node.op_type == "Gather" and node.input[0] in consts and consts[node.input[0]].ndim == 2:
            embeddings.append(consts[node.input[0]])
        elif node.op_type in ("Mul", "Add"):
            norms += [(node.op_type, w.reshape(-1)) for w in weights if w.ndim == 3 and w.shape[:2] == (1, 1)]
    if not denses or (len(denses) - 1) % 4 or len(embeddings) != 2:
        raise StepExportError(
            f"not a textgen transformer graph: {len(denses)} dense layers, {len(embeddings)} embeddings"
        )
    layers = (len(denses) - 1) // 4
    if [kind for kind, _ in norms] != ["Mul", "Add"] * (2 * layers + 1):
        raise StepExportError(f"expected {2 * layers + 1} LayerNorms (scale, offset), found {len(norms)} constants")
    pairs = [(norms[i][1], norms[i + 1][1]) for i in range(0, len(norms), 2)]
    vocab = denses[-1].kernel.shape[1]
    tokens, positions = embeddings if embeddings[0].shape[0] == vocab else embeddings[::-1]
    blocks = tuple(
        Block(pairs[2 * i], *denses[4 * i : 4 * i + 2], pairs[2 * i + 1], *denses[4 * i + 2 : 4 * i + 4])
        for i in range(layers)
    )
    return TransformerWeights(tokens, positions, blocks, pairs[-1], denses[-1])


def _bias_after(output: str, consumers: dict, consts: dict, size: int) -> np.ndarray:
    """The bias added to a matrix product: the first Add (through Reshapes) with a [size] constant."""
    frontier = [output]
    while frontier:
        for node in consumers.get(frontier.pop(0), []):
            if node.op_type == "Reshape":
                frontier.append(node.output[0])
            elif node.op_type == "Add":
                biases = [consts[i] for i in node.input if i in consts and consts[i].shape == (size,)]
                if biases:
                    return biases[0]
    raise StepExportError(f"no bias found after the matrix product {output}")


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value: np.ndarray | float | int | list, name: str = "") -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        self.count += 1
        name = name or f"const_{self.count}"
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, kind: str, *inputs: str, out: str = "", **attrs: object) -> str:
        self.count += 1
        out = out or f"{kind.lower()}_{self.count}"
        self.nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def dense(self, x: str, dense: Dense, name: str) -> str:
        kernel, bias = self.const(dense.kernel, f"{name}/kernel"), self.const(dense.bias, f"{name}/bias")
        return self.op("Add", self.op("MatMul", x, kernel), bias)

    def layer_norm(self, x: str, weights: tuple[np.ndarray, np.ndarray], name: str, epsilon: float) -> str:
        scale, offset = self.const(weights[0], f"{name}/scale"), self.const(weights[1], f"{name}/offset")
        return self.op("LayerNormalization", x, scale, offset, axis=-1, epsilon=epsilon)

    def gelu_tanh(self, x: str) -> str:
        """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as Keras' gelu(approximate=True)."""
        cube = self.op("Mul", self.op("Mul", x, x), x)
        inner = self.op("Add", x, self.op("Mul", cube, self.const(0.044715)))
        tanh = self.op("Tanh", self.op("Mul", inner, self.const(np.sqrt(2 / np.pi))))
        return self.op("Mul", self.op("Mul", x, self.const(0.5)), self.op("Add", tanh, self.const(1.0)))


def _attention(g: _Builder, h: str, block: Block, index: int, heads: int, masks: tuple[str, str, str]) -> str:
    """Self-attention of the new tokens over the cached ones and themselves; emits new_key/new_value_<index>."""
    past_bias, causal_bias, sizes = masks
    d_model = block.qkv.kernel.shape[0]
    head_dim = d_model // heads
    qkv = g.op("Reshape", g.dense(h, block.qkv, f"block{index}/qkv"), g.const([0, 0, 3, heads, head_dim]))
    qkv = g.op("Transpose", qkv, perm=[2, 0, 3, 1, 4])  # (3, batch, heads, new, head_dim)
    q = g.op("Gather", qkv, g.const(np.int64(0)), axis=0)
    k = g.op("Gather", qkv, g.const(np.int64(1)), axis=0, out=f"new_key_{index}")
    v = g.op("Gather", qkv, g.const(np.int64(2)), axis=0, out=f"new_value_{index}")
    scale = g.const(1.0 / head_dim**0.5)

    def scores(keys: str, bias: str) -> str:
        return g.op("Add", g.op("Mul", g.op("MatMul", q, g.op("Transpose", keys, perm=[0, 1, 3, 2])), scale), bias)

    both = g.op("Concat", scores(f"past_key_{index}", past_bias), scores(k, causal_bias), axis=-1)
    weights = g.op("Softmax", both, axis=-1)
    w_past, w_new = f"attn_past_{index}", f"attn_new_{index}"
    g.nodes.append(helper.make_node("Split", [weights, sizes], [w_past, w_new], axis=-1))
    context = g.op("Add", g.op("MatMul", w_past, f"past_value_{index}"), g.op("MatMul", w_new, v))
    context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), g.const([0, 0, d_model]))
    return g.dense(context, block.out, f"block{index}/out")


def build_step_graph(weights: TransformerWeights, heads: int, epsilon: float = 1e-5) -> onnx.ModelProto:
    """The decoding graph of the module docstring, holding `weights`."""
    d_model, layers = weights.d_model, len(weights.blocks)
    if d_model % heads:
        raise StepExportError(f"d_model {d_model} is not divisible by {heads} heads")
    head_dim, vocab = d_model // heads, weights.logits.kernel.shape[1]
    g = _Builder()
    token_emb, position_emb = (
        g.const(weights.tokens, "embedding/tokens"),
        g.const(weights.positions, "embedding/positions"),
    )
    x = g.op("Add", g.op("Gather", token_emb, "token_ids"), g.op("Gather", position_emb, "positions"))
    zero, masked = g.const(np.float32(0)), g.const(np.float32(MASKED))
    valid = g.op("Cast", "past_mask", to=TensorProto.BOOL)
    past_bias = g.op("Unsqueeze", g.op("Where", valid, zero, masked), g.const([1, 2]))  # (batch, 1, 1, past)
    new = g.op("Slice", g.op("Shape", "token_ids"), g.const([1]), g.const([2]))
    steps = g.op("Range", g.const(np.int64(0)), g.op("Squeeze", new, g.const([0])), g.const(np.int64(1)))
    causal = g.op("GreaterOrEqual", g.op("Unsqueeze", steps, g.const([1])), g.op("Unsqueeze", steps, g.const([0])))
    causal_bias = g.op("Where", causal, zero, masked)  # (new, new)
    sizes = g.op("Concat", g.op("Slice", g.op("Shape", "past_mask"), g.const([1]), g.const([2])), new, axis=0)
    for i, block in enumerate(weights.blocks):
        h = g.layer_norm(x, block.ln1, f"block{i}/ln1", epsilon)
        x = g.op("Add", x, _attention(g, h, block, i, heads, (past_bias, causal_bias, sizes)))
        h = g.layer_norm(x, block.ln2, f"block{i}/ln2", epsilon)
        hidden = g.gelu_tanh(g.dense(h, block.mlp_in, f"block{i}/mlp_in"))
        x = g.op("Add", x, g.dense(hidden, block.mlp_out, f"block{i}/mlp_out"))
    h = g.layer_norm(x, weights.final_ln, "final_ln", epsilon)
    g.nodes.append(helper.make_node("Identity", [g.dense(h, weights.logits, "logits")], ["logits"]))

    def tensor(name: str, dtype: int, *dims: int | str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, dtype, list(dims))

    cache = [
        tensor(f"{kind}_{i}", TensorProto.FLOAT, "batch", heads, length, head_dim)
        for i in range(layers)
        for kind, length in (("past_key", "past"), ("past_value", "past"))
    ]
    inputs = [tensor(n, TensorProto.INT64, "batch", "new") for n in ("token_ids", "positions")]
    inputs += [tensor("past_mask", TensorProto.INT64, "batch", "past"), *cache]
    outputs = [tensor("logits", TensorProto.FLOAT, "batch", "new", vocab)] + [
        tensor(f"{kind}_{i}", TensorProto.FLOAT, "batch", heads, "new", head_dim)
        for i in range(layers)
        for kind in ("new_key", "new_value")
    ]
    graph = helper.make_graph(g.nodes, "textgen_decoder_step", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "deepserve-train (training.decoder_step)"
    onnx.checker.check_model(model, full_check=True)
    return model


def derive_step_model(full_model: Path, path: Path, heads: int, epsilon: float = 1e-5) -> onnx.ModelProto:
    """Read the weights of `full_model`, write the step graph to `path` (checked with onnx.checker)."""
    proto = build_step_graph(weights_from_onnx(onnx.load(str(full_model))), heads, epsilon)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return proto
