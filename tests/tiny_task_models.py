"""Tiny stand-ins for the task models, built in the test session (onnx.helper, tokenizers trained here).

- `quadrants`: an "image classifier" whose class is the quadrant holding the most light pixels of a 32x32
  grayscale image (NHWC), with the `light_on_dark` ink polarity of the digits model: dark ink drawn on
  white paper is classified right only if the server inverts it.
- `tiny_sentiment`: sums a per-token score vector over the tokens (pad id 0 scores nothing), softmax
  over negative/neutral/positive; a WordPiece tokenizer trained on a few sentences.
- `tiny_lm`: next-token logits = a fixed random table looked up by the current token (a bigram model),
  times the attention mask; a byte-level BPE tokenizer. The end-of-text token is only likely after
  `EOS_TRIGGER`. `slow_lm` adds a chain of matmuls so a step takes milliseconds (cancellation tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OPSET = [helper.make_opsetid("", 17)]
QUADRANTS = ["top_left", "top_right", "bottom_left", "bottom_right"]
SENTIMENTS = ["negative", "neutral", "positive"]
POSITIVE_WORDS = ["love", "great", "wonderful", "happy", "excellent"]
NEGATIVE_WORDS = ["hate", "awful", "terrible", "sad", "horrible"]
SENTENCES = [
    "I love this film, it is great and wonderful",
    "What a wonderful day, I am so happy",
    "An excellent meal, great service",
    "I hate this, it is awful and terrible",
    "A sad and horrible story, terrible acting",
    "The weather is cloudy today and the train is late",
    "The report has ten pages about the river",
] * 3
LM_TEXT = [
    "The quick brown fox jumps over the lazy dog. ",
    "Serving models over gRPC with continuous batching is fun. ",
    "Ünïcödé text with accents: café, naïve, déjà vu, and emoji 🙂 too. ",
    "Tokens stream one by one as the model produces them. ",
] * 4
LM_CONTEXT = 64
EOS_ID = 2
EOS_TRIGGER_TEXT = "🙂"


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _write(folder: Path, config: dict, build, assets: dict[str, str]) -> Path:  # type: ignore[no-untyped-def]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name, content in assets.items():
        (folder / name).write_text(content, encoding="utf-8")
    build(folder / "1" / "model.onnx")
    return folder


# ---- image classifier ------------------------------------------------------------------------------
def quadrant_weights(size: int = 32) -> np.ndarray:
    w = np.zeros((size * size, 4), dtype=np.float32)
    half = size // 2
    for row in range(size):
        for col in range(size):
            w[row * size + col, (row >= half) * 2 + (col >= half)] = 20.0 / (half * half)
    return w


def quadrants_onnx(path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=-1),
        ],
        "quadrants",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 32 * 32], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(quadrant_weights(), "w"),
        ],
    )
    _save(graph, path)


def quadrants_config(**image: object) -> dict:
    return {
        "task": "image_classification",
        "max_batch_size": 8,
        "labels": "labels.txt",
        "inputs": [{"name": "image", "datatype": "FP32", "dims": [32, 32, 1]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "dims": [4]}],
        "dynamic_batching": {"max_queue_delay_ms": 2},
        "image": {"height": 32, "width": 32, "channels": 1, "ink": "light_on_dark", "resize": "fit", **image},
    }


def write_quadrants(root: Path, name: str = "quadrants") -> Path:
    return _write(root / name, quadrants_config(), quadrants_onnx, {"labels.txt": "\n".join(QUADRANTS) + "\n"})


# ---- sentiment ---------------------------------------------------------------------------------------
def wordpiece_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]"], show_progress=False)
    tokenizer.train_from_iterator(SENTENCES, trainer)
    return tokenizer


def sentiment_table(tokenizer: Tokenizer) -> np.ndarray:
    vocab = tokenizer.get_vocab()
    table = np.zeros((tokenizer.get_vocab_size(), 3), dtype=np.float32)
    table[2:, 1] = 0.3  # every real token leans neutral a little
    for word in POSITIVE_WORDS:
        table[vocab[word], 2] = 3.0
    for word in NEGATIVE_WORDS:
        table[vocab[word], 0] = 3.0
    return table


def sentiment_onnx(path: Path, table: np.ndarray) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "token_ids"], ["per_token"]),
            helper.make_node("ReduceSum", ["per_token", "axes"], ["scores"], keepdims=0),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=-1),
        ],
        "tiny_sentiment",
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axes")],
    )
    _save(graph, path)


def write_sentiment(root: Path, name: str = "tiny_sentiment", max_length: int = 16) -> Path:
    tokenizer = wordpiece_tokenizer()
    config = {
        "task": "sentiment",
        "max_batch_size": 16,
        "labels": "labels.txt",
        "inputs": [{"name": "token_ids", "datatype": "INT64", "dims": [-1], "pad_value": 0}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "dims": [3]}],
        "dynamic_batching": {"max_queue_delay_ms": 2},
        "text": {"tokenizer": "tokenizer.json", "max_length": max_length, "pad_id": 0, "lowercase": True},
    }
    assets = {"labels.txt": "\n".join(SENTIMENTS) + "\n", "tokenizer.json": tokenizer.to_str()}
    table = sentiment_table(tokenizer)
    return _write(root / name, config, lambda p: sentiment_onnx(p, table), assets)


# ---- language model --------------------------------------------------------------------------------
def bpe_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|pad|>", "<|bos|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(LM_TEXT, trainer)
    return tokenizer


def lm_table(tokenizer: Tokenizer, seed: int = 0) -> np.ndarray:
    """Bigram logits: row = current token. EOS is unlikely except right after the EOS trigger's last token."""
    vocab = tokenizer.get_vocab_size()
    table = np.random.default_rng(seed).normal(0.0, 2.0, size=(vocab, vocab)).astype(np.float32)
    table[:, EOS_ID] = -30.0
    table[:, :2] = -30.0  # never pad or bos
    trigger = tokenizer.encode(EOS_TRIGGER_TEXT).ids[-1]
    table[trigger, EOS_ID] = 50.0
    return table


