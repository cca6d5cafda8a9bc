"""Warm-up data: the feed of one `warmup` sample of config.yaml, from zeros, random data or a .npy file.

`runtime.ModelSession.warmup` runs the feeds; this module only builds them (numpy, no ONNX Runtime).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from service.config import DATATYPES, ModelConfig, TensorSpec, WarmupInput, WarmupSample, inside
from service.errors import ModelLoadError, quoted

log = logging.getLogger(__name__)

DEFAULT_SAMPLE = WarmupSample(name="zeros")
"""What runs when config.yaml has no `warmup` key: one batch of one on zeros."""
RANDOM_INTEGERS = (0, 9)
"""Inclusive bounds of random integers (and of the numbers in random BYTES) for inputs without a value_range."""
_ZEROS = WarmupInput()


def sample_feed(config: ModelConfig, index: int, folder: Path, model: str) -> dict[str, np.ndarray]:
    """Every input of `config` for its warm-up sample `index` (the default sample when config.yaml has no
    `warmup`), batch dimension included when the model has one. Random data comes from a generator seeded
    per sample, so a sample gives the same feed every time."""
    sample = config.warmup[index] if config.warmup is not None else DEFAULT_SAMPLE
    rng = np.random.default_rng(0)
    feed = {}
    for spec in config.inputs:
        data = sample.inputs.get(spec.name, _ZEROS)
        if data.file is not None:
            path = inside(model, folder, data.file, f"warmup.{index}.inputs.{spec.name}.file")
            feed[spec.name] = _from_file(spec, sample, config.batched, (path, data.file), model)
            continue
        item = data.dims or tuple(d if d > 0 else 1 for d in spec.dims)
        shape = ((sample.batch_size,) if config.batched else ()) + item
        feed[spec.name] = _random(spec, shape, rng) if data.data == "random" else _zeros(spec, shape)
    return feed


def _zeros(spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=DATATYPES[spec.datatype])


def _random(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(DATATYPES[spec.datatype])
    low, high = spec.value_range or RANDOM_INTEGERS
    if spec.datatype == "BYTES":
        numbers = rng.integers(low, high, size=shape, endpoint=True)
        out = np.empty(shape, dtype=object)
        out.flat[:] = [str(n).encode("ascii") for n in numbers.flat]
        return out
    if spec.datatype == "BOOL":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(bool)
    if dtype.kind == "f":
        return rng.random(size=shape).astype(dtype)
    return rng.integers(low, high, size=shape, endpoint=True, dtype=dtype)


def _from_file(spec: TensorSpec, sample: WarmupSample, batched: bool, file: tuple[Path, str], model: str) -> np.ndarray:
    """One input's .npy file (its path, and its name in config.yaml for messages): one item, repeated
    `batch_size` times, or with one more dim the whole batch."""
    path, shown = file[0], quoted(file[1])
    where = f"model '{model}': warmup sample {quoted(sample.name)}: input `{spec.name}`"
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ModelLoadError(f"{where}: there is no file {shown} in the model's folder") from None
    except (OSError, ValueError) as err:
        log.error("cannot read a warm-up file", extra={"model": model, "path": str(path), "error": str(err)})
        raise ModelLoadError(
            f"{where}: {shown} is not a .npy file numpy can read without pickle (the server log has the details)"
        ) from None
    arr = _as_datatype(arr, spec, f"{where}: {shown}")
    if batched and arr.ndim == len(spec.dims):
        arr = np.repeat(arr[np.newaxis], sample.batch_size, axis=0)
    expected = ([sample.batch_size] if batched else []) + list(spec.dims)
    if len(arr.shape) != len(expected) or any(e not in (-1, n) for n, e in zip(arr.shape, expected, strict=True)):
        raise ModelLoadError(
            f"{where}: {shown} has shape {list(arr.shape)}; the input takes {list(spec.dims)} per item"
            + (" (-1: any size)" if spec.variable else "")
            + (f": give one item, or a batch of {sample.batch_size}" if batched else "")
        )
    return arr


def _as_datatype(arr: np.ndarray, spec: TensorSpec, what: str) -> np.ndarray:
    if spec.datatype == "BYTES":
        if arr.dtype.kind not in "US":
            raise ModelLoadError(f"{what} holds {arr.dtype} values; a BYTES input needs a numpy str or bytes array")
        out = np.empty(arr.shape, dtype=object)
        out.flat[:] = [item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in arr.flat]
        return out
    dtype = np.dtype(DATATYPES[spec.datatype])
    if not np.can_cast(arr.dtype, dtype, casting="safe"):
        raise ModelLoadError(f"{what} holds {arr.dtype} values, which do not convert safely to {spec.datatype}")
    return arr.astype(dtype, copy=False)
