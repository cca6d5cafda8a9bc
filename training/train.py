"""What every recipe shares: seeding, Keras fitting with early stopping, timing, the held-out parity step."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.export import OPSET, check_parity, export_onnx

log = logging.getLogger("training")

PARITY_EXAMPLES = 100


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and ask TF for deterministic kernels (cheap on CPU)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class EpochLog(keras.callbacks.Callback):
    """One progress line per epoch (Keras' own progress bars are noise in logs)."""

    def __init__(self, name: str, epochs: int):
        super().__init__()
        self.name, self.epochs, self.start = name, epochs, time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        metrics = " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        log.info("%s epoch %d/%d %s (%.0fs)", self.name, epoch + 1, self.epochs, metrics, time.monotonic() - self.start)


@dataclass
class FitResult:
    epochs_run: int
    best_epoch: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def fit(
    model: keras.Model,
    x,
    y=None,
    *,
    validation,
    name: str,
    epochs: int,
    patience: int,
    monitor: str = "val_loss",
    **fit_kwargs,
) -> FitResult:
    """`model.fit` with early stopping on the validation split, restoring the best epoch's weights."""
    mode = "max" if "acc" in monitor else "min"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
    start = time.monotonic()
    history = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        verbose=0,
        callbacks=[stop, EpochLog(name, epochs)],
        **fit_kwargs,
    )
    seconds = time.monotonic() - start
    values = history.history.get(monitor, [0.0])
    best = int(np.argmax(values) if mode == "max" else np.argmin(values)) + 1
    return FitResult(len(values), best, seconds, {k: [float(x) for x in v] for k, v in history.history.items()})


@dataclass(frozen=True)
class Exported:
    path: Path
    parity_max_abs_diff: float
    parity_examples: int
    inputs: dict[str, np.ndarray]
    expected: np.ndarray
    """Keras' outputs on `inputs` (the held-out parity examples)."""
    opset: int = OPSET


def export_and_verify(model: keras.Model, path: Path, held_out: dict[str, np.ndarray]) -> Exported:
    """Export to ONNX, check the graph, compare ONNX Runtime with Keras on (up to) 100 held-out examples."""
    export_onnx(model, path)
    sample = {k: v[:PARITY_EXAMPLES] for k, v in held_out.items()}
    diff, expected = check_parity(model, path, sample)
    count = len(next(iter(sample.values())))
    log.info("%s: ONNX parity on %d held-out examples: max |diff| = %.3g", path.name, count, diff)
    return Exported(path, diff, count, sample, expected)
