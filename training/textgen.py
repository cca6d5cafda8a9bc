"""textgen_transformer: a small code-completion model, a decoder-only Transformer trained on the running
Python's standard library source (or on UTF-8 text files), against an interpolated Kneser-Ney trigram."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tokenizers import Tokenizer

from service.config import DynamicBatching, Generation, Limits, ModelConfig, TensorSpec, TextPreprocessing
from training import data as datasets
from training import recipe
from training.baselines import KneserNeyTrigram
from training.decoder_step import STEP_FILE
from training.export import onnx_predict, parity_reference, session
from training.models import CausalSelfAttention, TokenAndPositionEmbedding, TransformerSpec, build_transformer
from training.repository import write_entry
from training.textgen_corpus import load_stdlib
from training.textgen_step import KV_CACHE, card_section, export_step_model
from training.tokenization import BPE_BOS, BPE_EOS, BPE_PAD, encode, pad, train_byte_bpe
from training.train import PARITY_EXAMPLES, fit, set_seed

log = logging.getLogger("training")

NAME = "textgen_transformer"
PROMPTS = ("def fibonacci(n):\n", 'class Stack:\n    """A last-in, first-out stack."""\n\n', "import os\n\n\ndef ")


@dataclass(frozen=True)
class TextgenSettings:
    data: list[Path] | None = None
    """UTF-8 text files or folders of *.txt; None uses the standard library's source (training/textgen_corpus.py)."""
    name: str = NAME
    epochs: int = 5
    """Passes over the training windows, the learning rate annealed over all of them. On 2 shared CPU cores
    (nice -n 19) five passes took 70 minutes under other sessions' load (8.7 to 24 minutes a pass): validation
    perplexity 54, 33, 27, 24.4, 23.7 after each; two passes (16 minutes) left the model far from converged.
    The committed model continued from those five for `continue_epochs` more (`init_from`): 22.1 after nine."""
    patience: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-3
    """Peak of the schedule: linear warm-up over `warmup_steps`, then cosine decay to a tenth of it."""
    warmup_steps: int = 100
    weight_decay: float = 0.01
    vocab_size: int = 4096
    context_length: int = 256
    train_stride: int = 256
    d_model: int = 128
    heads: int = 4
    layers: int = 4
    dropout: float = 0.0
    seed: int = datasets.SEED
    limit: int | None = None
    """Use at most this many training windows (a seeded random subset; all ~9,900 for Python 3.11's library)."""
    eval_prompts: int | None = None
    """Complete only the first this many held-out prompts (training/eval/textgen_prompts.jsonl); None: all."""
    init_from: Path | None = None
    """A trained textgen entry (e.g. models/textgen_transformer) to continue training: its tokenizer is kept and
    its model.onnx weights are loaded into the Keras model (`load_onnx_weights`, checked against ONNX Runtime);
    then `continue_epochs` passes on a fresh schedule peaking at `continue_learning_rate`."""
    continue_epochs: int = 4
    """Passes when continuing from `init_from` (`epochs` is for training from scratch). Four took 70 minutes
    (8.6 to 31 minutes a pass under load): validation perplexity 24.0, 23.1, 22.3, 22.1, test 25.0 -> 23.3."""
    continue_learning_rate: float = 1e-3
    """Peak learning rate when continuing: half the from-scratch peak, so the first passes do not undo the
    trained weights, then cosine decay to a tenth of it as from scratch."""


@dataclass(frozen=True)
class Windows:
    """Fixed-length training/evaluation rows: inputs, attention mask, next-token targets and their weights."""

    token_ids: np.ndarray
    attention_mask: np.ndarray
    targets: np.ndarray
    weights: np.ndarray

    def inputs(self) -> dict[str, np.ndarray]:
        return {"token_ids": self.token_ids, "attention_mask": self.attention_mask}


def token_stream(tokenizer, texts: list[str], bos: int, eos: int) -> np.ndarray:
    return np.concatenate([np.array([bos, *ids, eos], dtype=np.int64) for ids in encode(tokenizer, texts)])


