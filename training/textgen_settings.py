"""textgen_transformer's training settings (`TextgenSettings`): data, schedule, model size and the
continued-training options; the recipe itself is training/textgen.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training import data as datasets

NAME = "textgen_transformer"


@dataclass(frozen=True)
class TextgenSettings:
    data: list[Path] | None = None
    """UTF-8 text files or folders of *.txt; None uses the standard library's source (training/textgen_corpus.py)."""
    name: str = NAME
    epochs: int = 5
    """Passes over the training windows, the learning rate annealed over all of them. On 2 shared CPU cores
    (nice -n 19) five passes took 70 minutes under other sessions' load (8.7 to 24 minutes a pass): validation
    perplexity 54, 33, 27, 24.4, 23.7 after each; two passes (16 minutes) left the model far from converged.
    The committed model continued from those five for `continue_epochs` more (`init_from`): 22.1 after nine."""
    patience: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-3
    """Peak of the schedule: linear warm-up over `warmup_steps`, then cosine decay to a tenth of it."""
    warmup_steps: int = 100
    weight_decay: float = 0.01
    vocab_size: int = 4096
    context_length: int = 256
    train_stride: int = 256
    d_model: int = 128
    heads: int = 4
    layers: int = 4
    dropout: float = 0.0
    seed: int = datasets.SEED
    limit: int | None = None
    """Use at most this many training windows (a seeded random subset; all ~9,900 for Python 3.11's library)."""
    eval_prompts: int | None = None
    """Complete only the first this many held-out prompts (training/eval/textgen_prompts.jsonl); None: all."""
    init_from: Path | None = None
    """A trained textgen entry (e.g. models/textgen_transformer) to continue training: its tokenizer is kept and
    its model.onnx weights are loaded into the Keras model (`load_onnx_weights`, checked against ONNX Runtime);
    then `continue_epochs` passes on a fresh schedule peaking at `continue_learning_rate`."""
    continue_epochs: int = 4
    """Passes when continuing from `init_from` (`epochs` is for training from scratch). Four took 70 minutes
    (8.6 to 31 minutes a pass under load): validation perplexity 24.0, 23.1, 22.3, 22.1, test 25.0 -> 23.3."""
    continue_learning_rate: float = 1e-3
    """Peak learning rate when continuing: half the from-scratch peak, so the first passes do not undo the
    trained weights, then cosine decay to a tenth of it as from scratch."""
