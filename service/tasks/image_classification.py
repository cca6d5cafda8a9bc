"""Image classification: encoded image files in, top-k labels out, as the model's config.yaml describes.

Preprocessing is the recipe the model was trained with (`training/images.py` writes the same one into
the `image:` section): decode (PNG, JPEG, BMP, GIF, WebP; first frame), apply the EXIF orientation,
flatten transparency onto white, convert to the model's colour mode, invert when the model's ink
polarity asks for it (a `light_on_dark` model gets images whose border is light inverted), resize
(`fit` keeps the aspect ratio and pads with the background colour, `stretch` does not), scale and
normalize, and lay out as NHWC or NCHW. With `locate: ink` the mark on the page (a digit on paper) is
found, cropped, scaled and centred by mass first (`service/tasks/ink.py`); a page with no mark on it
takes the whole-image path.

Images are refused by their size in bytes (`limits.max_image_bytes`) before they are opened, and from
their header, before any pixel is decoded, when they exceed `limits.max_image_pixels` (by default far
below Pillow's own decompression-bomb limits, so those never trigger).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.config import ImagePreprocessing, ModelConfig
from service.errors import InvalidInputError, ModelLoadError
from service.tasks import ink
from service.tasks.assets import ClassOutput
from service.tasks.counts import check_item_count

log = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
ORIENTATION = 0x0112
"""EXIF tag."""
DRAFT_FACTOR = 8
"""JPEGs are decoded at no less than this many times the model's input size (see `decode`)."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""Default of `limits.max_image_pixels`."""
DEFAULT_TOP_K = 5


@dataclass(frozen=True, slots=True)
class LabelScore:
    label: str
    probability: float
    index: int


def pixels(images: Sequence[bytes]) -> int:
    """Pixels the images will decode to, read from their headers only (unreadable ones count as none)."""
    total = 0
    for data in images:
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                total += image.width * image.height
        except Exception:  # noqa: BLE001 - `decode` reports what is wrong with it
            continue
    return total


