"""Text in: strict UTF-8, not empty, within the model's character limit, tokenized with the model's own
tokenizer (no special tokens added, as training did), cut to a length.

Only the part of a text the model reads is tokenized: the head (or tail) is tokenized in a window of
characters that grows until it holds more tokens than needed, so a long text costs about as much as a
short one. Windows end at whitespace where they can, so the kept tokens are those of the whole text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from tokenizers import Tokenizer

from service.config import DATATYPES, ModelConfig, TextPreprocessing
from service.errors import InvalidInputError, ModelLoadError

MASK_INPUT = "attention_mask"

WINDOW_CHARS_PER_TOKEN = 8
"""First window: this many characters per token wanted (it grows fourfold while too short)."""
MARGIN_TOKENS = 8
"""Tokens beyond the ones kept that a window must hold, so a cut word at its edge never changes them."""
_SPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    truncated: bool


@dataclass(frozen=True, slots=True)
class TokenInputs:
    """A text model's integer token input and, when it has one, its `attention_mask`."""

    name: str
    dtype: np.dtype
    mask_dtype: np.dtype | None

    @classmethod
    def of(cls, model: str, config: ModelConfig, task: str, rank: int | None = None) -> TokenInputs:
        """`rank`, when given, is the number of dims (besides the batch) the task requires."""
        ids = [t for t in config.inputs if t.name != MASK_INPUT]
        if len(ids) != 1 or ids[0].datatype not in ("INT32", "INT64") or rank not in (None, len(ids[0].dims)):
            shape = f" of {rank} dimension{'s' * (rank != 1)}" if rank is not None else ""
            raise ModelLoadError(
                f"model '{model}': the {task} task needs one integer token input{shape} "
                "(and optionally `attention_mask`)"
            )
        mask = config.input(MASK_INPUT)
        mask_dtype = np.dtype(DATATYPES[mask.datatype]) if mask is not None else None
        return cls(ids[0].name, np.dtype(DATATYPES[ids[0].datatype]), mask_dtype)

    def feed(self, token_ids: ArrayLike, attention_mask: ArrayLike | None = None) -> dict[str, np.ndarray]:
        """The model's inputs; without a mask, every token counts."""
        ids = np.asarray(token_ids, dtype=self.dtype)
        feed = {self.name: ids}
        if self.mask_dtype is not None:
            mask = np.ones(ids.shape, self.mask_dtype) if attention_mask is None else attention_mask
            feed[MASK_INPUT] = np.asarray(mask, dtype=self.mask_dtype)
        return feed


def as_text(value: str | bytes, what: str, blank_ok: bool = False, max_chars: int | None = None) -> str:
    """`value` as a str that is not empty (nor only whitespace unless `blank_ok`), of at most `max_chars`
    characters; bytes must be valid UTF-8. `what` names the value in errors ("texts[2]")."""
    if max_chars is not None and len(value) > (4 * max_chars if isinstance(value, bytes) else max_chars):
        raise InvalidInputError(
            f"{what} is {len(value)} {'bytes' if isinstance(value, bytes) else 'characters'} long; this model "
            f"reads at most {max_chars} characters (limits.max_text_chars); shorten it"
        )
    if isinstance(value, bytes):
        raw = value
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 1].hex()
            raise InvalidInputError(
                f"{what} is not valid UTF-8 (byte 0x{bad} at offset {err.start}); send text encoded as UTF-8"
            ) from None
    if max_chars is not None and len(value) > max_chars:
        raise InvalidInputError(
            f"{what} is {len(value)} characters long; this model reads at most {max_chars} characters "
            "(limits.max_text_chars); shorten it"
        )
    if not (value if blank_ok else value.strip()):
        raise InvalidInputError(f"{what} is empty" if not value else f"{what} holds only whitespace")
    return value


class TextEncoder:
    """A model's tokenizer with the `text:` section of its config applied."""

    def __init__(self, tokenizer: Tokenizer, settings: TextPreprocessing) -> None:
        self.tokenizer = tokenizer
        self.settings = settings

    def ids(self, text: str) -> list[int]:
        if self.settings.lowercase:
            text = text.lower()
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def head(self, text: str, limit: int) -> Encoded:
        """The first `limit` tokens (classification reads the start of a text)."""
        window = max(limit, 1) * WINDOW_CHARS_PER_TOKEN
        while len(text) > window:
            end = _end_before_space(text, window)
            ids = self.ids(text[:end]) if end else []
            if len(ids) >= limit + MARGIN_TOKENS:
                return Encoded(ids[:limit], True)
            window *= 4
        ids = self.ids(text)
        return Encoded(ids[:limit], len(ids) > limit)

    def tail(self, text: str, limit: int) -> Encoded:
        """The last `limit` tokens (generation continues from the end of a prompt)."""
        window = max(limit, 1) * WINDOW_CHARS_PER_TOKEN
        while len(text) > window:
            start = _start_at_space(text, len(text) - window)
            ids = self.ids(text[start:]) if start else []
            if len(ids) >= limit + MARGIN_TOKENS:
                return Encoded(ids[-limit:] if limit else [], True)
            window *= 4
        ids = self.ids(text)
        return Encoded(ids[-limit:] if limit else [], len(ids) > limit)


def _end_before_space(text: str, end: int) -> int:
    """Where a head window of about `end` characters ends so that no word is cut: the start of the last
    whitespace run in its second half; 0 when there is none (the window must grow)."""
    cut = end
    while cut > end // 2 and not text[cut].isspace():
        cut -= 1
    if not text[cut].isspace():
        return 0
    while cut > 0 and text[cut - 1].isspace():
        cut -= 1
    return cut


def _start_at_space(text: str, start: int) -> int:
    """Where a tail window of about `len(text) - start` characters starts so that no word is cut: at the
    last whitespace character before a word in its first half (tokenizers that keep a word's leading space
    see it whole); 0 when there is none (the window must grow)."""
    match = _SPACE.search(text, start, start + (len(text) - start) // 2)
    if match is None:
        return 0
    pos = match.start()
    while pos + 1 < len(text) and text[pos + 1].isspace():
        pos += 1
    return pos
