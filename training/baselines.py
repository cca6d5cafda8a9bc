"""Baselines the neural models must beat, trained and tested on the same splits."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

TFIDF_C_GRID = (0.5, 1.0, 2.0, 4.0, 8.0)


def tfidf_logreg(
    train: tuple[list[str], np.ndarray], val: tuple[list[str], np.ndarray], test: tuple[list[str], np.ndarray]
) -> dict:
    """TF-IDF (word 1-2 grams, sublinear tf, min_df 2) + logistic regression; C picked by validation macro-F1."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(train[0])
    x_val, x_test = vectorizer.transform(val[0]), vectorizer.transform(test[0])
    best_c, best_f1, best = TFIDF_C_GRID[0], -1.0, LogisticRegression()
    for c in TFIDF_C_GRID:
        model = LogisticRegression(C=c, max_iter=3000).fit(x_train, train[1])
        score = f1_score(val[1], model.predict(x_val), average="macro")
        if score > best_f1:
            best_c, best_f1, best = c, score, model
    return {
        "model": "TF-IDF (word 1-2 grams, sublinear tf, min_df=2) + LogisticRegression",
        "C": best_c,
        "selection": f"C in {list(TFIDF_C_GRID)} by validation macro-F1",
        "validation": _scores(val[1], best.predict(x_val)),
        "test": _scores(test[1], best.predict(x_test)),
    }


def _scores(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(y, predicted)), "macro_f1": float(f1_score(y, predicted, average="macro"))}


class AddOneBigram:
    """P(b | a) = (count(a, b) + 1) / (count(a) + V) over token ids."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.pairs: dict[tuple[int, int], int] = {}
        self.contexts = np.zeros(vocab_size, dtype=np.int64)

    def fit(self, sequences: list[np.ndarray]) -> AddOneBigram:
        for seq in sequences:
            for a, b in zip(seq[:-1].tolist(), seq[1:].tolist(), strict=True):
                self.pairs[(a, b)] = self.pairs.get((a, b), 0) + 1
                self.contexts[a] += 1
        return self

    def nll(self, previous: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Negative log-likelihood (nats) of each target given the token before it."""
        counts = np.array([self.pairs.get((a, b), 0) for a, b in zip(previous.tolist(), targets.tolist(), strict=True)])
        return -np.log((counts + 1) / (self.contexts[previous] + self.vocab_size))