def lm_onnx(path: Path, table: np.ndarray, slow_repeats: int = 0, width: int = 256) -> None:
    nodes = [
        helper.make_node("Gather", ["table", "token_ids"], ["raw"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
        helper.make_node("Mul", ["raw", "mask3"], ["masked"]),
    ]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([-1]), "last_axis")]
    if slow_repeats:
        w = (np.random.default_rng(1).standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        nodes.append(helper.make_node("Slice", ["masked", "zero", "width", "last_axis"], ["h0"]))
        for i in range(slow_repeats):
            nodes.append(helper.make_node("MatMul", [f"h{i}", "w"], [f"h{i + 1}"]))
        nodes += [
            helper.make_node("ReduceMean", [f"h{slow_repeats}"], ["noise"], axes=[-1], keepdims=1),
            helper.make_node("Mul", ["noise", "tiny"], ["nothing"]),
            helper.make_node("Add", ["masked", "nothing"], ["logits"]),
        ]
        inits += [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([0]), "zero"),
            numpy_helper.from_array(np.array([width]), "width"),
            numpy_helper.from_array(np.float32(1e-30), "tiny"),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["masked"], ["logits"]))
    vocab = table.shape[0]
    graph = helper.make_graph(
        nodes,
        "tiny_lm",
        [
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        initializer=inits,
    )
    _save(graph, path)


def lm_config(vocab: int, context: int = LM_CONTEXT, **generation: object) -> dict:
    return {
        "task": "text_generation",
        "max_batch_size": 16,
        "inputs": [
            {"name": "token_ids", "datatype": "INT64", "dims": [-1], "pad_value": 0},
            {"name": "attention_mask", "datatype": "INT64", "dims": [-1], "pad_value": 0},
        ],
        "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, vocab]}],
        "text": {"tokenizer": "tokenizer.json", "max_length": context, "pad_id": 0},
        "generation": {
            "context_length": context,
            "max_active_sequences": 4,
            "max_waiting": 8,
            "eos_id": EOS_ID,
            "bos_id": 1,
            "default_max_new_tokens": 16,
            "max_new_tokens_limit": 2048,
            **generation,
        },
    }


def write_lm(
    root: Path, name: str = "tiny_lm", context: int = LM_CONTEXT, slow_repeats: int = 0, **generation: object
) -> Path:
    tokenizer = bpe_tokenizer()
    table = lm_table(tokenizer)
    config = lm_config(tokenizer.get_vocab_size(), context, **generation)
    assets = {"tokenizer.json": tokenizer.to_str()}
    return _write(root / name, config, lambda p: lm_onnx(p, table, slow_repeats), assets)


def make_task_repository(root: Path) -> Path:
    write_quadrants(root)
    write_sentiment(root)
    write_lm(root)
    write_lm(root, "slow_lm", context=1024, slow_repeats=24, max_active_sequences=4)
    return root


def random_transformer(vocab: int, context: int, d_model: int, layers: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Random `training.decoder_step.TransformerWeights` (for step graphs built with `build_step_graph`)."""
    from training.decoder_step import Block, Dense, TransformerWeights

    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def dense(n_in: int, n_out: int) -> Dense:
        return Dense(w(n_in, n_out), w(n_out, scale=0.05))

    def norm() -> tuple[np.ndarray, np.ndarray]:
        return 1 + w(d_model, scale=0.1), w(d_model, scale=0.1)

    d = d_model
    blocks = tuple(
        Block(norm(), dense(d, 3 * d), dense(d, d), norm(), dense(d, 4 * d), dense(4 * d, d)) for _ in range(layers)
    )
    return TransformerWeights(w(vocab, d), w(context, d), blocks, norm(), dense(d, vocab))
