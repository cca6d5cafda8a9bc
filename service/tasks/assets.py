"""Files a task model carries beside its graph: labels and tokenizer, read and checked at load time.

Both are opened through `config.inside`, so they must lie inside the model's folder. Messages name them as
config.yaml does (relative to the model's folder) and leave out library text: clients read them (a model that
failed to load says why); the details go to the log."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from service.config import ModelConfig, inside
from service.errors import ModelLoadError, quoted

log = logging.getLogger(__name__)


def read_labels(model: str, model_dir: Path, config: ModelConfig, classes: int | None) -> list[str]:
    """The labels file (one class per line), checked against the number of model outputs when known."""
    if config.labels is None:
        raise ModelLoadError(f"model '{model}': config.yaml names no `labels` file")
    path = inside(model, model_dir, config.labels, "labels")
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise _unreadable(model, "labels", config.labels, path, err, "a text file, one label per line") from None
    if classes is not None and len(labels) != classes:
        raise ModelLoadError(
            f"model '{model}': {quoted(config.labels)} (`labels`) has {len(labels)} labels but the model outputs "
            f"{classes} classes"
        )
    return labels


@dataclass(frozen=True, slots=True)
class ClassOutput:
    """A classifier's output (`probabilities`, or `logits` that a softmax turns into them) and its labels."""

    name: str
    labels: list[str]
    softmax: bool

    @classmethod
    def load(cls, model: str, model_dir: Path, config: ModelConfig) -> ClassOutput:
        out = config.output("probabilities") or config.outputs[0]
        labels = read_labels(model, model_dir, config, out.dims[-1] if out.dims[-1] > 0 else None)
        return cls(out.name, labels, out.name == "logits")

    def probabilities(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One request's probabilities (float64), in label order."""
        scores = np.asarray(outputs[self.name], dtype=np.float64).reshape(-1)
        if self.softmax:
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        return scores


def load_tokenizer(model: str, model_dir: Path, file_name: str) -> Tokenizer:
    path = inside(model, model_dir, file_name, "text.tokenizer")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # noqa: BLE001 - tokenizers raises plain Exception for missing/invalid files
        raise _unreadable(model, "text.tokenizer", file_name, path, err, "a Hugging Face tokenizers file") from None


def _unreadable(model: str, key: str, name: str, path: Path, err: Exception, expected: str) -> ModelLoadError:
    log.error("cannot read a model file", extra={"model": model, "key": key, "path": str(path), "error": str(err)})
    if not path.is_file():
        problem = "there is no such file in the model's folder"
    elif isinstance(err, UnicodeDecodeError):
        problem = f"it is not UTF-8 text (byte {err.start})"
    else:
        problem = f"it could not be read as {expected} (the server log has the details)"
    return ModelLoadError(f"model '{model}': cannot read {quoted(name)} (`{key}`): {problem}")


def vocab_size(model: str, model_dir: Path, config: ModelConfig) -> int | None:
    """The vocabulary of a text model's tokenizer (token ids beyond it would fail the model), else None."""
    if config.text is None:
        return None
    return int(load_tokenizer(model, model_dir, config.text.tokenizer).get_vocab_size(with_added_tokens=True))
