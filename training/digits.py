"""digits_cnn: the CNN image classifier, trained on sklearn's digits (or an image folder) and exported."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from service.config import (
    DynamicBatching,
    ImagePreprocessing,
    ModelConfig,
    Normalization,
    TensorSpec,
)
from training import data as datasets
from training.export import onnx_predict, parity_reference, session
from training.handdrawn import drawn_digits
from training.images import SCALE, augment, prepare_image
from training.models import CnnSpec, build_cnn
from training.repository import library_versions, write_entry
from training.train import export_and_verify, fit, set_seed

log = logging.getLogger("training")

NAME = "digits_cnn"
DIGITS_SIZE = 32


@dataclass(frozen=True)
class DigitsSettings:
    data: Path | None = None
    """Image folder root/<class>/*.png|jpg; None trains on sklearn's digits."""
    name: str = NAME
    epochs: int = 20
    patience: int = 4
    batch_size: int = 64
    learning_rate: float = 1e-3
    augment_copies: int = 6
    seed: int = datasets.SEED
    limit: int | None = None
    """Use at most this many training examples (quick runs and tests)."""
    filters: tuple[int, ...] = (32, 64, 128)
    dense: int = 256
    handdrawn_per_digit: int = 20


def _load(settings: DigitsSettings) -> datasets.ImageData:
    return datasets.load_digits_32(DIGITS_SIZE) if settings.data is None else datasets.load_image_folder(settings.data)


def _handdrawn_accuracy(sess, height: int, width: int, per_digit: int) -> dict:
    images, labels = drawn_digits(per_digit)
    batch = np.stack([prepare_image(image, height, width, 1, "light_on_dark") for image in images])
    predicted = onnx_predict(sess, {"image": batch}).argmax(axis=1)
    per_class = {str(d): float(np.mean(predicted[labels == d] == d)) for d in range(10)}
    return {
        "examples": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "per_digit": per_class,
        "how": "PIL ImageDraw strokes, dark ink on light paper, canvases 64x64..300x240, then the config's "
        "preprocessing (grayscale, invert light background, fit 32x32, x/255)",
    }


def _config(settings: DigitsSettings, data: datasets.ImageData) -> ModelConfig:
    height, width, channels = data.images.shape[1:]
    return ModelConfig(
        task="image_classification",
        max_batch_size=64,
        inputs=(TensorSpec(name="image", datatype="FP32", dims=(height, width, channels)),),
        outputs=(TensorSpec(name="probabilities", datatype="FP32", dims=(len(data.classes),)),),
        dynamic_batching=DynamicBatching(),  # dispatch when an instance is free (bench/serving.py)
        labels="labels.txt",
        image=ImagePreprocessing(
            height=height,
            width=width,
            channels=channels,
            layout="NHWC",
            normalization=Normalization(scale=SCALE, mean=(0.0,), std=(1.0,)),
            ink=data.ink,
            resize="fit",
        ),
        description=f"CNN image classifier ({len(data.classes)} classes) trained on {data.source}",
    )


def run(settings: DigitsSettings, output: Path, workdir: Path) -> Path:
    set_seed(settings.seed)
    data = _load(settings)
    split = datasets.stratified_split(data.labels, val=0.15, test=0.15, seed=settings.seed)
    train_idx = datasets.subsample(split.train, settings.limit, settings.seed)
    clean, labels = data.images[train_idx], data.labels[train_idx]
    x_train = np.concatenate([clean, augment(clean, settings.augment_copies, settings.seed)])
    y_train = np.concatenate([labels, np.tile(labels[:, None], settings.augment_copies).ravel()])
    log.info(
        "%s: %d train images (+%d augmented copies each), %s",
        settings.name,
        len(clean),
        settings.augment_copies,
        split.sizes(),
    )

    height, width, channels = data.images.shape[1:]
    spec = CnnSpec(height, width, channels, len(data.classes), settings.filters, settings.dense)
    model = build_cnn(spec)
    model.compile(
        optimizer=keras.optimizers.Adam(settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    result = fit(
        model,
        x_train,
        y_train,
        name=settings.name,
        epochs=settings.epochs,
        patience=settings.patience,
        validation=(data.images[split.val], data.labels[split.val]),
        batch_size=settings.batch_size,
        shuffle=True,
    )

    onnx_path = workdir / settings.name / "model.onnx"
    exported = export_and_verify(model, onnx_path, {"image": data.images[split.test]})
    sess = session(onnx_path)
    metrics = {}
    for part, idx in (("validation", split.val), ("test", split.test)):
        predicted = onnx_predict(sess, {"image": data.images[idx]}).argmax(axis=1)
        metrics[part] = {"accuracy": float(np.mean(predicted == data.labels[idx])), "examples": len(idx)}
    if settings.data is None:
        metrics["handdrawn"] = _handdrawn_accuracy(sess, height, width, settings.handdrawn_per_digit)
    log.info("%s: metrics %s", settings.name, {k: v["accuracy"] for k, v in metrics.items()})

    config = _config(settings, data)
    card = {
        "name": settings.name,
        "task": "image_classification",
        "data": {
            "source": data.source,
            "classes": data.classes,
            "split": {
                "method": "stratified 70/15/15 (sklearn train_test_split)",
                "seed": settings.seed,
                "sizes": split.sizes(),
                "train_used": len(clean),
            },
            "augmentation": f"{settings.augment_copies} random copies per training image: rotation ±12°, "
            "shear ±0.2, scale 0.5-1.05 (width x0.55-1.15), shifts, stroke thinning/erosion/thickening/blur, "
            "contrast, background level",
        },
        "preprocessing": {
            **config.image.model_dump(mode="json"),
            "steps": [
                "convert to grayscale (L) or RGB per channels",
                "ink light_on_dark: invert when the median border pixel is > 127.5",
                "fit: resize keeping aspect ratio (Pillow bilinear) into height x width, "
                "centred, pad with the background colour (0 after inversion)",
                "pixel * scale (1/255), then (x - mean) / std",
            ],
        },
        "model": {
            "architecture": "CNN: 3 blocks of (conv3x3-BN-ReLU)x2, maxpool, dropout; dense 256; softmax",
            "spec": dataclasses.asdict(spec),
            "parameters": int(model.count_params()),
        },
        "training": _training_card(settings, result),
        "metrics": metrics,
        "quality_bar": {"test_accuracy_min": 0.97, "met": metrics["test"]["accuracy"] >= 0.97},
        "parity": {
            "max_abs_diff": exported.parity_max_abs_diff,
            "examples": exported.parity_examples,
            "tolerance": 1e-4,
            "against": "Keras on held-out test images",
        },
        "onnx": {"opset": exported.opset, "converter": "tf2onnx.convert.from_function"},
        "versions": library_versions(),
    }
    assets = {
        "labels.txt": "\n".join(data.classes) + "\n",
        "parity_reference.npz": parity_reference(exported.inputs, exported.expected),
    }
    return write_entry(output, settings.name, config, onnx_path, assets, card)


def _training_card(settings: DigitsSettings, result) -> dict:
    return {
        "optimizer": "Adam",
        "learning_rate": settings.learning_rate,
        "batch_size": settings.batch_size,
        "max_epochs": settings.epochs,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "early_stopping": {"monitor": "val_loss", "patience": settings.patience, "restore_best_weights": True},
        "seed": settings.seed,
        "seconds": round(result.seconds, 1),
    }
