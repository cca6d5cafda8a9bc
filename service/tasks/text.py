"""Text in: strict UTF-8, not empty, tokenized with the model's own tokenizer (no special tokens added,
as training did), cut to a length."""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from service.config import TextPreprocessing
from service.errors import InvalidInputError

MAX_TEXTS = 256
"""Texts per request; larger jobs are split by the client."""


@dataclass(frozen=True, slots=True)
class Encoded:
    ids: list[int]
    truncated: bool


def as_text(value: str | bytes, what: str, blank_ok: bool = False) -> str:
    """`value` as a str that is not empty (nor only whitespace unless `blank_ok`); bytes must be valid
    UTF-8. `what` names the value in errors ("texts[2]")."""
    if isinstance(value, bytes):
        raw = value
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = raw[err.start : err.start + 1].hex()
            raise InvalidInputError(
                f"{what} is not valid UTF-8 (byte 0x{bad} at offset {err.start}); send text encoded as UTF-8"
            ) from None
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
        ids = self.ids(text)
        return Encoded(ids[:limit], len(ids) > limit)

    def tail(self, text: str, limit: int) -> Encoded:
        """The last `limit` tokens (generation continues from the end of a prompt)."""
        ids = self.ids(text)
        return Encoded(ids[-limit:] if limit else [], len(ids) > limit)
