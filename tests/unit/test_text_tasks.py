"""Text tasks: UTF-8 checks, tokenization and truncation, generation parameters, incremental detokenizing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from service.config import ModelConfig
from service.errors import InvalidInputError, ModelLoadError
from service.tasks.sentiment import SentimentAnalysis
from service.tasks.text import as_text
from service.tasks.text_generation import IncrementalDetokenizer, TextGeneration
from service.types import GenerationRequest, SamplingParams
from tests.tiny_task_models import bpe_tokenizer, write_lm, write_sentiment


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return bpe_tokenizer()


@pytest.fixture
def sentiment(tmp_path: Path) -> SentimentAnalysis:
    folder = write_sentiment(tmp_path, max_length=6)
    return SentimentAnalysis(folder.name, _config(folder), folder)


@pytest.fixture
def generation(tmp_path: Path) -> TextGeneration:
    folder = write_lm(tmp_path, context=16)
    return TextGeneration(folder.name, _config(folder), folder)


def _config(folder: Path) -> ModelConfig:
    return ModelConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))


# ---- UTF-8 -----------------------------------------------------------------------------------------
def test_invalid_utf8_names_the_byte_and_offset() -> None:
    with pytest.raises(InvalidInputError, match=r"texts\[1\] is not valid UTF-8 \(byte 0xff at offset 3\)"):
        as_text(b"abc\xffdef", "texts[1]")
    assert as_text("caf\u00e9".encode(), "t") == "café"


def test_empty_and_blank_texts() -> None:
    with pytest.raises(InvalidInputError, match="is empty"):
        as_text("", "texts[0]")
    with pytest.raises(InvalidInputError, match="only whitespace"):
        as_text("  \n", "texts[0]")
    assert as_text("\n", "stop[0]", blank_ok=True) == "\n"


# ---- sentiment ---------------------------------------------------------------------------------------
def test_sentiment_truncates_to_max_length_and_says_so(sentiment: SentimentAnalysis) -> None:
    (feed, tokens, cut), (short_feed, short_tokens, short_cut) = sentiment.preprocess(
        ["the report has ten pages about the river and the train", "I love it"]
    )
    assert (tokens, cut) == (6, True) and feed["token_ids"].shape == (1, 6)
    assert (short_tokens, short_cut) == (3, False) and short_feed["token_ids"].dtype == np.int64


def test_sentiment_refuses_empty_requests_and_texts(sentiment: SentimentAnalysis) -> None:
    with pytest.raises(InvalidInputError, match="no texts"):
        sentiment.preprocess([])
    with pytest.raises(InvalidInputError, match=r"texts\[1\] is empty"):
        sentiment.preprocess(["fine", ""])
    with pytest.raises(InvalidInputError, match=r"texts\[0\] is not valid UTF-8"):
        sentiment.preprocess([b"\xc3\x28"])


def test_sentiment_postprocess_reports_every_class(sentiment: SentimentAnalysis) -> None:
    result = sentiment.postprocess({"probabilities": np.array([[0.2, 0.1, 0.7]])}, tokens=4, truncated=False)
    assert (result.label, result.probability) == ("positive", pytest.approx(0.7))
    assert list(result.scores) == ["negative", "neutral", "positive"]


def test_sentiment_needs_its_tokenizer(tmp_path: Path) -> None:
    folder = write_sentiment(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(
        ModelLoadError, match=r"cannot read 'tokenizer.json' \(`text.tokenizer`\): there is no such file"
    ):
        SentimentAnalysis(folder.name, _config(folder), folder)


# ---- generation requests ---------------------------------------------------------------------------
def test_prompt_gets_bos_and_keeps_its_last_tokens(generation: TextGeneration, bpe: Tokenizer) -> None:
    short = generation.prepare(GenerationRequest("The quick brown fox"))
    assert short.prompt_ids == [1, *bpe.encode("The quick brown fox").ids] and not short.prompt_truncated
    text = "Tokens stream one by one as the model produces them. " * 3
    long = generation.prepare(GenerationRequest(text))
    assert long.prompt_truncated and len(long.prompt_ids) == 15  # context 16: bos + 14, room for one token
    assert long.prompt_ids[1:] == bpe.encode(text).ids[-14:]


def test_generation_defaults(generation: TextGeneration) -> None:
    request = generation.prepare(GenerationRequest("hi"))
    assert request.max_new_tokens == 16 and request.stop == ()
    assert request.sampling == SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=None)


def test_sampling_defaults_come_from_the_config_and_requests_override_them(tmp_path: Path) -> None:
    folder = write_lm(tmp_path, context=16)
    config = _config(folder)
    defaults = {"default_temperature": 0.6, "default_top_p": 0.9, "default_repetition_penalty": 1.2}
    generation = config.generation.model_copy(update=defaults)
    task = TextGeneration(folder.name, config.model_copy(update={"generation": generation}), folder)
    defaulted = task.prepare(GenerationRequest("hi")).sampling
    assert defaulted == SamplingParams(0.6, top_k=0, top_p=0.9, seed=None, repetition_penalty=1.2)
    explicit = task.prepare(GenerationRequest("hi", temperature=0.0, top_p=1.0, repetition_penalty=1.0)).sampling
    assert explicit == SamplingParams(temperature=0.0, top_k=0, top_p=1.0, seed=None, repetition_penalty=1.0)


@pytest.mark.parametrize(
    ("key", "value"), [("default_temperature", -1.0), ("default_top_p", 0.0), ("default_repetition_penalty", 0.9)]
)
def test_sampling_defaults_out_of_range_are_config_errors(tmp_path: Path, key: str, value: float) -> None:
    raw = yaml.safe_load((write_lm(tmp_path, context=16) / "config.yaml").read_text())
    raw["generation"][key] = value
    with pytest.raises(ValueError, match=key):
        ModelConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.5}, "temperature must be between 0 and 10"),
        ({"temperature": float("nan")}, "temperature must be between 0 and 10"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"repetition_penalty": 0.5}, r"repetition_penalty must be between 1 \(none\) and 10"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty must be between 1"),
        ({"top_k": 100_000}, "top_k must be between 0"),
        ({"max_new_tokens": 5000}, "max_new_tokens must be between 1 and 2048"),
        ({"stop": ("a",) * 9}, "at most 8 stop sequences"),
        ({"stop": ("",)}, r"stop\[0\] is empty"),
        ({"stop": ("x" * 300,)}, r"stop\[0\] is 300 characters long"),
    ],
)
def test_out_of_range_parameters_are_invalid(generation: TextGeneration, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        generation.prepare(GenerationRequest("hello", **kwargs))


def test_empty_prompt_is_invalid(generation: TextGeneration) -> None:
    with pytest.raises(InvalidInputError, match="the prompt is empty"):
        generation.prepare(GenerationRequest(""))


def test_feed_casts_to_the_model_inputs(generation: TextGeneration) -> None:
    feed = generation.feed(np.ones((2, 3), dtype=np.int64), np.ones((2, 3), dtype=np.int64))
    assert set(feed) == {"token_ids", "attention_mask"}


# ---- incremental detokenizing ------------------------------------------------------------------------
def _stream(detok: IncrementalDetokenizer, ids: list[int]) -> tuple[list[str], bool]:
    pieces, stopped = [], False
    for token in ids:
        text, stopped = detok.add(token)
        pieces.append(text)
        if stopped:
            break
    return pieces, stopped


def test_a_character_split_across_tokens_comes_out_whole(bpe: Tokenizer) -> None:
    ids = bpe.encode("go 🚀 now").ids
    pieces, _ = _stream(IncrementalDetokenizer(bpe), ids)
    assert "".join(pieces) == "go 🚀 now"
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # a token that ends inside the character released nothing


def test_stop_sequence_spanning_tokens_is_cut_and_never_shown(bpe: Tokenizer) -> None:
    ids = bpe.encode("The lazy dog.\n\nThe end").ids
    pieces, stopped = _stream(IncrementalDetokenizer(bpe, ["\n\n"]), ids)
    assert stopped and "".join(pieces) == "The lazy dog."


def test_held_back_text_is_released_when_it_is_not_a_stop(bpe: Tokenizer) -> None:
    detok = IncrementalDetokenizer(bpe, ["dog house"])
    pieces, stopped = _stream(detok, bpe.encode("the lazy dog").ids)
    assert not stopped and "".join(pieces) == "the lazy "  # "dog" could start the stop sequence
    assert detok.flush() == "dog"
    more, stopped = _stream(detok, bpe.encode(" jumps").ids)
    assert not stopped and "".join(more) == " jumps"


def test_byte_level_text_is_decoded_incrementally_and_stays_exact(bpe: Tokenizer) -> None:
    """Only the ids after the last whole character are decoded again, yet the text after every token equals
    decoding all of them, also for random ids (bytes of characters split anyhow, special tokens)."""
    rng = np.random.default_rng(0)
    vocab = bpe.get_vocab_size()
    sequences = [bpe.encode("héllo wörld — “quoted” 日本語 🎉 " * 3).ids]
    sequences += [[int(i) for i in rng.integers(0, vocab, 60)] for _ in range(200)]
    sequences += [[int(i) for i in rng.integers(0, 260, 60)] for _ in range(200)]  # mostly single bytes
    for ids in sequences:
        detok = IncrementalDetokenizer(bpe)
        for n, token in enumerate(ids, 1):
            detok.add(token)
            assert detok._text == bpe.decode(ids[:n], skip_special_tokens=True)
    assert detok._settled > 0  # it did not decode everything every time
