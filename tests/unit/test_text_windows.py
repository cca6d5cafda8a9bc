"""Only the part of a text the model reads is tokenized: windowed head/tail give the tokens of the whole
text, on the committed models' tokenizers (WordPiece with lowercase, byte-level BPE), and a long text
costs about what a short one does."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from service.config import TextPreprocessing
from service.errors import InvalidInputError
from service.tasks.text import TextEncoder, as_text

MODELS = Path(__file__).resolve().parents[2] / "models"
WORDS = [
    "the",
    "battery",
    "",
    "life",
    "is",
    "great",
    ",\tbut",
    "the\nscreen",
    "cracked",
    "after",
    "2",
    "weeks!!",
    "très",
    "déçu",
    "😞",
    "recommend",
]


def encoder(model: str, lowercase: bool) -> TextEncoder:
    path = MODELS / model / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"models/{model} has no tokenizer")
    return TextEncoder(Tokenizer.from_file(str(path)), TextPreprocessing(max_length=64, lowercase=lowercase))


def texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for length in (0, 5, 60, 200, 2_000, 20_000):
        out.append(" ".join(rng.choice(WORDS) for _ in range(length)))
    out.append("x" * 5_000)  # one word, no whitespace to cut at
    out.append("   \n\t  ".join(rng.choice(WORDS) for _ in range(3_000)))  # whitespace runs
    return out


@pytest.mark.parametrize(("model", "lowercase"), [("sentiment_rnn", True), ("textgen_transformer", False)])
@pytest.mark.parametrize("limit", [1, 16, 64, 126])
def test_windowed_head_and_tail_match_tokenizing_the_whole_text(model: str, lowercase: bool, limit: int) -> None:
    enc = encoder(model, lowercase)
    for text in texts(limit):
        ids = enc.ids(text)
        head, tail = enc.head(text, limit), enc.tail(text, limit)
        assert head.ids == ids[:limit] and head.truncated == (len(ids) > limit), text[:40]
        assert tail.ids == ids[-limit:] and tail.truncated == (len(ids) > limit), text[:40]


def test_a_long_text_costs_about_what_a_short_one_does() -> None:
    enc = encoder("textgen_transformer", False)
    long_text = "word " * 400_000  # 2 million characters

    def seconds(text: str) -> float:
        start = time.perf_counter()
        enc.tail(text, 126)
        enc.head(text, 64)
        return time.perf_counter() - start

    short = min(seconds("word " * 400) for _ in range(3))
    assert min(seconds(long_text) for _ in range(3)) < max(20 * short, 0.01)


def test_text_over_the_character_limit_is_refused_before_decoding() -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"is 5000 characters long; this model reads at most 100 characters \(limits.max_text_chars\)",
    ):
        as_text("a" * 5000, "texts[0]", max_chars=100)
    with pytest.raises(InvalidInputError, match=r"is 401 bytes long; this model reads at most 100 characters"):
        as_text(b"\xff" * 401, "texts[0]", max_chars=100)  # refused by size, before it is decoded
    assert as_text("é" * 100, "t", max_chars=100) == "é" * 100
