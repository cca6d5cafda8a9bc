"""Large JPEGs are decoded at a reduced scale that still covers the model's input generously."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.config import ImagePreprocessing
from service.tasks.image_classification import decode, prepare


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = ((x // 64 + y // 64) % 2 * 255).astype(np.uint8)  # a checkerboard, smooth enough to compare
    image = Image.fromarray(pixels, "L")
    out = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def test_a_big_jpeg_is_decoded_at_the_smallest_scale_that_covers_the_request() -> None:
    image = decode(jpeg(4096, 3072), at_least=(256, 256))
    assert image.size == (512, 384)  # 1/8: the smallest scale still at least 256 on both sides
    assert decode(jpeg(1024, 768), at_least=(256, 256)).size == (512, 384)  # 1/2
    assert decode(jpeg(300, 200), at_least=(256, 256)).size == (300, 200)  # no smaller scale covers it
    assert decode(jpeg(4096, 3072)).size == (4096, 3072)


def test_rotated_photos_are_reduced_by_their_upright_size() -> None:
    image = decode(jpeg(4096, 2048, orientation=6), at_least=(256, 1024))  # turned by 90 degrees when shown
    assert image.size == (512, 1024)  # stored 1024x512 (1/4); the stored size would have asked for 1/2


def test_the_reduced_decode_gives_the_model_the_same_input() -> None:
    spec = ImagePreprocessing(height=32, width=32, channels=1)
    data = jpeg(4096, 3072)
    full, reduced = prepare(decode(data), spec), prepare(decode(data, at_least=(256, 256)), spec)
    assert np.abs(full - reduced).mean() < 0.02
