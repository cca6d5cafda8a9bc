"""Check request tensors against the model's config and limits before they are queued.

`RequestLimits` resolves a model's `limits:` section and its inputs' value ranges (with defaults derived
from the model) once, at load; `check_declared` runs on a tensor's declared shape before it is decoded,
`validate_inputs` on the decoded tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.config import DATATYPES, INTEGER_DATATYPES, ModelConfig, Task
from service.errors import InvalidInputError, quoted

MAX_RANK = 16
UNBOUNDED_DIM = 65_536
"""A variable dim counts this much towards the default `max_input_elements` when `max_variable_dim` is unset."""
TOKEN_TASKS = (Task.SENTIMENT, Task.TEXT_GENERATION)

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
            f"model '{model}' has no input named {quoted(unknown[0])}; its inputs are {[t.name for t in config.inputs]}"
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
                f"model '{model}' has no output named {quoted(name)}; "
                f"its outputs are {[t.name for t in config.outputs]}"
            )


@dataclass(frozen=True, slots=True)
class FixedInput:
    """An input with every dim fixed and a numeric datatype: a tensor that matches it exactly needs no other
    check (`RequestLimits.decode_fixed`)."""

    datatype: str
    dtype: np.dtype
    dims: list[int]
    """Without the batch dim; a list, as declared shapes are compared as lists (`decode_fixed`)."""
    item_bytes: int
    """Raw bytes of one batch item (of the whole tensor, for a model without a batch dim)."""
    max_rows: int
    """The most batch items one request may carry: max_batch_size, or fewer where `max_input_elements` says so."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """A model's per-request bounds for V2 tensors, resolved at load (defaults derived from the model)."""

    model: str
    max_batch_size: int
    """0 when the model has no batch dimension."""
    max_elements: dict[str, int]
    """Per input name."""
    max_variable_dim: int | None
    variable_axes: dict[str, tuple[int, ...]]
    """Per input, the axes of its variable dims (after the batch axis, when the model has one)."""
    value_ranges: dict[str, tuple[int, int]]
    same_shape: dict[str, str]
    """Input → the input it must match in shape."""
    fixed: dict[str, FixedInput] | None = None
    """Per input, when every input of the model has fixed dims, a numeric datatype and no value range: then a
    request whose tensors match exactly is decoded by `decode_fixed` in one pass. None: every request takes the
    full path (`check_declared`, decoding, `validate_inputs`, `check_values`)."""

    @classmethod
    def resolve(cls, model: str, config: ModelConfig, vocab_size: int | None = None) -> RequestLimits:
        """`vocab_size`: the tokenizer's, for the token input of a sentiment or text_generation model."""
        limits = config.limits
        dim = limits.max_variable_dim
        if dim is None and config.generation is not None:
            dim = config.generation.context_length
        elif dim is None and config.text is not None:
            dim = config.text.max_length
        batch = max(config.max_batch_size, 1)
        elements = {}
        for spec in config.inputs:
            derived = batch * math.prod(d if d > 0 else (dim or UNBOUNDED_DIM) for d in spec.dims)
            elements[spec.name] = limits.max_input_elements or derived
        ranges = {s.name: s.value_range for s in config.inputs if s.value_range is not None}
        tokens = [s for s in config.inputs if s.name != "attention_mask" and s.datatype in INTEGER_DATATYPES]
        if config.task in TOKEN_TASKS and vocab_size and len(tokens) == 1 and tokens[0].name not in ranges:
            ranges[tokens[0].name] = (0, vocab_size - 1)
        first = 1 if config.batched else 0
        axes = {s.name: tuple(first + i for i, d in enumerate(s.dims) if d == -1) for s in config.inputs}
        same = {s.name: s.same_shape_as for s in config.inputs if s.same_shape_as}
        mask = config.input("attention_mask")
        if mask is not None and mask.name not in same:
            twins = [s.name for s in config.inputs if s.name != mask.name and s.dims == mask.dims]
            if len(twins) == 1:
                same[mask.name] = twins[0]
        return cls(
            model,
            config.max_batch_size,
            elements,
            dim,
            {n: a for n, a in axes.items() if a},
            ranges,
            same,
            _fixed(config, elements, ranges, same),
        )

    def decode_fixed(self, tensors: Iterable[tuple[str, str, list[int], bytes]]) -> dict[str, np.ndarray] | None:
        """The request's tensors (name, datatype, declared shape as a list, raw bytes) as arrays, when each is one of
        the model's `fixed` inputs exactly: its datatype and dims, a batch within `max_rows` and the same for all,
        and bytes to match. Such tensors pass every check of the full path, which need not run. None when
        anything differs (or the model has no `fixed` inputs): the full path then names what is wrong."""
        fixed = self.fixed
        if fixed is None:
            return None
        batched = self.max_batch_size > 0
        inputs: dict[str, np.ndarray] = {}
        rows = 0
        for name, datatype, shape, raw in tensors:
            spec = fixed.get(name)
            if spec is None or datatype != spec.datatype or name in inputs:
                return None
            if batched:
                count = shape[0] if shape else 0
                if shape[1:] != spec.dims or not 0 < count <= spec.max_rows or (rows and count != rows):
                    return None
                rows = count
            elif shape != spec.dims:
                return None
            else:
                count = 1
            if len(raw) != count * spec.item_bytes:
                return None
            inputs[name] = np.frombuffer(raw, dtype=spec.dtype).reshape(shape)
        return inputs if len(inputs) == len(fixed) else None

    def check_declared(self, name: str, shape: Sequence[int]) -> int:
        """The element count of a tensor the request declares, checked before anything is allocated for it."""
        limit = self.max_elements.get(name)
        if limit is None:
            raise InvalidInputError(
                f"model '{self.model}' has no input named {quoted(name)}; its inputs are {list(self.max_elements)}"
            )
        if len(shape) > MAX_RANK:
            raise InvalidInputError(f"input {quoted(name)} declares {len(shape)} dims; at most {MAX_RANK} are allowed")
        if any(d < 0 for d in shape):
            raise InvalidInputError(f"input {quoted(name)}: shape dims must be non-negative, got {list(shape)}")
        if self.max_batch_size and shape and shape[0] > self.max_batch_size:
            raise InvalidInputError(
                f"batch size {shape[0]} exceeds max_batch_size {self.max_batch_size} of model '{self.model}'; "
                "split the request"
            )
        dim = self.max_variable_dim
        if dim is not None and any(shape[a] > dim for a in self.variable_axes.get(name, ()) if a < len(shape)):
            raise InvalidInputError(
                f"input {quoted(name)} of model '{self.model}' declares shape {list(shape)}; its variable dims may "
                f"be at most {dim} (limits.max_variable_dim: the model's context)"
            )
        count = math.prod(shape)
        if count > limit:
            raise InvalidInputError(
                f"input {quoted(name)} declares shape {list(shape)} ({count} elements); this model accepts at most "
                f"{limit} elements per input (limits.max_input_elements); split the request"
            )
        return count

    def check_values(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Value ranges and shapes that must agree: what would fail the model's batch (dims were checked as
        declared, by `check_declared`)."""
        for name, arr in inputs.items():
            bounds = self.value_ranges.get(name)
            if bounds is not None and arr.size:
                low, high = int(arr.min()), int(arr.max())
                if low < bounds[0] or high > bounds[1]:
                    bad = low if low < bounds[0] else high
                    raise InvalidInputError(
                        f"input {quoted(name)} of model '{self.model}' holds {bad}; its values must be between "
                        f"{bounds[0]} and {bounds[1]} (value_range: for token ids, the vocabulary)"
                    )
        for name, other in self.same_shape.items():
            if name in inputs and other in inputs and inputs[name].shape != inputs[other].shape:
                raise InvalidInputError(
                    f"input {quoted(name)} of model '{self.model}' has shape {list(inputs[name].shape)} but must "
                    f"have the shape of {quoted(other)}, {list(inputs[other].shape)}"
                )


def _fixed(
    config: ModelConfig, elements: dict[str, int], ranges: dict[str, tuple[int, int]], same: dict[str, str]
) -> dict[str, FixedInput] | None:
    """`RequestLimits.fixed`: None unless every input has fixed, non-zero dims, a numeric datatype, no value
    range and no shape to share, and at least one batch item fits its element bound."""
    fixed = {}
    for spec in config.inputs:
        items = math.prod(spec.dims)
        if spec.datatype == "BYTES" or -1 in spec.dims or not items or spec.name in ranges or same:
            return None
        rows = min(config.max_batch_size, elements[spec.name] // items) if config.batched else 1
        if rows < 1 or (not config.batched and items > elements[spec.name]):
            return None
        dtype = np.dtype(DATATYPES[spec.datatype])
        fixed[spec.name] = FixedInput(spec.datatype, dtype, list(spec.dims), items * dtype.itemsize, rows)
    return fixed or None
