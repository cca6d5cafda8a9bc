"""Image preprocessing for training, the server's own, plus training-time augmentation.

`prepare_image` runs `service.tasks.image_classification.prepare`, the function the server runs on every
request, with the `image:` section a recipe writes into `config.yaml`: convert to the model's colour mode;
for `light_on_dark` models invert images whose background is light; `fit` the image into heightxwidth
keeping its aspect ratio on a background-coloured canvas, or with `locate: ink` find the mark on the page
and crop, scale and centre it first (`service/tasks/ink.py`); scale by 1/255. Training data goes through
the same function, so the server sees what training saw.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from service.config import ImagePreprocessing, Normalization
from service.tasks.image_classification import prepare

SCALE = 1.0 / 255.0


def prepare_image(
    image: Image.Image, height: int, width: int, channels: int, ink: str = "any", locate: str = "image"
) -> np.ndarray:
    """PIL image → float32 array (height, width, channels) in [0, 1], exactly as the server prepares it."""
    spec = ImagePreprocessing(
        height=height,
        width=width,
        channels=channels,  # type: ignore[arg-type]
        layout="NHWC",
        normalization=Normalization(scale=SCALE, mean=(0.0,), std=(1.0,)),
        ink=ink,  # type: ignore[arg-type]
        resize="fit",
        locate=locate,  # type: ignore[arg-type]
    )
    return prepare(image, spec)


def augment(images: np.ndarray, copies: int, seed: int) -> np.ndarray:
    """`copies` randomly distorted versions of each (H, W, C) image in [0, 1] (light ink on dark).

    Small rotations, shears, shifts and a wide range of scales and widths (a digit drawn on a page rarely
    fills the frame), then a random stroke weight (thinner by thresholding or erosion, thicker by dilation,
    softer by blur), contrast and background level, so a digit drawn with a pen on not-quite-white paper
    and resized looks like something the model has seen.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((len(images) * copies, *images.shape[1:]), dtype=np.float32)
    for i, image in enumerate(np.repeat(images, copies, axis=0)):
        out[i] = _distort(image, rng)
    return out


def _distort(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width, channels = image.shape
    angle = np.deg2rad(rng.uniform(-12, 12))
    shear = rng.uniform(-0.2, 0.2)
    scale = rng.uniform(0.5, 1.05) * np.array([rng.uniform(0.85, 1.15), rng.uniform(0.55, 1.15)])  # (rows, cols)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(matrix)
    centre = np.array([height, width]) / 2 - 0.5
    limit = max(0.0, 1 - scale.max()) * min(height, width) / 2 + 2
    shift = rng.uniform(-limit, limit, size=2)
    offset = centre - inverse @ (centre + shift)
    out = np.empty_like(image)
    for c in range(channels):
        plane = ndimage.affine_transform(image[..., c], inverse, offset=offset, order=1, mode="constant")
        out[..., c] = _stroke(plane, rng)
    out = out * rng.uniform(0.75, 1.0)
    if rng.random() < 0.5:  # paper that is not quite white becomes a background that is not quite black
        background = rng.uniform(0.0, 0.12)
        out = background + (1 - background) * out
    return np.clip(out, 0.0, 1.0)


def _stroke(plane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["same", "thin", "erode", "thick", "blur"], p=[0.25, 0.3, 0.15, 0.15, 0.15])
    if kind == "thin":
        threshold = rng.uniform(0.2, 0.6)
        return np.clip((plane - threshold) / (1 - threshold), 0, 1) ** rng.uniform(0.5, 1.0)
    if kind == "erode":
        return ndimage.grey_erosion(plane, size=(2, 2))
    if kind == "thick":
        return ndimage.grey_dilation(plane, size=(2, 2))
    if kind == "blur":
        return ndimage.gaussian_filter(plane, rng.uniform(0.4, 0.9))
    return plane
