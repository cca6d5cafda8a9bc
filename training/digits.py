"""digits_cnn: the CNN image classifier, trained on sklearn's handwritten digits and printed digits on pages
(or on an image folder), exported, and scored on the committed evaluation pages (training/eval/)."""

from __future__ import annotations

import logging
import time
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
from service.tasks.image_classification import prepare
from training import data as datasets
from training import recipe
from training.digit_sets import (
    EVAL_PAGES,
    SPEC,
    TRAIN_STYLE,
    Examples,
    eval_pages,
    font_glyphs,
    on_pages,
    scan_glyphs,
    score,
    served,
)
from training.export import onnx_predict, parity_reference, session
from training.fonts import LICENCES, train_fonts
from training.handdrawn import drawn_digits
from training.images import SCALE, augment
from training.models import CnnSpec, build_cnn
from training.repository import write_entry
from training.train import fit, set_seed

log = logging.getLogger("training")

NAME = "digits_cnn"
DIGITS_SIZE = 32


@dataclass(frozen=True)
class DigitsSettings:
    data: Path | None = None
    """Image folder root/<class>/*.png|jpg; None trains on sklearn's digits and printed digits, on pages."""
    name: str = NAME
    epochs: int = 12
    patience: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    augment_copies: int = 6
    """Image folders only: randomly distorted copies of each training image."""
    pages_per_scan: int = 4
    """Pages each training scan is drawn on, besides the scan itself."""
    pages_per_font_digit: int = 10
    """Pages each digit is printed on in each training font."""
    seed: int = datasets.SEED
    limit: int | None = None
    """Use at most this many training scans and printed pages (quick runs and tests)."""
    filters: tuple[int, ...] = (32, 64, 128)
    dense: int = 256
    handdrawn_per_digit: int = 20


def _load(settings: DigitsSettings) -> datasets.ImageData:
    return datasets.load_digits_32(DIGITS_SIZE) if settings.data is None else datasets.load_image_folder(settings.data)


def _handdrawn_accuracy(sess, per_digit: int) -> dict:
    images, labels = drawn_digits(per_digit)
    batch = np.stack([prepare(image, SPEC) for image in images])
    predicted = onnx_predict(sess, {"image": batch}).argmax(axis=1)
    per_class = {str(d): float(np.mean(predicted[labels == d] == d)) for d in range(10)}
    return {
        "examples": len(labels),
        "accuracy": float(np.mean(predicted == labels)),
        "per_digit": per_class,
        "how": "PIL ImageDraw strokes, dark ink on light paper, canvases 64x64..300x240, then the config's "
        "preprocessing (locate the ink, crop, scale, centre by mass)",
    }


def _eval_pages_accuracy(sess) -> dict:
    """The committed evaluation pages (training/eval/), read as files and prepared as the server does."""
    pages = eval_pages()
    batch = np.stack([served(page.path.read_bytes()) for page in pages])
    result = score(pages, onnx_predict(sess, {"image": batch}).argmax(axis=1))
    return {**result, "how": f"{EVAL_PAGES.relative_to(EVAL_PAGES.parents[2])} (see training/eval/README.md)"}


