"""Digit pages: one digit, printed or handwritten, somewhere on a page as a user would photograph or scan it.

A *glyph* is an ink-coverage image ("L", 0 = paper, 255 = full ink) cut to its bounding box: a digit
printed in a font (`printed`), one of scikit-learn's 8x8 handwritten scans upscaled (`scanned`), or a pen
drawing from `training/handdrawn.py` (`drawn`). `page` puts one on a page: digit height a random share
of the page height, rotation, position, paper and ink levels of either polarity (optionally tinted, in
RGB), a little uneven lighting, blur, camera noise, specks of dust, and PNG or JPEG. Training and the
evaluation pages (`training/eval/digit_pages.py`) draw from different sources with different seeds
through this same code, and both go through the server's preprocessing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from training.handdrawn import draw_digit

Level = np.ndarray
"""An RGB grey or colour level, float32 (3,)."""
Glyph = Callable[[int], Image.Image]
"""Renders the glyph about this many pixels tall."""
NOISE_SIDE = 1024


@dataclass(frozen=True)
class PageStyle:
    """Ranges each page draws from (uniformly unless said otherwise)."""

    size: tuple[int, int] | None = (640, 480)
    """(width, height); None: a random size, the longer side 240-640, landscape or portrait."""
    height_share: tuple[float, float] = (0.10, 0.50)
    """The digit's height (before rotation) over the page height."""
    rotation: float = 15.0
    """Degrees either way."""
    aspect: tuple[float, float] = (1.0, 1.0)
    """Width stretch of the glyph."""
    blur: tuple[float, float] = (0.0, 1.5)
    """Gaussian radius in pixels, on half of the pages."""
    noise: tuple[float, float] = (0.0, 12.0)
    """Sigma of Gaussian camera noise in grey levels."""
    jpeg_share: float = 0.5
    jpeg_quality: tuple[int, int] = (50, 95)
    min_contrast: int = 80
    """Least difference between paper and ink (in luminance)."""
    colour_share: float = 0.2
    specks_share: float = 0.3
    """Pages with up to 6 specks of dust (2-5 pixels) away from the digit."""
    light_on_dark_share: float = 0.5
    fmt: str | None = None
    """"PNG" or "JPEG" to fix it; None draws it (jpeg_share)."""


@dataclass
class Page:
    image: Image.Image
    fmt: str
    quality: int | None
    meta: dict[str, object] = field(default_factory=dict)

    def encode(self) -> bytes:
        buffer = io.BytesIO()
        if self.fmt == "JPEG":
            self.image.save(buffer, "JPEG", quality=self.quality)
        else:
            self.image.save(buffer, "PNG", optimize=True)
        return buffer.getvalue()


def _cut(mask: Image.Image) -> Image.Image:
    box = mask.getbbox()
    return mask.crop(box) if box else mask


