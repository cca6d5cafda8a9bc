"""sentiment_rnn's evaluation set (`training/eval/sentiment.jsonl`, written for this project and never
trained on), read through the server's own text preprocessing, and its score."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVAL_SET = Path(__file__).resolve().parent / "eval" / "sentiment.jsonl"


@dataclass(frozen=True)
class Sentence:
    text: str
    label: str
    domain: str


def eval_sentences(path: Path = EVAL_SET) -> list[Sentence]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Sentence(r["text"], r["label"], r["domain"]) for r in rows]


def server_probabilities(entry: Path, texts: list[str], run: Callable | None = None) -> np.ndarray:
    """Probabilities of the model in `entry` for `texts`, each prepared by the server's sentiment task
    (`service.tasks.sentiment`, with the entry's config.yaml) and run alone, as a lone request would be."""
    from service.config import load_model_config
    from service.tasks.sentiment import SentimentAnalysis

    task = SentimentAnalysis(entry.name, load_model_config(entry), entry)
    if run is None:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(entry / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        run = sess.run
    feeds = [feed for feed, _, _ in task.preprocess(texts)]
    return np.concatenate([run(None, feed)[0] for feed in feeds])


def score(sentences: list[Sentence], predicted: list[str]) -> dict:
    """Accuracy overall, per class and per domain, and the sentences read wrong."""

    def accuracy(rows: list[int]) -> dict:
        right = sum(sentences[i].label == predicted[i] for i in rows)
        return {"accuracy": right / len(rows), "right": right, "sentences": len(rows)}

    groups: dict[str, dict[str, list[int]]] = {"per_class": {}, "per_domain": {}}
    for i, s in enumerate(sentences):
        groups["per_class"].setdefault(s.label, []).append(i)
        groups["per_domain"].setdefault(s.domain, []).append(i)
    return {
        **accuracy(list(range(len(sentences)))),
        **{g: {k: accuracy(v) for k, v in sorted(rows.items())} for g, rows in groups.items()},
        "wrong": [
            {"text": s.text, "label": s.label, "predicted": p}
            for s, p in zip(sentences, predicted, strict=True)
            if s.label != p
        ],
    }


def evaluate(entry: Path) -> dict:
    """The entry's score on training/eval/sentiment.jsonl, each sentence prepared by the server's own code."""
    sentences = eval_sentences()
    labels = (entry / "labels.txt").read_text(encoding="utf-8").split()
    probabilities = server_probabilities(entry, [s.text for s in sentences])
    return {"set": "training/eval/sentiment.jsonl", **score(sentences, [labels[i] for i in probabilities.argmax(1)])}