def make_windows(stream: np.ndarray, context: int, stride: int, pad_id: int, keep_partial: bool) -> Windows:
    """Rows of context+1 tokens every `stride`; a final partial row is right-padded and masked if kept."""
    starts = list(range(0, max(1, len(stream) - context), stride))
    rows = [stream[s : s + context + 1] for s in starts]
    covered = starts[-1] + context + 1
    if keep_partial and covered < len(stream):
        rows.append(stream[covered - 1 :])
    full = pad([r.tolist() for r in rows], pad_id, context + 1)
    real = np.array([[i < len(r) for i in range(context + 1)] for r in rows])
    return Windows(full[:, :-1], real[:, :-1].astype(np.int64), full[:, 1:], real[:, 1:].astype(np.float32))


def parity_inputs(stream: np.ndarray, context: int, pad_id: int) -> dict[str, np.ndarray]:
    """Held-out rows of lengths spread over 1..context, right-padded and masked as the server batches them."""
    rows = make_windows(stream, context, context // 4, pad_id, keep_partial=False)
    ids, mask = rows.token_ids[:PARITY_EXAMPLES].copy(), rows.attention_mask[:PARITY_EXAMPLES].copy()
    for i, length in enumerate(1 + (np.arange(len(ids)) * 37) % context):
        ids[i, length:], mask[i, length:] = pad_id, 0
    return {"token_ids": ids, "attention_mask": mask}


def perplexity(sess, windows: Windows) -> tuple[float, np.ndarray]:
    """Per-token perplexity over the weighted targets, and each target's negative log-likelihood."""
    logits = onnx_predict(sess, windows.inputs(), batch_size=16)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, windows.targets[..., None], axis=-1)[..., 0]
    nll = nll[windows.weights > 0]
    return float(math.exp(nll.mean())), nll


def padding_invariance(sess, stream: np.ndarray, lengths: tuple[int, ...], padded_length: int) -> float:
    """Max |logits(unpadded) - logits(right-padded, masked, batched)| at the real positions."""
    sequences = [stream[i * 7 : i * 7 + n] for i, n in enumerate(lengths)]
    ids = pad([s.tolist() for s in sequences], 0, padded_length)
    mask = np.zeros_like(ids)
    for row, seq in zip(mask, sequences, strict=True):
        row[: len(seq)] = 1
    batched = sess.run(None, {"token_ids": ids, "attention_mask": mask})[0]
    worst = 0.0
    for i, seq in enumerate(sequences):
        alone = sess.run(None, {"token_ids": seq[None], "attention_mask": np.ones((1, len(seq)), np.int64)})[0]
        worst = max(worst, float(np.max(np.abs(alone[0] - batched[i, : len(seq)]))))
    return worst


def sample(sess, tokenizer, prompt: str, context: int, bos: int, eos: int, new_tokens: int, seed: int) -> str:
    """Top-k (40) sampling at temperature 0.8, one full forward pass per token (as the server runs it)."""
    rng = np.random.default_rng(seed)
    ids = [bos, *tokenizer.encode(prompt, add_special_tokens=False).ids]
    generated: list[int] = []
    for _ in range(new_tokens):
        window = np.array([(ids + generated)[-context:]], dtype=np.int64)
        logits = sess.run(None, {"token_ids": window, "attention_mask": np.ones_like(window)})[0][0, -1] / 0.8
        top = np.argpartition(logits, -40)[-40:]
        p = np.exp(logits[top] - logits[top].max())
        token = int(rng.choice(top, p=p / p.sum()))
        if token == eos:
            break
        generated.append(token)
    return tokenizer.decode(generated)


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
            layer.set_weights([arrays[one([n for n in arrays if n.endswith(f"/{layer.name}_1/{r}:0")], layer.name)]
                               .reshape(-1) for r in ("Reshape", "Reshape_1")])  # fmt: skip
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