def _page_sets(settings: DigitsSettings, data: datasets.ImageData, split: datasets.Split, train_idx) -> tuple:
    """Training and validation examples: the scans as they are, the scans on pages, printed digits on pages."""
    assert data.scans is not None
    start, seed, fonts = time.monotonic(), settings.seed, train_fonts()
    printed_limit = settings.limit

    def scans_and_pages(idx: np.ndarray, copies: int, page_seed: int) -> list[Examples]:
        glyphs = scan_glyphs(data.scans[idx], data.labels[idx], copies, page_seed)
        return [Examples(data.images[idx], data.labels[idx]), on_pages(glyphs, TRAIN_STYLE, page_seed)]

    train = Examples.join(
        [
            *scans_and_pages(train_idx, settings.pages_per_scan, seed),
            on_pages(font_glyphs(fonts, settings.pages_per_font_digit, seed + 1, printed_limit), TRAIN_STYLE, seed + 1),
        ]
    )
    val_printed = None if printed_limit is None else max(10, printed_limit // 4)
    validation = Examples.join(
        [
            *scans_and_pages(split.val, 1, seed + 2),
            on_pages(font_glyphs(fonts, 1, seed + 3, val_printed), TRAIN_STYLE, seed + 3),
        ]
    )
    seconds = time.monotonic() - start
    log.info(
        "%s: %d training and %d validation examples drawn and prepared in %.0fs (%d fonts)",
        settings.name,
        len(train.labels),
        len(validation.labels),
        seconds,
        len(fonts),
    )
    return train, validation, seconds, len(fonts)


def _config(settings: DigitsSettings, data: datasets.ImageData) -> ModelConfig:
    height, width, channels = data.images.shape[1:]
    image = (
        SPEC.model_copy(update={"height": height, "width": width})
        if data.scans is not None
        else ImagePreprocessing(
            height=height,
            width=width,
            channels=channels,
            layout="NHWC",
            normalization=Normalization(scale=SCALE, mean=(0.0,), std=(1.0,)),
            ink=data.ink,
            resize="fit",
        )
    )
    return ModelConfig(
        task="image_classification",
        max_batch_size=64,
        inputs=(TensorSpec(name="image", datatype="FP32", dims=(height, width, channels)),),
        outputs=(TensorSpec(name="probabilities", datatype="FP32", dims=(len(data.classes),)),),
        dynamic_batching=DynamicBatching(),  # dispatch when an instance is free (bench/serving.py)
        labels="labels.txt",
        image=image,
        description=f"CNN image classifier ({len(data.classes)} classes) trained on {data.source}"
        + (f" and printed digits in {len(train_fonts())} fonts, on pages" if data.scans is not None else ""),
    )


def _training_sets(settings: DigitsSettings, data: datasets.ImageData, split: datasets.Split) -> tuple:
    train_idx = datasets.subsample(split.train, settings.limit, settings.seed)
    if data.scans is not None:
        train, validation, seconds, fonts = _page_sets(settings, data, split, train_idx)
        augmentation = {
            "how": "each training scan as it is and on pages_per_scan pages; every digit in every training font "
            "on pages_per_font_digit pages (training/pages.py, training/fonts.py). Pages: random size (longer "
            "side 240-640), digit 8-60% of the page height, rotation ±18°, width x0.8-1.2, either polarity, "
            "paper/ink contrast ≥ 60 (20% tinted RGB), ±8% uneven light, specks on 30%, Gaussian blur ≤ 2 px on "
            "half, noise sigma ≤ 15, PNG or JPEG q40-95; then the server's preprocessing (decode, locate the ink)",
            "pages_per_scan": settings.pages_per_scan,
            "pages_per_font_digit": settings.pages_per_font_digit,
            "training_fonts": fonts,
            "font_licences": LICENCES,
            "examples": {"train": len(train.labels), "validation": len(validation.labels)},
            "seconds": round(seconds, 1),
        }
        return train, validation, len(train_idx), augmentation
    clean, labels = data.images[train_idx], data.labels[train_idx]
    train = Examples(
        np.concatenate([clean, augment(clean, settings.augment_copies, settings.seed)]),
        np.concatenate([labels, np.tile(labels[:, None], settings.augment_copies).ravel()]),
    )
    augmentation = (
        f"{settings.augment_copies} random copies per training image: rotation ±12°, shear ±0.2, scale 0.5-1.05 "
        "(width x0.55-1.15), shifts, stroke thinning/erosion/thickening/blur, contrast, background level"
    )
    return train, Examples(data.images[split.val], data.labels[split.val]), len(train_idx), augmentation


def run(settings: DigitsSettings, output: Path, workdir: Path) -> Path:
    set_seed(settings.seed)
    data = _load(settings)
    split = datasets.stratified_split(data.labels, val=0.15, test=0.15, seed=settings.seed)
    train, validation, train_used, augmentation = _training_sets(settings, data, split)
    log.info("%s: %d training examples, %s", settings.name, len(train.labels), split.sizes())

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
        train.images,
        train.labels,
        name=settings.name,
        epochs=settings.epochs,
        patience=settings.patience,
        validation=(validation.images, validation.labels),
        batch_size=settings.batch_size,
        shuffle=True,
    )

    exported = recipe.export(model, settings, workdir, {"image": data.images[split.test]})
    metrics = _metrics(settings, session(exported.path), data, split, validation)
    log.info("%s: metrics %s", settings.name, {k: v["accuracy"] for k, v in metrics.items()})

    config = _config(settings, data)
    assert config.image is not None
    card = recipe.model_card(
        settings,
        "image_classification",
        data={
            "source": data.source,
            "classes": data.classes,
            "split": {
                "method": "stratified 70/15/15 (sklearn train_test_split)",
                "seed": settings.seed,
                "sizes": split.sizes(),
                "train_used": train_used,
            },
            "augmentation": augmentation,
        },
        preprocessing={**config.image.model_dump(mode="json"), "steps": _steps(config.image.locate)},
        model=model,
        architecture=f"CNN: {len(spec.filters)} blocks of (conv3x3-BN-ReLU)x2, maxpool, dropout; "
        f"dense {spec.dense}; softmax",
        spec=spec,
        training=recipe.training_card(settings, "Adam", result.seconds, **recipe.fitted(result)),
        metrics=metrics,
        quality_bar=_quality_bar(metrics),
        exported=exported,
        parity={"against": "Keras on held-out test images"},
    )
    assets = {
        "labels.txt": "\n".join(data.classes) + "\n",
        "parity_reference.npz": parity_reference(exported.inputs, exported.expected),
    }
    return write_entry(output, settings.name, config, exported.path, assets, card)


