"""Sentiment analysis: UTF-8 texts in, the label and every class's probability out.

Each text is tokenized with the model's tokenizer.json (as training did: no special tokens added) and
cut to the first `text.max_length` tokens; the response says when that happened. The batcher pads
texts of different lengths with the input's `pad_value` (the model masks padding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.config import DATATYPES, ModelConfig
from service.errors import InvalidInputError, ModelLoadError
from service.tasks.assets import load_tokenizer, read_labels
from service.tasks.text import TextEncoder, as_text

MASK_INPUT = "attention_mask"


@dataclass(frozen=True, slots=True)
class SentimentResult:
    label: str
    probability: float
    scores: dict[str, float]
    """Every class in label order."""
    tokens: int
    truncated: bool


class SentimentAnalysis:
    """One sentiment model's pre- and post-processing."""

    def __init__(self, model: str, config: ModelConfig, model_dir: Path) -> None:
        if config.text is None or not config.batched:
            raise ModelLoadError(f"model '{model}': the sentiment task needs a `text:` section and max_batch_size > 0")
        ids = [t for t in config.inputs if t.name != MASK_INPUT]
        if len(ids) != 1 or ids[0].datatype not in ("INT32", "INT64") or len(ids[0].dims) != 1:
            raise ModelLoadError(f"model '{model}': the sentiment task needs one integer token input of dims [-1] "
                                 "(and optionally `attention_mask`)")  # fmt: skip
        self.model = model
        self.input = ids[0].name
        self.dtype = np.dtype(DATATYPES[ids[0].datatype])
        mask = config.input(MASK_INPUT)
        self.mask_dtype = np.dtype(DATATYPES[mask.datatype]) if mask is not None else None
        out = config.output("probabilities") or config.outputs[0]
        self.output = out.name
        self.softmax = out.name == "logits"
        self.max_length = config.text.max_length
        self.limits = config.limits
        self.encoder = TextEncoder(load_tokenizer(model, model_dir, config.text.tokenizer), config.text)
        self.labels = read_labels(model, model_dir, config, out.dims[-1] if out.dims[-1] > 0 else None)

    def check_count(self, texts: Sequence[object]) -> None:
        if not texts:
            raise InvalidInputError("the request has no texts; send at least one")
        if len(texts) > self.limits.max_items:
            raise InvalidInputError(
                f"{len(texts)} texts in one request; send at most {self.limits.max_items} per request "
                "(limits.max_items)"
            )

    def preprocess(self, texts: Sequence[str | bytes]) -> list[tuple[dict[str, np.ndarray], int, bool]]:
        """Per text: its feed (a batch of one), the tokens read and whether it was truncated."""
        self.check_count(texts)
        prepared = []
        for i, value in enumerate(texts):
            text = as_text(value, f"texts[{i}]", max_chars=self.limits.max_text_chars)
            encoded = self.encoder.head(text, self.max_length)
            if not encoded.ids:
                raise InvalidInputError(f"texts[{i}] has no tokens the model can read")
            feed = {self.input: np.asarray([encoded.ids], dtype=self.dtype)}
            if self.mask_dtype is not None:
                feed[MASK_INPUT] = np.ones((1, len(encoded.ids)), dtype=self.mask_dtype)
            prepared.append((feed, len(encoded.ids), encoded.truncated))
        return prepared

    def postprocess(self, outputs: Mapping[str, np.ndarray], tokens: int, truncated: bool) -> SentimentResult:
        scores = np.asarray(outputs[self.output], dtype=np.float64).reshape(-1)
        if self.softmax:
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        best = int(np.argmax(scores))
        return SentimentResult(
            label=self.labels[best],
            probability=float(scores[best]),
            scores={label: float(p) for label, p in zip(self.labels, scores, strict=True)},
            tokens=tokens,
            truncated=truncated,
        )
