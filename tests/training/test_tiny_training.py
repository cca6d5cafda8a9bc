"""A few training steps of each model on a small subset, through export, parity and the repository entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.checks import card, check_entry, reference_parity, step_parity_on_reference

pytestmark = pytest.mark.training
pytest.importorskip("tensorflow", reason="needs the train extra (pip install -e '.[train]')")
pytest.importorskip("tf2onnx", reason="needs the train extra (pip install -e '.[train]')")


def _check(entry: Path, name: str) -> dict:
    assert entry == entry.parent / name
    check_entry(entry)
    assert reference_parity(entry) <= 1e-4
    info = card(entry)
    assert info["parity"]["max_abs_diff"] <= 1e-4
    return info


def test_tiny_cnn(tmp_path: Path) -> None:
    from training.digits import DigitsSettings, run

    settings = DigitsSettings(
        name="tiny_cnn", epochs=1, limit=80, augment_copies=1, filters=(4, 8), dense=16, handdrawn_per_digit=1
    )
    info = _check(run(settings, tmp_path / "models", tmp_path / "work"), "tiny_cnn")
    assert info["preprocessing"]["ink"] == "light_on_dark" and info["preprocessing"]["height"] == 32
    assert "handdrawn" in info["metrics"]


def test_tiny_cnn_on_an_image_folder(tmp_path: Path) -> None:
    """Users' own data: root/<class>/*.png of any size and colour mode."""
    import numpy as np
    from PIL import Image

    from training.digits import DigitsSettings, run

    rng = np.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(12):
            noise = rng.integers(0, 40, (40 + i, 48, 3))
            Image.fromarray((np.array(colour) + noise).clip(0, 255).astype(np.uint8)).save(
                tmp_path / "data" / label / f"{i}.png"
            )
    settings = DigitsSettings(data=tmp_path / "data", name="colours", epochs=1, augment_copies=1, filters=(4,), dense=8)
    info = _check(run(settings, tmp_path / "models", tmp_path / "work"), "colours")
    assert info["preprocessing"]["channels"] == 3 and info["preprocessing"]["ink"] == "any"
    assert info["data"]["classes"] == ["blue", "red"]


def test_tiny_rnn(tmp_path: Path) -> None:
    from training.sentiment import SentimentSettings, run

    settings = SentimentSettings(epochs=1, limit=400, vocab_size=300, embedding=8, units=4, members=2)
    info = _check(run(settings, tmp_path / "models", tmp_path / "work"), "sentiment_rnn")
    assert info["parity"]["padding_invariance_max_abs_diff"] <= 1e-5
    assert set(info["baseline"]["test"]) == {"accuracy", "macro_f1"}
    assert len(info["metrics"]["test_per_member"]) == 2


def test_tiny_transformer(tmp_path: Path) -> None:
    from training.textgen import TextgenSettings, run

    settings = TextgenSettings(epochs=1, limit=16, vocab_size=300, d_model=16, heads=2, layers=1, eval_prompts=3)
    entry = run(settings, tmp_path / "models", tmp_path / "work")
    info = _check(entry, "textgen_transformer")
    assert info["parity"]["padding_invariance_max_abs_diff"] <= 1e-4
    assert len(info["samples"]) == 3
    assert (entry / "1" / "decoder_step.onnx").is_file() and info["kv_cache"]["file"] == "1/decoder_step.onnx"
    assert info["kv_cache"]["parity"]["max_abs_diff"] <= 1e-4
    assert info["kv_cache"]["parity"]["max_abs_diff_vs_keras"] <= 1e-4
    assert step_parity_on_reference(entry) <= 1e-4
    evaluation = info["metrics"]["eval_prompts"]
    assert evaluation["prompts"] == 3 and len(evaluation["greedy"]["completions"]) == 3
    assert set(info["baseline"]["test"]) == {"perplexity", "tokens"}

    # Continuing from the entry (as the committed model was trained): its tokenizer, its ONNX weights loaded
    # into Keras (run() checks them against ONNX Runtime), one more pass, totals in the card.
    again = TextgenSettings(**{**settings.__dict__, "init_from": entry, "continue_epochs": 1, "eval_prompts": 1})
    continued = run(again, tmp_path / "continued", tmp_path / "work2")
    more = _check(continued, "textgen_transformer")
    assert (continued / "tokenizer.json").read_text() == (entry / "tokenizer.json").read_text()
    training = more["training"]
    assert training["continued_from"]["earlier_training"] == info["training"]
    assert training["total_epochs"] == 2 and training["max_epochs"] == 1
    assert training["total_seconds"] == pytest.approx(info["training"]["seconds"] + training["seconds"], abs=0.2)


def test_cli_writes_an_entry(tmp_path: Path) -> None:
    from training.cli import main

    assert main(["cnn", "--epochs", "1", "--limit", "40", "--output", str(tmp_path), "--name", "cli_cnn", "-q"]) == 0
    _check(tmp_path / "cli_cnn", "cli_cnn")
