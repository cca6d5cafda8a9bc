"""digits_cnn's data: scikit-learn's handwritten scans and printed digits, on pages, through the server's
own preprocessing (`service.tasks.image_classification.prepare` with `locate: ink`), so the model trains on
exactly what the server will feed it.

- scans: the 1,797 8x8 digits of `sklearn.datasets.load_digits`, split 70/15/15 as before; each split's
  scans are used as they are (an 8x8 image, located and resized like any other) and on pages.
- printed: every digit in each training font (`training/fonts.py`) on pages.
- evaluation pages (`training/eval/`): read and scored here, written by `training/eval/make_digit_pages.py`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service.config import ImagePreprocessing, Normalization
from service.tasks.image_classification import DRAFT_FACTOR, decode, prepare
from training.images import SCALE
from training.pages import Glyph, Page, PageMaker, PageStyle, printed, scanned

SIZE = 32
SPEC = ImagePreprocessing(
    height=SIZE,
    width=SIZE,
    channels=1,
    layout="NHWC",
    normalization=Normalization(scale=SCALE, mean=(0.0,), std=(1.0,)),
    ink="light_on_dark",
    resize="fit",
    locate="ink",
)
TRAIN_STYLE = PageStyle(
    size=None,
    height_share=(0.08, 0.6),
    rotation=18.0,
    aspect=(0.8, 1.2),
    blur=(0.0, 2.0),
    noise=(0.0, 15.0),
    jpeg_quality=(40, 95),
    min_contrast=60,
)
"""A little wider than the evaluation pages in every range, on pages of random sizes."""
EVAL_DIR = Path(__file__).resolve().parent / "eval"
EVAL_PAGES = EVAL_DIR / "digit_pages.csv"


def served(data_or_page: bytes | Page, spec: ImagePreprocessing = SPEC) -> np.ndarray:
    """What the server feeds the model for an image file or a page. A PNG page is lossless, so its image is
    prepared directly; a JPEG page is encoded and decoded as the server decodes it."""
    if isinstance(data_or_page, Page) and data_or_page.fmt == "PNG":
        image = data_or_page.image
    else:
        data = data_or_page.encode() if isinstance(data_or_page, Page) else data_or_page
        image = decode(data, at_least=(spec.width * DRAFT_FACTOR, spec.height * DRAFT_FACTOR))
    return prepare(image, spec)


def scan_image(pixels: np.ndarray) -> Image.Image:
    """One of scikit-learn's 8x8 digits (0..16) as the 8x8 grayscale image a user could send."""
    return Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), "L")


def prepare_scans(pixels: np.ndarray, spec: ImagePreprocessing = SPEC) -> np.ndarray:
    return np.stack([prepare(scan_image(p), spec) for p in pixels]).astype(np.float32)


@dataclass(frozen=True)
class Examples:
    images: np.ndarray
    labels: np.ndarray

    @staticmethod
    def join(parts: Iterable[Examples]) -> Examples:
        parts = list(parts)
        return Examples(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))


def on_pages(
    glyphs: Sequence[tuple[Glyph, int]], style: PageStyle, seed: int, spec: ImagePreprocessing = SPEC
) -> Examples:
    """Each (glyph, label) on one page, as the server would prepare it."""
    maker = PageMaker(style, seed)
    images = np.stack([served(maker.page(glyph), spec) for glyph, _ in glyphs]) if glyphs else np.zeros((0, 32, 32, 1))
    return Examples(images.astype(np.float32), np.array([label for _, label in glyphs], dtype=np.int64))


def scan_glyphs(pixels: np.ndarray, labels: np.ndarray, copies: int, seed: int) -> list[tuple[Glyph, int]]:
    rng = np.random.default_rng(seed)
    return [(scanned(p, rng), int(label)) for p, label in zip(pixels, labels, strict=True) for _ in range(copies)]


def font_glyphs(fonts: Sequence[Path], copies: int, seed: int, limit: int | None = None) -> list[tuple[Glyph, int]]:
    """`copies` of every digit in every font (a seeded subset of `limit` of them when given)."""
    rng = np.random.default_rng(seed)
    triples = [(font, digit) for font in fonts for digit in range(10) for _ in range(copies)]
    if limit is not None and limit < len(triples):
        triples = [triples[i] for i in np.sort(rng.choice(len(triples), size=limit, replace=False))]
    return [(printed(digit, font, rng), digit) for font, digit in triples]


# ---- the evaluation pages -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalPage:
    path: Path
    label: int
    kind: str
    """"printed" or "handwritten"."""
    source: str
    polarity: str
    fmt: str


def eval_pages(index: Path = EVAL_PAGES) -> list[EvalPage]:
    with index.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        EvalPage(
            index.parent / row["file"], int(row["label"]), row["kind"], row["source"], row["polarity"], row["format"]
        )
        for row in rows
    ]


def score(pages: Sequence[EvalPage], predicted: np.ndarray) -> dict:
    """Accuracy overall, per class, and per kind, source, polarity and format."""
    right = np.array([p.label == int(guess) for p, guess in zip(pages, predicted, strict=True)])

    def by(key: str) -> dict[str, dict[str, float | int]]:
        groups: dict[str, list[bool]] = {}
        for page, ok in zip(pages, right, strict=True):
            groups.setdefault(str(getattr(page, key)), []).append(bool(ok))
        return {k: {"accuracy": round(float(np.mean(v)), 4), "pages": len(v)} for k, v in sorted(groups.items())}

    return {
        "pages": len(pages),
        "accuracy": round(float(np.mean(right)), 4),
        "per_class": {k: v["accuracy"] for k, v in by("label").items()},
        "by_kind": by("kind"),
        "by_source": by("source"),
        "by_polarity": by("polarity"),
        "by_format": by("fmt"),
        "wrong": [f"{p.path.name}: {int(g)}" for p, g, ok in zip(pages, predicted, right, strict=True) if not ok],
    }