def decode(
    data: bytes, what: str = "image", max_pixels: int = MAX_IMAGE_PIXELS, at_least: tuple[int, int] | None = None
) -> Image.Image:
    """Bytes of an image file → a loaded, upright PIL image; InvalidInputError for anything else. A JPEG is
    decoded at the smallest of its built-in reduced scales (1/2, 1/4, 1/8) that is still `at_least` this
    size: a 12-megapixel photo for a 32x32 model decodes in a fraction of the time and memory."""
    if not data:
        raise InvalidInputError(f"{what} is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what} is not a PNG, JPEG, BMP, GIF or WebP file") from None
    except Image.DecompressionBombError as err:
        log.debug("image refused", extra={"what": what, "problem": str(err)})
        raise InvalidInputError(
            f"{what} is refused as a decompression bomb: its header declares far more pixels than allowed "
            "(limits.max_image_pixels)"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:
        log.debug("image refused", extra={"what": what, "problem": str(err)})
        raise InvalidInputError(
            f"{what} cannot be read: its header is damaged or uses an unsupported variant"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidInputError(
            f"{what} is {width}x{height} pixels, more than the {max_pixels} allowed (limits.max_image_pixels); "
            "scale it down first"
        )
    try:
        if at_least is not None and image.format == "JPEG":
            image.draft(image.mode, _upright_size(image, at_least))
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        log.debug("image refused", extra={"what": what, "format": image.format, "problem": str(err)})
        raise InvalidInputError(f"{what} is truncated or corrupt ({image.format} data)") from None
    return upright if upright is not None else image


def _upright_size(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """`size` in the stored orientation (EXIF orientations 5-8 turn the image by 90 degrees)."""
    return (size[1], size[0]) if image.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else size


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Grayscale ("L") or "RGB"; transparent pixels become white, 16-bit and float images are rescaled."""
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    return image.convert("L" if channels == 1 else "RGB")


def background_is_light(image: Image.Image) -> bool:
    """True when the median of the outermost ring of pixels (in grayscale) is above mid-grey."""
    gray = np.asarray(image.convert("L"), dtype=np.uint8)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127.5


def resize(image: Image.Image, spec: ImagePreprocessing, background: int | tuple[int, ...]) -> Image.Image:
    if spec.resize == "stretch":
        return image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    ratio = min(spec.width / image.width, spec.height / image.height)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    canvas = Image.new(image.mode, (spec.width, spec.height), background)
    offset = ((spec.width - size[0]) // 2, (spec.height - size[1]) // 2)
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), offset)
    return canvas


def prepare(image: Image.Image, spec: ImagePreprocessing) -> np.ndarray:
    """A decoded image → float32 (H, W, C) for NHWC or (C, H, W) for NCHW, as the model was trained."""
    image = to_mode(image, spec.channels)
    if spec.locate == "ink" and (mark := ink.find(image)) is not None:
        pixels = ink.render(image, mark, spec.height, spec.width)
        if spec.ink == "dark_on_light" or (spec.ink == "any" and mark.light_background):
            pixels = np.float32(255.0) - pixels
        return normalize(pixels, spec)
    light = background_is_light(image)
    if (spec.ink == "light_on_dark" and light) or (spec.ink == "dark_on_light" and not light):
        image, light = ImageOps.invert(image), not light
    level = 255 if light else 0
    canvas = resize(image, spec, level if spec.channels == 1 else (level,) * 3)
    return normalize(np.asarray(canvas, dtype=np.float32), spec)


def normalize(pixels: np.ndarray, spec: ImagePreprocessing) -> np.ndarray:
    """float32 pixels in 0..255 (H, W) or (H, W, C) → scaled, normalized, in the model's layout."""
    norm = spec.normalization
    pixels = pixels.reshape(spec.height, spec.width, spec.channels)
    mean, std = np.asarray(norm.mean, dtype=np.float32), np.asarray(norm.std, dtype=np.float32)
    array: np.ndarray = (pixels * np.float32(norm.scale) - mean) / std
    return array.transpose(2, 0, 1) if spec.layout == "NCHW" else array


class ImageClassification:
    """One image_classification model's pre- and post-processing (no I/O beyond its labels file)."""

    def __init__(self, model: str, config: ModelConfig, model_dir: Path) -> None:
        if config.image is None or not config.batched:
            raise ModelLoadError(f"model '{model}': the image task needs an `image:` section and max_batch_size > 0")
        spec = config.image
        if len(config.inputs) != 1:
            raise ModelLoadError(
                f"model '{model}': the image task feeds exactly one input, the config has {len(config.inputs)}"
            )
        for name, values in (("mean", spec.normalization.mean), ("std", spec.normalization.std)):
            if len(values) not in (1, spec.channels):
                raise ModelLoadError(f"model '{model}': image.normalization.{name} needs 1 or {spec.channels} values")
        expected = (
            (spec.height, spec.width, spec.channels)
            if spec.layout == "NHWC"
            else (spec.channels, spec.height, spec.width)
        )
        self.input = config.inputs[0].name
        if config.inputs[0].dims != expected:
            raise ModelLoadError(
                f"model '{model}': input `{self.input}` has dims {list(config.inputs[0].dims)} but "
                f"the image section describes {list(expected)}"
            )
        self.model = model
        self.spec = spec
        self.limits = config.limits
        self.classes = ClassOutput.load(model, model_dir, config)
        self.labels = self.classes.labels

    def top_k(self, requested: int) -> int:
        """0 means DEFAULT_TOP_K (or every class); more than the classes is an error."""
        classes = len(self.labels)
        if requested == 0:
            return min(DEFAULT_TOP_K, classes)
        if not 1 <= requested <= classes:
            raise InvalidInputError(
                f"top_k must be between 1 and {classes} (the classes of '{self.model}'), got {requested}"
            )
        return requested

    def check_count(self, images: Sequence[bytes]) -> None:
        check_item_count(images, "images", self.limits.max_items)
        for i, data in enumerate(images):
            if len(data) > self.limits.max_image_bytes:
                raise InvalidInputError(
                    f"images[{i}] is {len(data)} bytes; this model takes images of at most "
                    f"{self.limits.max_image_bytes} bytes (limits.max_image_bytes); compress or scale it down"
                )

    def preprocess(self, images: Sequence[bytes]) -> list[dict[str, np.ndarray]]:
        """One feed (a batch of one) per image. CPU work: run it in a thread when the images are large."""
        self.check_count(images)
        limits, draft = self.limits, (self.spec.width * DRAFT_FACTOR, self.spec.height * DRAFT_FACTOR)
        return [
            {self.input: prepare(decode(data, f"images[{i}]", limits.max_image_pixels, draft), self.spec)[None]}
            for i, data in enumerate(images)
        ]

    def postprocess(self, outputs: Mapping[str, np.ndarray], top_k: int) -> list[LabelScore]:
        scores = self.classes.probabilities(outputs)
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [LabelScore(self.labels[i], float(scores[i]), int(i)) for i in order]