def printed(digit: int, font: Path, rng: np.random.Generator) -> Glyph:
    """`digit` in `font`, sometimes thickened a little (a heavier print or ink spread)."""
    thicken = rng.random() < 0.2

    def render(height: int) -> Image.Image:
        size = max(8, round(height * 1.4))
        face = ImageFont.truetype(str(font), size)
        canvas = Image.new("L", (size * 2, size * 2), 0)

        stroke = max(1, size // 40) if thicken else 0
        ImageDraw.Draw(canvas).text(
            (size, size), str(digit), font=face, fill=255, anchor="mm", stroke_width=stroke, stroke_fill=255
        )
        return _cut(canvas)

    return render


def scanned(pixels: np.ndarray, rng: np.random.Generator) -> Glyph:
    """One of scikit-learn's 8x8 digits (values 0..16) upscaled smoothly, with a random stroke weight."""
    low = rng.uniform(0.15, 0.45)
    source = Image.fromarray(np.round(pixels * (255.0 / 16.0)).astype(np.uint8), "L")

    def render(height: int) -> Image.Image:
        side = max(8, height)
        big = np.asarray(source.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        ink = np.clip((big - low) / 0.35, 0.0, 1.0)
        return _cut(Image.fromarray(np.round(ink * 255).astype(np.uint8), "L"))

    return render


def drawn(digit: int, rng: np.random.Generator) -> Glyph:
    """A pen drawing of `digit` (training/handdrawn.py) as ink coverage."""
    seed = int(rng.integers(0, 2**31))

    def render(height: int) -> Image.Image:
        side = max(24, round(height * 1.25))
        image = draw_digit(digit, np.random.default_rng(seed), (side, side))
        values = 255.0 - np.asarray(image, dtype=np.float32)
        ink = (values - values.min()) / max(1.0, float(values.max() - values.min()))
        return _cut(Image.fromarray(np.round(ink * 255).astype(np.uint8), "L"))

    return render


def _noise_bank(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((NOISE_SIDE, NOISE_SIDE), dtype=np.float32)


class PageMaker:
    """Draws pages from one seeded generator (noise comes from a seeded bank, cropped at random)."""

    def __init__(self, style: PageStyle, seed: int) -> None:
        self.style, self.rng = style, np.random.default_rng(seed)
        self.noise = _noise_bank(seed + 1)

    def _size(self) -> tuple[int, int]:
        if self.style.size is not None:
            return self.style.size
        long = int(self.rng.integers(240, 641))
        short = int(long * self.rng.uniform(0.6, 1.0))
        return (long, short) if self.rng.random() < 0.7 else (short, long)

    def _levels(self, light_on_dark: bool) -> tuple[np.ndarray, np.ndarray]:
        """(paper, ink) RGB levels with at least min_contrast in luminance."""
        rng, least = self.rng, self.style.min_contrast
        while True:
            paper = rng.uniform(150, 255) if not light_on_dark else rng.uniform(0, 110)
            ink = rng.uniform(0, paper - least) if not light_on_dark else rng.uniform(paper + least, 255)
            if 0 <= ink <= 255 and abs(paper - ink) >= least:
                break
        if rng.random() >= self.style.colour_share:
            return np.full(3, paper, np.float32), np.full(3, ink, np.float32)
        tint = rng.uniform(-25, 25, size=(2, 3)).astype(np.float32)
        paper_rgb, ink_rgb = np.clip(paper + tint[0], 0, 255), np.clip(ink + tint[1], 0, 255)
        weights = np.array([0.299, 0.587, 0.114], np.float32)
        if abs(float(paper_rgb @ weights) - float(ink_rgb @ weights)) < least:
            return np.full(3, paper, np.float32), np.full(3, ink, np.float32)
        return paper_rgb, ink_rgb

    def page(self, glyph: Glyph, polarity: str | None = None) -> Page:
        """`glyph` on a new page; `polarity` ("dark_on_light" or "light_on_dark") or drawn at random."""
        style, rng = self.style, self.rng
        width, height = self._size()
        target = max(6, round(rng.uniform(*style.height_share) * height))
        mask = glyph(target)
        scale = target / mask.height
        stretch = rng.uniform(*style.aspect)
        mask = mask.resize((max(1, round(mask.width * scale * stretch)), target), Image.Resampling.BICUBIC)
        angle = float(rng.uniform(-style.rotation, style.rotation))
        mask = mask.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        if mask.width > width - 4 or mask.height > height - 4:  # a wide glyph on a portrait page
            fit = min((width - 4) / mask.width, (height - 4) / mask.height)
            mask = mask.resize(
                (max(1, int(mask.width * fit)), max(1, int(mask.height * fit))), Image.Resampling.BICUBIC
            )
        left = int(rng.integers(2, width - mask.width - 1))
        top = int(rng.integers(2, height - mask.height - 1))
        polarity = polarity or ("light_on_dark" if rng.random() < style.light_on_dark_share else "dark_on_light")
        paper, ink = self._levels(polarity == "light_on_dark")
        box = (left, top, left + mask.width, top + mask.height)
        image, colour = self._compose(mask, box, (width, height), paper, ink)
        blur = float(rng.uniform(*style.blur)) if rng.random() < 0.5 else 0.0
        if blur > 0.2:  # around the digit only: elsewhere the page is flat (or a gentle ramp)
            margin = int(3 * blur) + 2
            around = (
                max(0, left - margin),
                max(0, top - margin),
                min(width, box[2] + margin),
                min(height, box[3] + margin),
            )
            image.paste(image.crop(around).filter(ImageFilter.GaussianBlur(blur)), around[:2])
        sigma = float(rng.uniform(*style.noise))
        image = self._add_noise(image, sigma)
        fmt = style.fmt or ("JPEG" if rng.random() < style.jpeg_share else "PNG")
        quality = int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)) if fmt == "JPEG" else None
        meta = {
            "page": f"{width}x{height}",
            "height_share": round(target / height, 3),
            "rotation": round(angle, 1),
            "polarity": polarity,
            "blur": round(blur, 2),
            "noise": round(sigma, 1),
            "colour": colour,
        }
        return Page(image, fmt, quality, meta)

    def _compose(
        self, mask: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int], paper: Level, ink: Level
    ) -> tuple[Image.Image, bool]:
        """Paper with the glyph's ink at `box`, specks and uneven light; grayscale unless tinted."""
        width, height = size
        alpha = np.zeros((height, width), np.float32)
        alpha[box[1] : box[3], box[0] : box[2]] = np.asarray(mask, np.float32) * np.float32(1 / 255)
        self._specks(alpha, box)
        light = self._lighting(height, width)
        colour = bool(np.ptp(paper) > 0 or np.ptp(ink) > 0)
        if colour:
            pixels = (paper + (ink - paper) * alpha[..., None]) * light[..., None]
        else:
            pixels = (paper[0] + (ink[0] - paper[0]) * alpha) * light
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB" if colour else "L"), colour

    def _specks(self, alpha: np.ndarray, box: tuple[int, int, int, int]) -> None:
        if self.rng.random() >= self.style.specks_share:
            return
        height, width = alpha.shape
        for _ in range(int(self.rng.integers(1, 7))):
            side = int(self.rng.integers(2, 6))
            x, y = int(self.rng.integers(0, width - side)), int(self.rng.integers(0, height - side))
            near = box[0] - 20 < x < box[2] + 20 and box[1] - 20 < y < box[3] + 20
            if not near:
                alpha[y : y + side, x : x + side] = self.rng.uniform(0.4, 1.0)

    def _lighting(self, height: int, width: int) -> np.ndarray:
        """Uneven light: a gentle linear ramp, up to ±8% across the page."""
        strength = self.rng.uniform(0, 0.08)
        direction = self.rng.uniform(0, 2 * np.pi)
        ys, xs = np.linspace(-0.5, 0.5, height, dtype=np.float32), np.linspace(-0.5, 0.5, width, dtype=np.float32)
        ramp = np.cos(direction) * xs[None, :] + np.sin(direction) * ys[:, None]
        return (1.0 + strength * ramp).astype(np.float32)

    def _add_noise(self, image: Image.Image, sigma: float) -> Image.Image:
        if sigma < 0.5:
            return image
        pixels = np.asarray(image, np.float32)
        height, width = pixels.shape[:2]
        y, x = int(self.rng.integers(0, NOISE_SIDE - height + 1)), int(self.rng.integers(0, NOISE_SIDE - width + 1))
        noise = self.noise[y : y + height, x : x + width] * np.float32(sigma)
        pixels = pixels + (noise[..., None] if pixels.ndim == 3 else noise)
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), image.mode)
