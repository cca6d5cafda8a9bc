"""The skeleton every training recipe (`digits`, `sentiment`, `textgen`) shares around its own data and model:

    set_seed → data and split → build, compile, `fit` → `export` (ONNX, parity with Keras checked)
    → `check_padding` (text models) → metrics on the exported session → `model_card` → `write_entry`

A recipe's `run` does its own steps and calls these for the shared ones, so the card's common sections (model,
training, parity, onnx, versions) are written once, here, with the same fields for every model.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from training.repository import MODEL_FILE, library_versions
from training.train import Exported, FitResult, export_and_verify

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-4
"""Largest |ONNX Runtime - Keras| the export accepts (checked by `export_and_verify`), as the cards say."""


class Settings(Protocol):
    """What every recipe's settings have."""

    name: str
    epochs: int
    patience: int
    batch_size: int
    learning_rate: float
    seed: int


def export(model: keras.Model, settings: Settings, workdir: Path, held_out: dict[str, np.ndarray]) -> Exported:
    """`model` as workdir/<name>/model.onnx, its outputs checked against Keras on `held_out`."""
    return export_and_verify(model, workdir / settings.name / MODEL_FILE, held_out)


def check_padding(settings: Settings, invariance: float, tolerance: float, what: str = "probabilities") -> None:
    """Refuse a text model whose outputs change with the padding after its real tokens by more than `tolerance`."""
    log.info("%s: padding invariance max |diff| = %.3g", settings.name, invariance)
    if invariance > tolerance:
        raise RuntimeError(f"{settings.name}: padding changes the {what} by {invariance:.3g} > {tolerance:g}")


def training_card(
    settings: Settings, optimizer: str, seconds: float, learning_rate: str | None = None, **details: Any
) -> dict[str, Any]:
    """The card's `training` section: the settings every recipe has (`learning_rate` describes a schedule),
    then the recipe's `details` (epochs run, ensemble members, ...), early stopping, the seed and the time."""
    return {
        "optimizer": optimizer,
        "learning_rate": settings.learning_rate if learning_rate is None else learning_rate,
        "batch_size": settings.batch_size,
        "max_epochs": settings.epochs,
        **details,
        "early_stopping": {"monitor": "val_loss", "patience": settings.patience, "restore_best_weights": True},
        "seed": settings.seed,
        "seconds": round(seconds, 1),
    }


def fitted(result: FitResult) -> dict[str, int]:
    """The epochs of one `fit`, for `training_card`."""
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch}


def model_card(
    settings: Settings,
    task: str,
    *,
    data: dict[str, Any],
    preprocessing: dict[str, Any],
    model: keras.Model,
    architecture: str,
    spec: Any,
    training: dict[str, Any],
    metrics: dict[str, Any],
    quality_bar: dict[str, Any],
    exported: Exported,
    parity: dict[str, Any],
    baseline: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """model_card.json: what the model was trained on and how, how it scores against its quality bar (and
    `baseline`), and how closely the ONNX export matches Keras (`parity`: what it was compared on, and any
    further checks). `extra` sections (samples, the KV-cache model) go before the parity section."""
    card: dict[str, Any] = {
        "name": settings.name,
        "task": task,
        "data": data,
        "preprocessing": preprocessing,
        "model": {
            "architecture": architecture,
            "spec": dataclasses.asdict(spec),
            "parameters": int(model.count_params()),
        },
        "training": training,
        "metrics": metrics,
        **({"baseline": baseline} if baseline is not None else {}),
        "quality_bar": quality_bar,
        **(extra or {}),
        "parity": {
            "max_abs_diff": exported.parity_max_abs_diff,
            "examples": exported.parity_examples,
            "tolerance": PARITY_TOLERANCE,
            **parity,
        },
        "onnx": {"opset": exported.opset, "converter": "tf2onnx.convert.from_function"},
        "versions": library_versions(),
    }
    return card
