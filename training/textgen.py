"""textgen_transformer: a small code-completion model, a decoder-only Transformer trained on the running
Python's standard library source (or on UTF-8 text files), against an interpolated Kneser-Ney trigram."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from tokenizers import Tokenizer

from service.config import DynamicBatching, Generation, Limits, ModelConfig, TensorSpec, TextPreprocessing
from training import data as datasets
from training import recipe, textgen_card
from training.baselines import KneserNeyTrigram
from training.decoder_step import STEP_FILE
from training.export import onnx_predict, parity_reference, session
from training.models import TransformerSpec, build_transformer
from training.repository import write_entry
from training.textgen_corpus import load_stdlib
from training.textgen_quality import reading
from training.textgen_settings import TextgenSettings
from training.textgen_step import card_section, export_step_model
from training.textgen_warm_start import load_onnx_weights
from training.tokenization import BPE_BOS, BPE_EOS, BPE_PAD, encode, pad, train_byte_bpe
from training.train import PARITY_EXAMPLES, fit, set_seed

log = logging.getLogger("training")

PROMPTS = ("def fibonacci(n):\n", 'class Stack:\n    """A last-in, first-out stack."""\n\n', "import os\n\n\ndef ")


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
            engine="auto",  # on the CPU, steps in child processes, off the server's GIL (docs/performance.md)
        ),
        description=f"decoder-only Transformer language model trained on {source}",
    )


def _parts(settings: TextgenSettings) -> tuple[dict[str, list[str]], str, dict]:
    """Training, validation and test texts, where they came from, and how they were split (for the card)."""
    if settings.data is None:
        corpus = load_stdlib()
        parts = {
            p: [f.text for f in getattr(corpus, part)]
            for p, part in (("train", "train"), ("val", "validation"), ("test", "test"))
        }
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
    parts = {
        p: [chunks[i] for i in idx] for p, idx in (("train", chosen.train), ("val", chosen.val), ("test", chosen.test))
    }
    method = "documents cut at blank lines into ~4000-character chunks; chunks assigned at random 90/5/5"
    return parts, source, {"method": method, "seed": settings.seed, "sizes": chosen.sizes()}


def _compile(model: keras.Model, settings: TextgenSettings, steps: int, peak: float) -> None:
    """AdamW on a warm-up (at most a tenth of the steps, so a few-step run still learns) and cosine schedule."""
    warmup = min(settings.warmup_steps, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak,
        max(1, steps - warmup),
        alpha=0.1,
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )
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
    log.info(
        "%s: %s, tokens %s, %d training windows",
        settings.name,
        split["sizes"],
        {p: len(s) for p, s in streams.items()},
        len(train.token_ids),
    )

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
    step = export_step_model(
        onnx_path, onnx_path.parent / STEP_FILE, settings.heads, exported.inputs, ctx, keras_logits=exported.expected
    )
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
    log.info(
        "%s: test perplexity %.2f (Kneser-Ney trigram %.2f); sample: %r",
        settings.name,
        metrics["test"]["perplexity"],
        baseline["test"]["perplexity"],
        samples[0]["continuation"],
    )
    from training import textgen_eval  # the held-out completions (training/eval/textgen_prompts.jsonl)

    config = textgen_eval.with_sampling_defaults(_config(settings, vocab, pad_id, bos, eos, source))
    prompts = textgen_eval.load_prompts()[: settings.eval_prompts]
    metrics["eval_prompts"] = textgen_eval.evaluate(step.path, tokenizer, config, prompts)
    extra = {"samples": samples, "kv_cache": card_section(step)}
    parity = textgen_card.parity_card(exported, ctx, invariance)
    read = reading(onnx_path)
    fitted = (train, spec, model, result)
    card = textgen_card.card(
        settings, config, source, split, streams, fitted, metrics, baseline, exported, parity, extra, read
    )
    last = exported.inputs["attention_mask"].sum(axis=1) - 1
    reference = parity_reference(exported.inputs, exported.expected[np.arange(len(last)), last], last_position=last)
    assets = {"tokenizer.json": tokenizer.to_str(pretty=False), "parity_reference.npz": reference}
    return write_entry(output, settings.name, config, onnx_path, assets, card, version_files=[step.path])
