"""Image preprocessing: decoding and refusing, orientation, colour modes, ink polarity, resizing, normalizing."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.config import ImagePreprocessing, ModelConfig, Normalization
from service.errors import InvalidInputError, ModelLoadError
from service.tasks.image_classification import (
    MAX_IMAGE_PIXELS,
    ImageClassification,
    decode,
    pixels,
    prepare,
)
from tests.crafted_images import png_header
from tests.tiny_task_models import QUADRANTS, quadrants_config

DIGITS = ImagePreprocessing(height=32, width=32, channels=1, ink="light_on_dark", resize="fit")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def paper(size: tuple[int, int] = (200, 200), box: tuple[int, int, int, int] = (20, 20, 80, 80)) -> Image.Image:
    """Dark ink (a filled box) on white paper."""
    image = Image.new("L", size, 255)
    ImageDraw.Draw(image).rectangle(box, fill=0)
    return image


def quadrant(array: np.ndarray) -> str:
    """Which quadrant of an (H, W, 1) array holds the most light pixels."""
    h, w = array.shape[0] // 2, array.shape[1] // 2
    sums = [array[:h, :w].sum(), array[:h, w:].sum(), array[h:, :w].sum(), array[h:, w:].sum()]
    return QUADRANTS[int(np.argmax(sums))]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_every_supported_format_decodes(fmt: str) -> None:
    image = decode(encode(paper().convert("RGB"), fmt))
    assert image.size == (200, 200)
    assert quadrant(prepare(image, DIGITS)) == "top_left"


def test_unknown_bytes_are_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="not a PNG, JPEG, BMP, GIF or WebP file"):
        decode(b"definitely not an image", "images[3]")


def test_empty_bytes_are_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match=r"images\[0\] is empty"):
        decode(b"", "images[0]")


def test_formats_outside_the_list_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a PNG"):
        decode(encode(paper(), "TIFF"))


def test_truncated_file_is_invalid_input() -> None:
    data = encode(Image.effect_noise((300, 300), 50).convert("L"), "PNG")
    with pytest.raises(InvalidInputError, match="truncated or corrupt"):
        decode(data[: len(data) // 2])


def test_too_many_pixels_are_refused_before_decoding() -> None:
    with pytest.raises(InvalidInputError, match=f"5000x5000 pixels, more than the {MAX_IMAGE_PIXELS} allowed"):
        decode(png_header(5000, 5000))


def test_decompression_bombs_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="refused as a decompression bomb"):
        decode(png_header(30000, 30000))  # Pillow's own error (over twice its limit)
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(InvalidInputError, match="more than the"):
        decode(png_header(10000, 10000))  # Pillow only warns; refused all the same


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90° clockwise
    data = encode(paper().convert("RGB"), "JPEG", exif=exif)
    assert quadrant(prepare(decode(data), DIGITS)) == "top_right"
    assert quadrant(prepare(Image.open(io.BytesIO(data)), DIGITS)) == "top_left"  # without it


def test_transparent_background_counts_as_white_paper() -> None:
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((60, 60, 95, 95), fill=(0, 0, 0, 255))
    array = prepare(decode(encode(image, "PNG")), DIGITS)
    assert quadrant(array) == "bottom_right"
    assert array[0, 0, 0] == 0.0  # the (white) background became the model's dark background


def test_sixteen_bit_grayscale_is_rescaled() -> None:
    values = np.full((64, 64), 65535, dtype=np.uint16)
    values[40:, 40:] = 0
    image = Image.fromarray(values)
    assert quadrant(prepare(decode(encode(image, "PNG")), DIGITS)) == "bottom_right"


def test_palette_and_cmyk_images_convert() -> None:
    assert quadrant(prepare(decode(encode(paper().convert("P"), "GIF")), DIGITS)) == "top_left"
    assert quadrant(prepare(decode(encode(paper().convert("CMYK"), "JPEG")), DIGITS)) == "top_left"


@pytest.mark.parametrize(
    ("ink", "background", "expected_corner"),
    [
        ("light_on_dark", 255, 0.0),  # light paper is inverted: dark background
        ("light_on_dark", 0, 0.0),  # already dark: kept
        ("dark_on_light", 0, 1.0),  # dark background inverted to light
        ("any", 255, 1.0),  # left alone
    ],
)
def test_ink_polarity(ink: str, background: int, expected_corner: float) -> None:
    image = Image.new("L", (64, 64), background)
    ImageDraw.Draw(image).rectangle((20, 20, 40, 40), fill=255 - background)
    array = prepare(image, DIGITS.model_copy(update={"ink": ink}))
    assert array[0, 0, 0] == pytest.approx(expected_corner)


def test_fit_keeps_the_aspect_ratio_and_pads_with_background() -> None:
    grey = Image.new("L", (200, 100), 200)  # light (> mid-grey): the padding is white
    array = prepare(grey, DIGITS.model_copy(update={"ink": "any"}))
    assert array.shape == (32, 32, 1)
    np.testing.assert_allclose(array[8:24], 200 / 255, rtol=1e-6)  # the image, 32 wide and 16 tall, centred
    assert array[:8].min() == array[24:].min() == 1.0  # padded with the background colour
    inverted = prepare(grey, DIGITS)  # light_on_dark: inverted first, so the padding is black
    np.testing.assert_allclose(inverted[8:24], 55 / 255, rtol=1e-6)
    assert inverted[:8].max() == inverted[24:].max() == 0.0
    stretched = prepare(grey, DIGITS.model_copy(update={"resize": "stretch", "ink": "any"}))
    np.testing.assert_allclose(stretched, 200 / 255, rtol=1e-6)


def test_normalization_and_nchw_layout() -> None:
    spec = ImagePreprocessing(
        height=8,
        width=6,
        channels=3,
        layout="NCHW",
        resize="stretch",
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)),
    )
    array = prepare(Image.new("RGB", (12, 16), (255, 0, 255)), spec)
    assert array.shape == (3, 8, 6) and array.dtype == np.float32
    np.testing.assert_allclose(array[:, 0, 0], [2.0, -1.0, 0.5])


def test_same_pixels_as_the_training_recipe() -> None:
    training = pytest.importorskip("training.images", reason="training/ is not importable here")
    rng = np.random.default_rng(3)
    for size in [(200, 200), (64, 40), (300, 240)]:
        image = Image.fromarray(rng.integers(0, 256, size=size[::-1], dtype=np.uint8), "L")
        ImageDraw.Draw(image).rectangle((0, 0, size[0] - 1, size[1] - 1), outline=255, width=3)
        ours = prepare(image, DIGITS)
        theirs = training.prepare_image(image, 32, 32, 1, "light_on_dark")
        np.testing.assert_array_equal(ours, theirs)


# ---- the task object ---------------------------------------------------------------------------------
def make_task(tmp_path: Path, labels: list[str] = QUADRANTS, **config: object) -> ImageClassification:
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    return ImageClassification("quadrants", ModelConfig.model_validate({**quadrants_config(), **config}), tmp_path)


def test_top_k_defaults_and_limits(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    assert task.top_k(0) == 4 and task.top_k(2) == 2
    with pytest.raises(InvalidInputError, match="top_k must be between 1 and 4"):
        task.top_k(5)


def test_postprocess_sorts_and_names_labels(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    scores = task.postprocess({"probabilities": np.array([[0.1, 0.6, 0.05, 0.25]], dtype=np.float32)}, 2)
    assert [(s.label, s.index) for s in scores] == [("top_right", 1), ("bottom_right", 3)]
    assert scores[0].probability == pytest.approx(0.6)


def test_labels_must_match_the_outputs(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="3 labels but the model outputs 4 classes"):
        make_task(tmp_path, labels=QUADRANTS[:3])


def test_request_size_limits(tmp_path: Path) -> None:
    task = make_task(tmp_path)
    with pytest.raises(InvalidInputError, match="no images"):
        task.preprocess([])
    with pytest.raises(InvalidInputError, match="at most 256"):
        task.preprocess([b"x"] * 257)
    feeds = task.preprocess([encode(paper(), "PNG")])
    assert feeds[0]["image"].shape == (1, 32, 32, 1)


def test_pixels_are_counted_from_headers() -> None:
    small, big = encode(paper((64, 32)), "PNG"), png_header(3000, 2000)
    assert pixels([small, big, b"junk"]) == 64 * 32 + 3000 * 2000
