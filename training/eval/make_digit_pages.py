"""Writes the digit evaluation pages: `python -m training.eval.make_digit_pages [--out training/eval]`.

160 pages of 640x480, 16 per digit: for each digit, 8 printed (in the held-out fonts of
`training/fonts.py`, never used in training) and 8 handwritten (4 scikit-learn scans from the test split,
which training never sees, and 4 pen drawings from `training/handdrawn.py`, a source training never uses);
within each half, every combination of polarity (dark on light, light on dark) and format (PNG, JPEG)
twice. Digit height 10-50% of the page, rotation within ±15°, position anywhere, paper and ink at least 70
grey levels apart (a fifth tinted, in RGB), gentle uneven light, blur on half, specks of dust on a third;
JPEG pages carry camera noise (sigma 2-12) and quality 50-90; PNG pages are noise-free, which keeps them a
few kB each. Seeded: the same packages write the same pages.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from training import data as datasets
from training.fonts import eval_fonts
from training.pages import PageMaker, PageStyle, drawn, printed, scanned

SEED = 1313
PER_DIGIT = 16
FOLDER = "digit_pages"
COLUMNS = (
    "file",
    "label",
    "kind",
    "source",
    "item",
    "polarity",
    "format",
    "height_share",
    "rotation",
    "blur",
    "noise",
    "quality",
    "colour",
)
"""`item`: the font (printed), the index in `sklearn.datasets.load_digits()` (scan) or the drawing's seed (pen)."""


def _styles() -> dict[str, PageStyle]:
    common = {
        "size": (640, 480),
        "height_share": (0.10, 0.50),
        "rotation": 15.0,
        "blur": (0.0, 1.5),
        "min_contrast": 70,
        "colour_share": 0.2,
        "specks_share": 0.33,
    }
    return {
        "PNG": PageStyle(**common, noise=(0.0, 0.0), fmt="PNG"),  # type: ignore[arg-type]
        "JPEG": PageStyle(**common, noise=(2.0, 12.0), fmt="JPEG", jpeg_quality=(50, 90)),  # type: ignore[arg-type]
    }


def test_split() -> np.ndarray:
    """Indices of scikit-learn's digits in the test split that digits_cnn's training holds out (same split,
    same seed as training/digits.py)."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    return datasets.stratified_split(labels, val=0.15, test=0.15, seed=datasets.SEED).test


def write(out: Path, seed: int = SEED, per_digit: int = PER_DIGIT) -> list[dict[str, object]]:
    """`per_digit` pages of each digit into out/digit_pages/ and their index out/digit_pages.csv. Another
    seed draws another set of the same kind (for a larger estimate; the committed set is SEED's)."""
    rng = np.random.default_rng(seed)
    styles = _styles()
    makers = {fmt: PageMaker(style, seed + i) for i, (fmt, style) in enumerate(styles.items())}
    fonts = eval_fonts()
    from sklearn.datasets import load_digits

    digits, held_out = load_digits(), test_split()
    folder = out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for digit in range(10):
        own_scans = iter(rng.permutation(held_out[digits.target[held_out] == digit]))
        for j in range(per_digit):
            polarity = ("dark_on_light", "light_on_dark")[j % 2]
            fmt = ("PNG", "JPEG")[(j // 2) % 2]
            if j % 16 < 8:
                kind, source = "printed", "font"
                font = fonts[int(rng.integers(len(fonts)))]
                glyph, item = printed(digit, font, rng), font.stem
            elif (j // 4) % 2 == 0:
                kind, source, index = "handwritten", "scan", int(next(own_scans))
                glyph, item = scanned(digits.images[index], rng), str(index)
            else:
                kind, source, seed = "handwritten", "pen", int(rng.integers(0, 2**31))
                glyph, item = drawn(digit, np.random.default_rng(seed)), str(seed)
            page = makers[fmt].page(glyph, polarity)
            name = f"{len(rows):03d}-{digit}.{'png' if fmt == 'PNG' else 'jpg'}"
            (folder / name).write_bytes(page.encode())
            meta = page.meta
            rows.append(
                {
                    "file": f"{FOLDER}/{name}",
                    "label": digit,
                    "kind": kind,
                    "source": source,
                    "item": item,
                    "polarity": polarity,
                    "format": fmt,
                    "height_share": meta["height_share"],
                    "rotation": meta["rotation"],
                    "blur": meta["blur"],
                    "noise": meta["noise"],
                    "quality": page.quality or "",
                    "colour": meta["colour"],
                }
            )
    with (out / f"{FOLDER}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}, the committed set")
    parser.add_argument("--per-digit", type=int, default=PER_DIGIT, help="a multiple of 16 keeps the balance")
    args = parser.parse_args(argv)
    rows = write(args.out, args.seed, args.per_digit)
    size = sum((args.out / str(r["file"])).stat().st_size for r in rows)
    print(f"wrote {len(rows)} pages ({size / 1e6:.1f} MB) and {args.out / FOLDER}.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
