"""Files a task model carries beside its graph: labels and tokenizer, read and checked at load time."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from service.config import ModelConfig
from service.errors import ModelLoadError


def read_labels(model: str, model_dir: Path, config: ModelConfig, classes: int | None) -> list[str]:
    """The labels file (one class per line), checked against the number of model outputs when known."""
    if config.labels is None:
        raise ModelLoadError(f"model '{model}': config.yaml names no `labels` file")
    path = model_dir / config.labels
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"model '{model}': cannot read labels file {path}: {err}") from None
    if classes is not None and len(labels) != classes:
        raise ModelLoadError(
            f"model '{model}': {path.name} has {len(labels)} labels but the model outputs {classes} classes"
        )
    return labels


def load_tokenizer(model: str, model_dir: Path, file_name: str) -> Tokenizer:
    path = model_dir / file_name
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exception for missing/invalid files
        raise ModelLoadError(f"model '{model}': cannot load tokenizer {path}: {err}") from None


def vocab_size(model: str, model_dir: Path, config: ModelConfig) -> int | None:
    """The vocabulary of a text model's tokenizer (token ids beyond it would fail the model), else None."""
    if config.text is None:
        return None
    return int(load_tokenizer(model, model_dir, config.text.tokenizer).get_vocab_size(with_added_tokens=True))
