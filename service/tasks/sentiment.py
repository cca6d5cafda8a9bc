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

from service.config import ModelConfig
from service.errors import InvalidInputError, ModelLoadError
from service.tasks.assets import ClassOutput, load_tokenizer
from service.tasks.counts import check_item_count
from service.tasks.text import TextEncoder, TokenInputs, as_text


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
        self.model = model
        self.tokens = TokenInputs.of(model, config, "sentiment", rank=1)
        self.max_length = config.text.max_length
        self.limits = config.limits
        self.encoder = TextEncoder(load_tokenizer(model, model_dir, config.text.tokenizer), config.text)
        self.classes = ClassOutput.load(model, model_dir, config)
        self.labels = self.classes.labels

    def check_count(self, texts: Sequence[object]) -> None:
        check_item_count(texts, "texts", self.limits.max_items)

    def preprocess(self, texts: Sequence[str | bytes]) -> list[tuple[dict[str, np.ndarray], int, bool]]:
        """Per text: its feed (a batch of one), the tokens read and whether it was truncated."""
        self.check_count(texts)
        prepared = []
        for i, value in enumerate(texts):
            text = as_text(value, f"texts[{i}]", max_chars=self.limits.max_text_chars)
            encoded = self.encoder.head(text, self.max_length)
            if not encoded.ids:
                raise InvalidInputError(f"texts[{i}] has no tokens the model can read")
            prepared.append((self.tokens.feed([encoded.ids]), len(encoded.ids), encoded.truncated))
        return prepared

    def postprocess(self, outputs: Mapping[str, np.ndarray], tokens: int, truncated: bool) -> SentimentResult:
        scores = self.classes.probabilities(outputs)
        best = int(np.argmax(scores))
        return SentimentResult(
            label=self.labels[best],
            probability=float(scores[best]),
            scores={label: float(p) for label, p in zip(self.labels, scores, strict=True)},
            tokens=tokens,
            truncated=truncated,
        )
