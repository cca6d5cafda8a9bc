"""Check decoded request tensors against the model's config before they are queued."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from service.config import DATATYPES, ModelConfig
from service.errors import InvalidInputError

_NUMPY_TO_DATATYPE = {np.dtype(v): k for k, v in DATATYPES.items()}
_NUMPY_TO_DATATYPE[np.dtype(np.longlong)] = "INT64"
_NUMPY_TO_DATATYPE[np.dtype(np.ulonglong)] = "UINT64"


def datatype_of(arr: np.ndarray) -> str:
    """The protocol datatype of an array (called per tensor on the hot path: one dict lookup)."""
    datatype = _NUMPY_TO_DATATYPE.get(arr.dtype)
    return datatype if datatype is not None else str(arr.dtype)


def validate_inputs(config: ModelConfig, model: str, inputs: Mapping[str, np.ndarray]) -> None:
    """Names, datatypes, ranks, dims and batch size; raises InvalidInputError naming the problem."""
    unknown = [n for n in inputs if config.input(n) is None]
    if unknown:
        raise InvalidInputError(
            f"model '{model}' has no input named {unknown[0]!r}; its inputs are {[t.name for t in config.inputs]}"
        )
    missing = [t.name for t in config.inputs if t.name not in inputs]
    if missing:
        raise InvalidInputError(f"model '{model}' needs input {missing[0]!r}, which the request does not carry")
    batch: int | None = None
    for spec in config.inputs:
        arr = inputs[spec.name]
        got = datatype_of(arr)
        if got != spec.datatype:
            raise InvalidInputError(
                f"input {spec.name!r} of model '{model}' must be {spec.datatype}, the request sent {got}"
            )
        expected = ((-1,) if config.batched else ()) + spec.dims
        if arr.ndim != len(expected) or any(e != -1 and e != s for e, s in zip(expected, arr.shape, strict=True)):
            raise InvalidInputError(
                f"input {spec.name!r} of model '{model}' must have shape {list(expected)} (-1: any size), "
                f"the request sent {list(arr.shape)}"
            )
        if spec.datatype == "BYTES":
            _check_utf8(arr, spec.name, model)
        if any(s == 0 for s in arr.shape):
            raise InvalidInputError(f"input {spec.name!r} has an empty dimension: shape {list(arr.shape)}")
        if config.batched:
            if batch is None:
                batch = arr.shape[0]
            elif arr.shape[0] != batch:
                raise InvalidInputError(
                    f"all inputs must have the same batch size; {spec.name!r} has {arr.shape[0]}, others {batch}"
                )
    if batch is not None and batch > config.max_batch_size:
        raise InvalidInputError(
            f"batch size {batch} exceeds max_batch_size {config.max_batch_size} of model '{model}'; split the request"
        )


def _check_utf8(arr: np.ndarray, name: str, model: str) -> None:
    """ONNX string tensors hold text: onnxruntime takes them as `str`, so BYTES elements must be UTF-8."""
    for i, item in enumerate(arr.flat):
        if isinstance(item, bytes):
            try:
                item.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidInputError(
                    f"input {name!r} of model '{model}': element {i} is not valid UTF-8 "
                    f"({err.reason} at byte {err.start}); send UTF-8 text"
                ) from None


def validate_outputs(config: ModelConfig, model: str, requested: Sequence[str]) -> None:
    for name in requested:
        if config.output(name) is None:
            raise InvalidInputError(
                f"model '{model}' has no output named {name!r}; its outputs are {[t.name for t in config.outputs]}"
            )
