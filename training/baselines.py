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


class KneserNeyTrigram:
    """Interpolated Kneser-Ney token trigram (absolute discount `discount` at every order): the trigram
    estimate falls back to a continuation bigram, which falls back to continuation unigrams mixed with the
    uniform distribution over the vocabulary, so every token keeps a probability above zero.

    Counts live in sorted int64 keys (a*V + b, (a*V + b)*V + c) searched with numpy, so fitting and scoring
    millions of tokens takes seconds. Sequences are scored with their own history; the first targets of a
    stream see `start` where they have no history."""

    def __init__(self, vocab_size: int, discount: float = 0.75):
        self.vocab_size, self.discount = vocab_size, discount

    def fit(self, stream: np.ndarray) -> KneserNeyTrigram:
        v, s = self.vocab_size, np.asarray(stream, dtype=np.int64)
        tri, self.tri_counts = np.unique((s[:-2] * v + s[1:-1]) * v + s[2:], return_counts=True)
        self.tri_keys = tri
        ab = tri // v  # distinct trigram types by their (a, b) history
        self.ab_keys, ab_index = np.unique(ab, return_inverse=True)
        self.ab_totals = np.bincount(ab_index, weights=self.tri_counts)  # c(a b ·)
        self.ab_types = np.bincount(ab_index)  # N1+(a b ·)
        bc = tri % (v * v)  # continuation counts N1+(· b c), one per distinct trigram type
        self.bc_keys, self.bc_cont = np.unique(bc, return_counts=True)
        b = self.bc_keys // v
        self.b_totals = np.bincount(b, weights=self.bc_cont, minlength=v)  # N1+(· b ·)
        self.b_types = np.bincount(b, minlength=v)  # N1+(b ·) over continuation bigram types
        c = self.bc_keys % v
        self.unigram_cont = np.bincount(c, minlength=v).astype(np.float64)  # N1+(· c)
        return self

    def _lookup(self, keys: np.ndarray, table: np.ndarray, values: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        return np.where(table[at] == keys, values[at], 0).astype(np.float64)

    def probabilities(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
        v, d = self.vocab_size, self.discount
        total = self.unigram_cont.sum()
        p1 = np.maximum(self.unigram_cont[c] - d, 0) / total + d * np.count_nonzero(self.unigram_cont) / total / v
        b_total = self.b_totals[b]
        bc = self._lookup(b * v + c, self.bc_keys, self.bc_cont)
        p2 = np.where(
            b_total > 0,
            (np.maximum(bc - d, 0) + d * self.b_types[b] * p1) / np.maximum(b_total, 1),
            p1,
        )
        ab = a * v + b
        ab_total = self._lookup(ab, self.ab_keys, self.ab_totals)
        ab_types = self._lookup(ab, self.ab_keys, self.ab_types)
        abc = self._lookup(ab * v + c, self.tri_keys, self.tri_counts)
        return np.where(ab_total > 0, (np.maximum(abc - d, 0) + d * ab_types * p2) / np.maximum(ab_total, 1), p2)

    def nll(self, stream: np.ndarray, start: int) -> np.ndarray:
        """Negative log-likelihood (nats) of every token of `stream` after the first."""
        s = np.concatenate([[start], np.asarray(stream, dtype=np.int64)])
        return -np.log(self.probabilities(s[:-2], s[1:-1], s[2:]))