def _metrics(settings: DigitsSettings, sess, data: datasets.ImageData, split: datasets.Split, validation) -> dict:
    """Accuracy of the exported model on validation and test, and for digits on pen drawings and the
    evaluation pages, each prepared as the server prepares it."""
    metrics = {}
    for part, images, labels in (
        ("validation", validation.images, validation.labels),
        ("test", data.images[split.test], data.labels[split.test]),
    ):
        predicted = onnx_predict(sess, {"image": images}).argmax(axis=1)
        metrics[part] = {"accuracy": float(np.mean(predicted == labels)), "examples": len(labels)}
    if data.scans is not None:
        metrics["handdrawn"] = _handdrawn_accuracy(sess, settings.handdrawn_per_digit)
        if EVAL_PAGES.exists():
            metrics["eval_pages"] = _eval_pages_accuracy(sess)
    return metrics


def _quality_bar(metrics: dict) -> dict:
    bar = {"test_accuracy_min": 0.98, "eval_pages_accuracy_min": 0.95}
    met = metrics["test"]["accuracy"] >= bar["test_accuracy_min"]
    if "eval_pages" in metrics:
        met = met and metrics["eval_pages"]["accuracy"] >= bar["eval_pages_accuracy_min"]
    return {**bar, "met": met}


def _steps(locate: str) -> list[str]:
    if locate == "ink":
        return [
            "decode (JPEG at a reduced scale no smaller than 8x the input), EXIF orientation, grayscale (L)",
            "locate the ink (service/tasks/ink.py): background = median of the outer pixel ring, ink = pixels past "
            "half the ink level on the side (darker or lighter) that holds more of them, the heaviest 8-connected "
            "patch of ink and the heavy patches near it; no ink → the whole image as below",
            "crop to the ink, resize (bilinear) so the longer side is 24 of 32, contrast 0..255 with the lowest 20% "
            "of the peak cut to 0 (ink light on black), paste centred by mass",
            "pixel * scale (1/255), then (x - mean) / std",
        ]
    return [
        "convert to grayscale (L) or RGB per channels",
        "ink light_on_dark: invert when the median border pixel is > 127.5",
        "fit: resize keeping aspect ratio (Pillow bilinear) into height x width, "
        "centred, pad with the background colour (0 after inversion)",
        "pixel * scale (1/255), then (x - mean) / std",
    ]
