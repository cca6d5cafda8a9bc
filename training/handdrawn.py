"""Digits drawn the way people write them: dark pen strokes on light paper, rendered with PIL.

Used to prove that the digits model, behind the preprocessing its config describes, reads real drawings
and not only sklearn's 8x8 scans. Shapes are polylines/ellipses in unit coordinates, jittered per sample.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

Shape = tuple[str, list[tuple[float, float]]]  # ("line" | "ellipse", points)

DIGITS: dict[int, list[Shape]] = {
    0: [("ellipse", [(0.3, 0.15), (0.7, 0.85)])],
    1: [("line", [(0.38, 0.3), (0.52, 0.16), (0.52, 0.84)])],
    2: [
        (
            "line",
            [
                (0.32, 0.32),
                (0.4, 0.2),
                (0.55, 0.16),
                (0.66, 0.25),
                (0.67, 0.38),
                (0.6, 0.5),
                (0.32, 0.82),
                (0.72, 0.82),
            ],
        )
    ],
    3: [
        (
            "line",
            [
                (0.32, 0.2),
                (0.62, 0.18),
                (0.67, 0.3),
                (0.6, 0.44),
                (0.44, 0.5),
                (0.62, 0.55),
                (0.69, 0.68),
                (0.6, 0.81),
                (0.32, 0.82),
            ],
        )
    ],
    4: [("line", [(0.6, 0.84), (0.6, 0.16), (0.28, 0.6), (0.74, 0.6)])],
    5: [
        (
            "line",
            [
                (0.68, 0.17),
                (0.36, 0.17),
                (0.33, 0.47),
                (0.55, 0.43),
                (0.68, 0.55),
                (0.67, 0.72),
                (0.55, 0.82),
                (0.3, 0.78),
            ],
        )
    ],
    6: [
        (
            "line",
            [
                (0.64, 0.16),
                (0.46, 0.28),
                (0.35, 0.48),
                (0.34, 0.7),
                (0.45, 0.83),
                (0.6, 0.82),
                (0.67, 0.67),
                (0.6, 0.52),
                (0.45, 0.5),
                (0.35, 0.6),
            ],
        )
    ],
    7: [("line", [(0.28, 0.18), (0.72, 0.18), (0.44, 0.84)])],
    8: [("ellipse", [(0.35, 0.15), (0.65, 0.49)]), ("ellipse", [(0.31, 0.49), (0.69, 0.85)])],
    9: [("ellipse", [(0.32, 0.16), (0.67, 0.5)]), ("line", [(0.67, 0.3), (0.63, 0.85)])],
}


def draw_digit(digit: int, rng: np.random.Generator, size: tuple[int, int] = (200, 200)) -> Image.Image:
    """One drawing of `digit` on a light canvas of `size` (width, height), with random pen and placement."""
    width, height = size
    paper, ink = int(rng.integers(225, 256)), int(rng.integers(0, 70))
    image = Image.new("L", size, paper)
    draw = ImageDraw.Draw(image)
    side = min(width, height) * rng.uniform(0.6, 1.0)
    x0 = (width - side) / 2 + rng.uniform(-0.1, 0.1) * side
    y0 = (height - side) / 2 + rng.uniform(-0.1, 0.1) * side
    pen = max(2, int(side * rng.uniform(0.04, 0.1)))

    def place(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x0 + (x + rng.normal(0, 0.015)) * side, y0 + (y + rng.normal(0, 0.015)) * side) for x, y in points]

    for kind, points in DIGITS[digit]:
        if kind == "ellipse":
            (left, top), (right, bottom) = place(points)
            draw.ellipse([left, top, right, bottom], outline=ink, width=pen)
        else:
            draw.line(place(points), fill=ink, width=pen, joint="curve")
    return image


def drawn_digits(per_digit: int, seed: int = 7) -> tuple[list[Image.Image], np.ndarray]:
    """`per_digit` drawings of each digit 0-9 on canvases from 64x64 to 300x240."""
    rng = np.random.default_rng(seed)
    sizes = [(200, 200), (64, 64), (300, 240), (160, 200), (120, 120)]
    images, labels = [], []
    for digit in range(10):
        for i in range(per_digit):
            images.append(draw_digit(digit, rng, sizes[i % len(sizes)]))
            labels.append(digit)
    return images, np.array(labels, dtype=np.int64)
