"""The composed review and statement sentences sentiment_rnn trains on, its lexicon table and its eval set."""

from __future__ import annotations

import numpy as np
import pytest

from training import reviews
from training.sentiment_eval import Sentence, eval_sentences, score

pytestmark = pytest.mark.training


def test_adjectives_take_the_sign_both_lexicons_agree_on() -> None:
    positive, negative = reviews.sentiment_adjectives()
    assert {"excellent", "delicious", "lovely"} <= set(positive)
    assert {"terrible", "awful", "rude"} <= set(negative)
    assert not set(positive) & set(negative)
    vader = reviews.vader_lexicon()
    assert all(vader.get(w, 1.0) > 0 for w in positive) and all(vader.get(w, -1.0) < 0 for w in negative)


def test_composed_sentences_are_balanced_seeded_and_never_the_eval_set() -> None:
    texts, labels = reviews.review_sentences(300, seed=7)
    assert np.bincount(labels).tolist() == [300, 300, 300]
    assert len(set(texts)) == len(texts)
    again, _ = reviews.review_sentences(300, seed=7)
    assert again == texts
    assert not {s.text.lower() for s in eval_sentences()} & {t.lower() for t in texts}


def test_documentation_statements_hold_no_lexicon_word() -> None:
    statements = reviews.documentation_statements(50)
    vader = reviews.vader_lexicon()
    assert len(statements) == 50
    assert not any(w.strip(".,;:()'").lower() in vader for s in statements for w in s.split())


def test_token_lexicon_scores_whole_words_only() -> None:
    vocabulary = {"[PAD]": 0, "[UNK]": 1, "excellent": 2, "##ent": 3, "not": 4, "table": 5}
    table = reviews.token_lexicon(vocabulary)
    assert table.shape == (6, len(reviews.LEXICON_COLUMNS)) and table.dtype == np.float32
    assert table[2, 0] > 0.5 and table[2, 1] > 0.5  # VADER valence / 4, pattern polarity
    assert not table[[0, 1, 3, 5]].any()
    assert table[4, 3] == 1.0  # a negation


def test_eval_score_counts_per_class_and_lists_the_misses() -> None:
    sentences = [
        Sentence("a", "positive", "hotel"),
        Sentence("b", "neutral", "place"),
        Sentence("c", "neutral", "hotel"),
    ]
    result = score(sentences, ["positive", "negative", "neutral"])
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["per_class"]["neutral"] == {"accuracy": 0.5, "right": 1, "sentences": 2}
    assert result["per_domain"]["hotel"]["accuracy"] == 1.0
    assert result["wrong"] == [{"text": "b", "label": "neutral", "predicted": "negative"}]
