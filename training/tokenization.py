"""Hugging Face `tokenizers`, trained offline on the training split and saved as tokenizer.json.

The server loads the same file and applies the config's `text:` section (max_length, pad_id), so training
encodes through the same `Tokenizer.encode` call the server makes; nothing is truncated or padded here
except explicitly by `pad`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"
BPE_PAD, BPE_BOS, BPE_EOS = "<|pad|>", "<|bos|>", "<|endoftext|>"


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """WordPiece over BERT-style normalised words; [PAD] is id 0 and [UNK] id 1."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK], min_frequency=2, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


LINE_SPLIT = r"\n|(?<=\n)[ \t]+"
"""Each newline, and the indentation that starts a line, is a pre-token of its own (so BPE never merges them)."""


def train_byte_bpe(texts: Iterable[str], vocab_size: int, lines: bool = False) -> Tokenizer:
    """Byte-level BPE (no unknown tokens); <|pad|> is id 0, <|bos|> 1, <|endoftext|> 2.

    With `lines`, every "\\n" is a token of its own and a line's indentation is split from its first word
    (`LINE_SPLIT`): plain byte-level BPE merges a newline with the indentation after it, so a prompt ending
    in "\\n" would end in a token the model has never seen before an indented line."""
    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if lines:
        split = pre_tokenizers.Split(Regex(LINE_SPLIT), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BPE_PAD, BPE_BOS, BPE_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids per text (no special tokens added), cut to the first `max_length`."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    return [e.ids[:max_length] if max_length else e.ids for e in encodings]


def pad(sequences: list[list[int]], pad_id: int = 0, length: int | None = None) -> np.ndarray:
    """Right-pad (or cut) to `length`, default the longest; int64 (N, length). Empty sequences get one pad."""
    length = length or max(1, max(len(s) for s in sequences))
    out = np.full((len(sequences), length), pad_id, dtype=np.int64)
    for row, seq in zip(out, sequences, strict=True):
        row[: min(len(seq), length)] = seq[:length]
    return out
