"""Find the mark on a page before the resize (`image.locate: ink`), the way MNIST digits were normalised.

A digit photographed or scanned on a page takes a small part of it, anywhere; resizing the whole page to
32x32 leaves it a few pixels. `find` locates it and `render` cuts it out:

1. On a copy reduced by an integer factor (box filter) to at most WORK_SIDE pixels a side: the background
   level is the median of the outermost ring of pixels and its noise the ring's MAD. Ink is what differs
   from the background by more than NOISE_SIGMAS times the noise (and half of MIN_CONTRAST): the side,
   darker or lighter, with more such pixels gives the polarity (dark ink on light paper or light on dark).
   The median ring, not a global threshold such as Otsu's, because a digit may cover 0.1% of a page.
2. The ink level is the 90th percentile of the contrast of those pixels; pixels above half of it are ink.
   An ink level under MIN_CONTRAST, or fewer than MIN_INK_PIXELS ink pixels, is no ink: `find` returns
   None and the caller uses the whole image.
3. Ink is counted on a grid of at most GRID_CELLS cells a side, and cells holding ink form 8-connected
   patches. The heaviest patch is the mark; patches with at least MERGE_SHARE of its ink within
   MERGE_GAP of its size join it (a digit drawn in two strokes); the rest (specks, dust) are left out.
4. `render` crops the full-resolution image to the mark's box, resizes it (bilinear, antialiased) so its
   longer side is INK_SHARE of the model's input, maps contrast to 0..255 (ink 255, FLOOR of the peak and
   below to 0, which drops the paper's noise and texture) and pastes it on a black canvas so that its
   centre of mass is the canvas centre.

NumPy and Pillow only; a 640x480 page takes well under a millisecond here (`tests/unit/test_ink.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

WORK_SIDE = 320
GRID_CELLS = 64
MIN_CONTRAST = 40.0
"""Grey levels (of 255) between the background and the ink level below which a page holds no ink."""
MIN_INK_PIXELS = 4
NOISE_SIGMAS = 4.0
MERGE_SHARE = 0.15
MERGE_GAP = 0.5
"""A patch joins the mark when its box is within this share of the mark's longer side of the mark's box."""
INK_SHARE = 0.75
FLOOR = 0.2
PEAK_PERCENTILE = 99.0


@dataclass(frozen=True, slots=True)
class Ink:
    """Where the mark is and how it stands out."""

    box: tuple[int, int, int, int]
    """left, top, right, bottom (exclusive) in the image's pixels."""
    light_background: bool
    background: float
    """Grey level of the background."""


def find(gray: Image.Image) -> Ink | None:
    """The mark on a grayscale ("L") image, or None when nothing stands out from the background."""
    factor = max(1, math.ceil(max(gray.size) / WORK_SIDE))
    small = np.asarray(gray.reduce(factor) if factor > 1 else gray, dtype=np.float32)
    ring = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]])
    background = float(np.median(ring))
    noise = 1.4826 * float(np.median(np.abs(ring - background)))
    least = max(NOISE_SIGMAS * noise, MIN_CONTRAST / 2)
    offset = small - np.float32(background)
    darker, lighter = np.count_nonzero(offset < -least), np.count_nonzero(offset > least)
    if darker == lighter == 0:
        return None
    light = bool(darker >= lighter)
    contrast = -offset if light else offset
    level = float(np.percentile(contrast[contrast > least], 90))
    if level < MIN_CONTRAST:
        return None
    mask = contrast > max(level / 2, least)
    if np.count_nonzero(mask) < MIN_INK_PIXELS:
        return None
    rows, cols = _mark(mask)
    width, height = gray.size
    box = (
        cols[0] * factor,
        rows[0] * factor,
        min(width, (cols[1] + 1) * factor),
        min(height, (rows[1] + 1) * factor),
    )
    return Ink(box, light, background)


