"""Text generation: prompt and parameters in (checked), token ids out to the scheduler, text back.

- The prompt is tokenized with the model's tokenizer.json (no special tokens added, as training did);
  `generation.bos_id`, when set, is put in front. A prompt longer than `context_length - 1` tokens
  keeps its last tokens (the model continues from the end of a text), so at least one token can be
  generated; the response reports the truncation.
- `IncrementalDetokenizer` turns generated tokens into text: each step decodes the whole generated id
  list and releases the new suffix, so a character split across byte-level tokens, or pieces that
  merge, come out right. Text is held back while it ends in an incomplete character or could be the
  start of a stop sequence; a stop sequence ends the text just before it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders

from service.config import ModelConfig
from service.errors import InvalidInputError, ModelLoadError
from service.tasks.assets import load_tokenizer
from service.tasks.text import TextEncoder, TokenInputs, as_text
from service.types import GenerationRequest, SamplingParams

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 256
MAX_TEMPERATURE = 10.0
MAX_REPETITION_PENALTY = 10.0
INCOMPLETE = "\ufffd"
"""What the decoder shows for bytes that do not (yet) form a whole UTF-8 character."""


@dataclass(frozen=True, slots=True)
class GenerationInput:
    """A checked request, ready for the scheduler."""

    prompt_ids: list[int]
    prompt_truncated: bool
    max_new_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...]


class IncrementalDetokenizer:
    """Implements the scheduler's `Detokenizer` for one request."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._ids: list[int] = []
        self._text = ""
        self._sent = 0
        """Characters of `_text` already released."""
        self._byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
        self._settled, self._settled_text = 0, ""
        """Byte-level tokenizers only: `_ids[:_settled]` decode to `_settled_text`, ending on a whole character."""

    def add(self, token_id: int) -> tuple[str, bool]:
        self._ids.append(token_id)
        text = self._text = self._decode()
        if self._stop:
            start = max(0, self._sent - max(len(s) for s in self._stop))
            hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
            if hits:
                return self._release(max(min(hits), self._sent)), True
        if text.endswith(INCOMPLETE):
            return "", False
        return self._release(len(text) - self._held_back(text)), False

    def flush(self) -> str:
        return self._release(len(self._text))

    def _decode(self) -> str:
        """The text of all ids so far. A byte-level decoder turns the tokens' bytes, joined, into UTF-8 (bad
        bytes become U+FFFD), so the text of a prefix that ends on a whole character never changes and only
        the ids after it are decoded again (a few, not the whole generation); other decoders decode all."""
        if not self._byte_level:
            return self._tokenizer.decode(self._ids, skip_special_tokens=True)
        tail = self._tokenizer.decode(self._ids[self._settled :], skip_special_tokens=True)
        text = self._settled_text + tail
        if not tail.endswith(INCOMPLETE):
            self._settled, self._settled_text = len(self._ids), text
        return text

    def _release(self, end: int) -> str:
        if end <= self._sent:
            return ""
        delta = self._text[self._sent : end]
        self._sent = end
        return delta

    def _held_back(self, text: str) -> int:
        """Length of the longest end of `text` that a stop sequence starts with."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest


class TextGeneration:
    """One text_generation model's request checks, tokenization and model-call adapter."""

    def __init__(self, model: str, config: ModelConfig, model_dir: Path) -> None:
        if config.generation is None or config.text is None:
            raise ModelLoadError(f"model '{model}': the generation task needs `generation:` and `text:` sections")
        out = config.output("logits") or config.outputs[0]
        self.model = model
        self.generation = config.generation
        self.max_chars = config.limits.max_text_chars
        self.tokens = TokenInputs.of(model, config, "generation")
        self.output = out.name
        self.tokenizer = load_tokenizer(model, model_dir, config.text.tokenizer)
        self.encoder = TextEncoder(self.tokenizer, config.text)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)

    def prepare(self, request: GenerationRequest) -> GenerationInput:
        """Check the parameters (InvalidInputError naming the bad one) and tokenize the prompt."""
        r = request
        sampling = self.sampling(r.temperature, r.top_k, r.top_p, r.seed, r.repetition_penalty)
        max_new_tokens, limit = r.max_new_tokens, self.generation.max_new_tokens_limit
        if max_new_tokens == 0:
            max_new_tokens = min(self.generation.default_max_new_tokens, limit)
        elif not 1 <= max_new_tokens <= limit:
            raise InvalidInputError(
                f"max_new_tokens must be between 1 and {limit} for '{self.model}', got {max_new_tokens}"
            )
        stops = check_stop(r.stop)
        text = as_text(r.prompt, "the prompt", blank_ok=True, max_chars=self.max_chars)
        bos = self.generation.bos_id
        room = self.generation.context_length - 1 - (bos is not None)
        encoded = self.encoder.tail(text, room)
        ids = ([bos] if bos is not None else []) + encoded.ids
        if not encoded.ids:
            raise InvalidInputError("the prompt has no tokens the model can read")
        return GenerationInput(ids, encoded.truncated, max_new_tokens, sampling, stops)

    def sampling(
        self,
        temperature: float | None,
        top_k: int,
        top_p: float | None,
        seed: int | None,
        repetition_penalty: float | None = None,
    ) -> SamplingParams:
        temperature = self.generation.default_temperature if temperature is None else temperature
        top_p = self.generation.default_top_p if top_p is None else top_p
        penalty = self.generation.default_repetition_penalty if repetition_penalty is None else repetition_penalty
        if not (math.isfinite(temperature) and 0.0 <= temperature <= MAX_TEMPERATURE):
            raise InvalidInputError(
                f"temperature must be between 0 and {MAX_TEMPERATURE:g} (0 is greedy), got {temperature:g}"
            )
        if not 0 <= top_k <= self.vocab_size:
            raise InvalidInputError(
                f"top_k must be between 0 (no limit) and {self.vocab_size} (the vocabulary "
                f"of '{self.model}'), got {top_k}"
            )
        if not (math.isfinite(top_p) and 0.0 < top_p <= 1.0):
            raise InvalidInputError(f"top_p must be in (0, 1], got {top_p:g}")
        if seed is not None and not 0 <= seed < 2**64:
            raise InvalidInputError(f"seed must be between 0 and 2**64 - 1, got {seed}")
        if not (math.isfinite(penalty) and 1.0 <= penalty <= MAX_REPETITION_PENALTY):
            raise InvalidInputError(
                f"repetition_penalty must be between 1 (none) and {MAX_REPETITION_PENALTY:g}, got {penalty:g}"
            )
        return SamplingParams(temperature, top_k, top_p, seed, penalty)

    def detokenizer(self, stop: Sequence[str]) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.tokenizer, stop)

    def feed(self, token_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """The model's inputs for one forward step of the scheduler."""
        return self.tokens.feed(token_ids, attention_mask)


def check_stop(stop: Sequence[str | bytes]) -> tuple[str, ...]:
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidInputError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stop)}")
    out = []
    for i, value in enumerate(stop):
        text = as_text(value, f"stop[{i}]", blank_ok=True)
        if len(text) > MAX_STOP_CHARS:
            raise InvalidInputError(f"stop[{i}] is {len(text)} characters long; the limit is {MAX_STOP_CHARS}")
        out.append(text)
    return tuple(out)