def _config(settings: TextgenSettings, vocab: int, pad_id: int, bos: int, eos: int, source: str) -> ModelConfig:
    return ModelConfig(
        task="text_generation",
        max_batch_size=16,
        inputs=(
            TensorSpec(name="token_ids", datatype="INT64", dims=(-1,), pad_value=pad_id),
            TensorSpec(name="attention_mask", datatype="INT64", dims=(-1,), pad_value=0),
        ),
        outputs=(TensorSpec(name="logits", datatype="FP32", dims=(-1, vocab)),),
        dynamic_batching=DynamicBatching(),
        # V2 requests get logits at every position: 1,024 tokens x vocabulary x 4 bytes (16 MiB at 4,096) keeps
        # the largest response well inside the server's 32 MiB message limit.
        limits=Limits(max_input_elements=max(1, 16 * 1024 * 1024 // (4 * vocab))),
        text=TextPreprocessing(tokenizer="tokenizer.json", max_length=settings.context_length, pad_id=pad_id),
        generation=Generation(
            context_length=settings.context_length,
            max_active_sequences=16,
            eos_id=eos,
            bos_id=bos,
            step_model=STEP_FILE,
            step_intra_op_threads=1,  # faster for both single and batched decoding steps (bench/generation.py)
        ),
        description=f"decoder-only Transformer language model trained on {source}",
    )


def _parts(settings: TextgenSettings) -> tuple[dict[str, list[str]], str, dict]:
    """Training, validation and test texts, where they came from, and how they were split (for the card)."""
    if settings.data is None:
        corpus = load_stdlib()
        parts = {p: [f.text for f in getattr(corpus, part)] for p, part in (("train", "train"), ("val", "validation"),
                                                                           ("test", "test"))}  # fmt: skip
        split = {
            "method": "whole top-level modules and packages of the standard library (its test suites, "
            "site-packages, encodings, pydoc_data and generated files left out) by crc32(name) % 20: "
            "0 test, 1 validation, the rest training (training/textgen_corpus.py)",
            "sizes": {"train": len(parts["train"]), "validation": len(parts["val"]), "test": len(parts["test"])},
            "held_out_modules": {"validation": corpus.modules("validation"), "test": corpus.modules("test")},
            "characters": {p: sum(map(len, texts)) for p, texts in parts.items()},
        }
        return parts, corpus.source, split
    documents, source = datasets.load_corpus(settings.data)
    chunks = datasets.chunk_documents(documents)
    chosen = datasets.split_chunks(len(chunks), seed=settings.seed)
    parts = {p: [chunks[i] for i in idx] for p, idx in (("train", chosen.train), ("val", chosen.val),
                                                        ("test", chosen.test))}  # fmt: skip
    method = "documents cut at blank lines into ~4000-character chunks; chunks assigned at random 90/5/5"
    return parts, source, {"method": method, "seed": settings.seed, "sizes": chosen.sizes()}


def _compile(model: keras.Model, settings: TextgenSettings, steps: int, peak: float) -> None:
    """AdamW on a warm-up (at most a tenth of the steps, so a few-step run still learns) and cosine schedule."""
    warmup = min(settings.warmup_steps, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak, max(1, steps - warmup), alpha=0.1,
        warmup_target=peak if warmup else None, warmup_steps=warmup,
    )  # fmt: skip
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def run(settings: TextgenSettings, output: Path, workdir: Path) -> Path:
    set_seed(settings.seed)
    parts, source, split = _parts(settings)
    if settings.init_from is None:
        tokenizer = train_byte_bpe(parts["train"], settings.vocab_size, lines=True)
    else:
        tokenizer = Tokenizer.from_file(str(settings.init_from / "tokenizer.json"))
    pad_id, bos, eos = (tokenizer.token_to_id(t) for t in (BPE_PAD, BPE_BOS, BPE_EOS))
    streams = {p: token_stream(tokenizer, texts, bos, eos) for p, texts in parts.items()}
    ctx = settings.context_length
    train = make_windows(streams["train"], ctx, settings.train_stride, pad_id, keep_partial=False)
    keep = datasets.subsample(np.arange(len(train.token_ids)), settings.limit, settings.seed)
    train = Windows(*(a[keep] for a in dataclasses.astuple(train)))
    val, test = (make_windows(streams[p], ctx, ctx, pad_id, keep_partial=True) for p in ("val", "test"))
    log.info("%s: %s, tokens %s, %d training windows", settings.name, split["sizes"],
             {p: len(s) for p, s in streams.items()}, len(train.token_ids))  # fmt: skip

    vocab = tokenizer.get_vocab_size()
    spec = TransformerSpec(vocab, ctx, settings.d_model, settings.heads, settings.layers, 4, settings.dropout)
    model = build_transformer(spec)
    epochs, peak = settings.epochs, settings.learning_rate
    if settings.init_from is not None:
        diff = load_onnx_weights(model, settings.init_from / "1" / "model.onnx", val.inputs())
        log.info(
            "%s: continuing from %s (Keras vs its ONNX max |diff| = %.3g)", settings.name, settings.init_from, diff
        )
        epochs, peak = settings.continue_epochs, settings.continue_learning_rate
    _compile(model, settings, epochs * math.ceil(len(train.token_ids) / settings.batch_size), peak)
    result = fit(
        model,
        train.inputs(),
        train.targets,
        sample_weight=train.weights,
        batch_size=settings.batch_size,
        validation=(val.inputs(), val.targets, val.weights),
        shuffle=True,
        name=settings.name,
        epochs=epochs,
        patience=settings.patience,
    )

    held_out = parity_inputs(np.concatenate([streams["test"], streams["val"]]), ctx, pad_id)
    exported = recipe.export(model, settings, workdir, held_out)
    onnx_path = exported.path
    step = export_step_model(onnx_path, onnx_path.parent / STEP_FILE, settings.heads, exported.inputs, ctx,
                             keras_logits=exported.expected)  # fmt: skip
    sess = session(onnx_path)
    invariance = padding_invariance(sess, streams["test"], (5, 17, 64, ctx - 1), ctx)
    recipe.check_padding(settings, invariance, 1e-4, "logits")

    metrics, baseline = {}, {}
    trigram = KneserNeyTrigram(vocab).fit(streams["train"])
    for part, windows in (("validation", val), ("test", test)):
        ppl, nll = perplexity(sess, windows)
        ngram_nll = trigram.nll(streams["val" if part == "validation" else "test"], start=bos)
        assert len(ngram_nll) == len(nll)  # the same targets: every token after each stream's first
        metrics[part] = {"perplexity": ppl, "cross_entropy_nats": float(nll.mean()), "tokens": len(nll)}
        baseline[part] = {"perplexity": float(math.exp(ngram_nll.mean())), "tokens": len(ngram_nll)}
    samples = [
        {"prompt": p, "continuation": sample(sess, tokenizer, p, ctx, bos, eos, 48, settings.seed + i)}
        for i, p in enumerate(PROMPTS)
    ]
    log.info("%s: test perplexity %.2f (Kneser-Ney trigram %.2f); sample: %r", settings.name,
             metrics["test"]["perplexity"], baseline["test"]["perplexity"], samples[0]["continuation"])  # fmt: skip
    from training import textgen_eval  # the held-out completions (training/eval/textgen_prompts.jsonl)

    config = textgen_eval.with_sampling_defaults(_config(settings, vocab, pad_id, bos, eos, source))
    prompts = textgen_eval.load_prompts()[: settings.eval_prompts]
    metrics["eval_prompts"] = textgen_eval.evaluate(step.path, tokenizer, config, prompts)
    extra = {"samples": samples, "kv_cache": card_section(step)}
    parity = _parity_card(exported, ctx, invariance)
    read = reading(onnx_path)
    fitted = (train, spec, model, result)
    card = _card(settings, config, source, split, streams, fitted, metrics, baseline, exported, parity, extra, read)
    last = exported.inputs["attention_mask"].sum(axis=1) - 1
    reference = parity_reference(exported.inputs, exported.expected[np.arange(len(last)), last], last_position=last)
    assets = {"tokenizer.json": tokenizer.to_str(pretty=False), "parity_reference.npz": reference}
    return write_entry(output, settings.name, config, onnx_path, assets, card, version_files=[step.path])


def _parity_card(exported, ctx: int, invariance: float) -> dict:
    return {
        "against": f"Keras on {exported.parity_examples} held-out rows of 1..{ctx} real tokens, "
        f"right-padded to {ctx} with attention_mask (all positions compared)",
        "padding_invariance_max_abs_diff": invariance,
        "padding_invariance_tolerance": 1e-4,
    }


def _card(settings, config, source, split, streams, fitted, metrics, baseline, exported, parity, extra, read) -> dict:
    """model_card.json; `fitted` is (the training windows, the spec, the Keras model, the fit's result)."""
    train, spec, model, result = fitted
    ctx, vocab = settings.context_length, spec.vocab_size
    evaluation = metrics["eval_prompts"]
    return recipe.model_card(
        settings,
        "text_generation",
        data={
            "source": source,
            "split": {
                **split,
                "tokens": {p: len(s) for p, s in streams.items()},
                "train_windows": len(train.token_ids),
            },
        },
        preprocessing={
            **config.text.model_dump(mode="json"),
            "vocab_size": vocab,
            "tokenizer_model": "byte-level BPE trained on the training split; "
            f"{BPE_PAD}={config.text.pad_id}, {BPE_BOS}={config.generation.bos_id}, "
            f"{BPE_EOS}={config.generation.eos_id}",
            "sequences": "each source file is <|bos|> text <|endoftext|>; prompts start with <|bos|>",
            "padding": "right, with pad_id, attention_mask 0 on padding",
        },
        model=model,
        architecture="decoder-only Transformer: token + learned position embeddings, pre-LayerNorm "
        "blocks (causal multi-head self-attention with key padding mask, GELU MLP), "
        f"final LayerNorm, logits at every position; {KV_CACHE}",
        spec=spec,
        training=recipe.training_card(
            settings,
            f"AdamW (weight decay {settings.weight_decay}, clipnorm 1.0)",
            result.seconds,
            learning_rate=f"{settings.learning_rate} after {settings.warmup_steps} warm-up steps, cosine "
            "decay to a tenth of it",
            windows=f"{ctx + 1} tokens every {settings.train_stride}",
            max_epochs=settings.epochs if settings.init_from is None else settings.continue_epochs,
            **recipe.fitted(result),
            validation_perplexity_per_epoch=[round(math.exp(v), 2) for v in result.history.get("val_loss", [])],
            machine="2 shared CPU cores (nice -n 19), TensorFlow CPU",
            **_warm_start(settings, result),
        ),
        metrics=metrics,
        baseline={
            "model": "interpolated Kneser-Ney token trigram (discount 0.75) on the same tokenizer, trained on the "
            "training split's token stream, scored on the same targets (training/baselines.py)",
            **baseline,
        },
        quality_bar=quality_bar(metrics["test"]["perplexity"], baseline["test"]["perplexity"], evaluation, read),
        exported=exported,
        parity=parity,
        extra=extra,
    )


def _warm_start(settings: TextgenSettings, result) -> dict:
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


READING_FILE = Path(__file__).parent / "eval" / "textgen_reading.json"
"""A person's reading of the committed model's completions: which of them read as coherent (issue 13)."""


def reading(onnx_path: Path) -> dict | None:
    """The committed reading when it is of this very model.onnx (by sha256); None: nobody has read its output."""
    if not READING_FILE.is_file():
        return None
    found = json.loads(READING_FILE.read_text(encoding="utf-8"))
    return found if found["model_onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest() else None


def quality_bar(perplexity: float, trigram: float, evaluation: dict, read: dict | None = None) -> dict:
    """Issue 13's bars for the card: perplexity under half the trigram's, most default-sampled completions
    parse, a reader calls a clear majority (over 60%) of those read coherent (`reading`; unread fails), and
    neither default sampling nor greedy decoding (with the default repetition penalty) loops."""
    coherent = len(read["coherent"]) / len(read["read"]) if read else 0.0
    bars = {
        "perplexity_below_half_the_trigram": perplexity < 0.5 * trigram,
        "default_sampling_completions_parse": evaluation["sampled"]["parse_share"] >= 0.5,
        "a_reader_finds_a_clear_majority_coherent": coherent > 0.6,
        "default_sampling_does_not_loop": evaluation["sampled"]["loop_share"] <= 0.1,
        "greedy_does_not_loop": evaluation["greedy"]["loop_share"] <= 0.1,
    }
    reader = {"read": len(read["read"]), "coherent": len(read["coherent"]), "verdict": read["verdict"]} if read else {}
    return {
        **bars,
        "perplexity_ratio_to_trigram": round(perplexity / trigram, 3),
        "reading": reader
        or f"nobody has read this model's completions ({READING_FILE.parent.name}/{READING_FILE.name})",
        "met": all(bars.values()),
    }