def _mark(mask: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """(first, last) row and column of the ink in the mark's patches (see the module's step 3)."""
    height, width = mask.shape
    cell = max(1, math.ceil(max(height, width) / GRID_CELLS))
    ink = Image.fromarray(mask.view(np.uint8) * np.uint8(255))
    counts = np.asarray(ink.reduce(cell) if cell > 1 else ink, dtype=np.float32)  # mean ink per cell, x255
    labels = patches(counts > 0)
    chosen = np.isin(labels, _join(labels, counts))
    top, left, bottom, right = _cell_box(chosen)
    cells = np.repeat(np.repeat(chosen[top : bottom + 1, left : right + 1], cell, axis=0), cell, axis=1)
    region = mask[top * cell : (bottom + 1) * cell, left * cell : (right + 1) * cell]
    selected = cells[: region.shape[0], : region.shape[1]] & region
    ink_rows, ink_cols = np.flatnonzero(selected.any(axis=1)), np.flatnonzero(selected.any(axis=0))
    return (
        (top * cell + int(ink_rows[0]), top * cell + int(ink_rows[-1])),
        (left * cell + int(ink_cols[0]), left * cell + int(ink_cols[-1])),
    )


def patches(occupied: np.ndarray) -> np.ndarray:
    """8-connected patches of True cells: each cell gets the flat index of its patch's first cell, -1 where
    False. Minimum labels spread to neighbours, and pointer jumping (label of the label) shortcuts long
    patches, so a few vectorised passes label a grid of GRID_CELLS a side."""
    top, left, bottom, right = _cell_box(occupied)
    if (top, left) != (0, 0) or (bottom, right) != (occupied.shape[0] - 1, occupied.shape[1] - 1):
        inside = patches(occupied[top : bottom + 1, left : right + 1])  # labels of the occupied box alone
        width = occupied.shape[1]
        row, col = np.divmod(inside, right - left + 1)
        labels = np.full(occupied.shape, -1, dtype=inside.dtype)
        labels[top : bottom + 1, left : right + 1] = np.where(inside >= 0, (row + top) * width + col + left, -1)
        return labels
    grid_h, grid_w = occupied.shape
    none = grid_h * grid_w
    labels = np.where(occupied, np.arange(none).reshape(grid_h, grid_w), none)
    padded = np.full((grid_h + 2, grid_w + 2), none, dtype=labels.dtype)
    while True:
        padded[1:-1, 1:-1] = labels
        low = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(low, padded[dy : dy + grid_h, dx : dx + grid_w], out=low)
        low[~occupied] = none
        for _ in range(2):
            low = np.append(low.ravel(), none)[low]
        if np.array_equal(low, labels):
            return np.where(occupied, labels, -1)
        labels = low


def _join(labels: np.ndarray, counts: np.ndarray) -> list[int]:
    """The heaviest patch and the heavy-enough patches near it (grown until none more joins)."""
    ids = labels[labels >= 0]
    mass = np.bincount(ids, weights=counts[labels >= 0])
    main = int(np.argmax(mass))
    candidates = [int(i) for i in np.flatnonzero(mass >= MERGE_SHARE * mass[main]) if i != main]
    chosen, box = [main], _cell_box(labels == main)
    grew = True
    while grew and candidates:
        grew = False
        gap = max(1.0, MERGE_GAP * max(box[2] - box[0], box[3] - box[1]) + 1)
        for patch in list(candidates):
            other = _cell_box(labels == patch)
            apart = max(other[0] - box[2], box[0] - other[2], other[1] - box[3], box[1] - other[3])
            if apart <= gap:
                chosen.append(patch)
                candidates.remove(patch)
                box = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
                grew = True
    return chosen


def _cell_box(cells: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the True cells, inclusive."""
    rows, cols = np.flatnonzero(cells.any(axis=1)), np.flatnonzero(cells.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])


def render(gray: Image.Image, ink: Ink, height: int, width: int) -> np.ndarray:
    """The mark as float32 (height, width) in 0..255, ink light on black, centred by its mass."""
    crop = gray.crop(ink.box)
    scale = INK_SHARE * min(height, width) / max(crop.size)
    size = (min(width, max(1, round(crop.width * scale))), min(height, max(1, round(crop.height * scale))))
    pixels = np.asarray(crop.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    contrast = (ink.background - pixels) if ink.light_background else (pixels - np.float32(ink.background))
    peak = max(float(np.percentile(contrast, PEAK_PERCENTILE)), 1.0)
    floor = FLOOR * peak
    mark = np.clip((contrast - floor) / (peak - floor), 0.0, 1.0) * np.float32(255.0)
    canvas = np.zeros((height, width), dtype=np.float32)
    top, left = _centred(mark, height, width)
    canvas[top : top + mark.shape[0], left : left + mark.shape[1]] = mark
    return canvas


def _centred(mark: np.ndarray, height: int, width: int) -> tuple[int, int]:
    """Top-left offset that puts `mark`'s centre of mass at the canvas centre, keeping it on the canvas."""
    total = float(mark.sum())
    mark_h, mark_w = mark.shape
    if total > 0:
        centre_y = float(mark.sum(axis=1) @ np.arange(mark_h)) / total
        centre_x = float(mark.sum(axis=0) @ np.arange(mark_w)) / total
    else:
        centre_y, centre_x = (mark_h - 1) / 2, (mark_w - 1) / 2
    top = min(max(round((height - 1) / 2 - centre_y), 0), height - mark_h)
    left = min(max(round((width - 1) / 2 - centre_x), 0), width - mark_w)
    return top, left
