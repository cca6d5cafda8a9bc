"""Stack requests into one batch and split the model's outputs back, per request.

Requests agree on every dimension but the first (the batch), except dimensions declared variable
with a pad value: those are padded to the longest request in the batch, and outputs whose matching
dimension came back padded are cut back to each request's own length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import InferenceError

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class CollateSpec:
    """What the collator needs to know about a model's tensors."""

    pad_values: Mapping[str, float | int]
    """Inputs whose variable dims may be padded, and the value to pad them with."""
    variable_outputs: Mapping[str, tuple[int, ...]]
    """Outputs with variable dims (axes counted with the batch axis): cropped to each request's length."""

    def key(self, inputs: Tensors) -> tuple:
        """Requests with equal keys can share a batch."""
        parts = []
        for name, arr in inputs.items():
            shape = arr.shape[1:]
            if name in self.pad_values:
                shape = (-1,) * len(shape)
            parts.append((name, arr.dtype.str, shape))
        return tuple(parts)


def batch_size(inputs: Tensors) -> int:
    return next(iter(inputs.values())).shape[0]


def concat(requests: Sequence[Tensors], spec: CollateSpec) -> tuple[Tensors, int | None]:
    """One feed dict for the whole batch, and the padded length when padding happened (else None)."""
    if len(requests) == 1:
        return requests[0], None
    feed: Tensors = {}
    padded_len: int | None = None
    for name in requests[0]:
        arrays = [r[name] for r in requests]
        first = arrays[0].shape[1:]
        if name in spec.pad_values and any(a.shape[1:] != first for a in arrays):
            tail = tuple(max(a.shape[i] for a in arrays) for i in range(1, arrays[0].ndim))
            total = sum(a.shape[0] for a in arrays)
            out = np.full((total, *tail), spec.pad_values[name], dtype=arrays[0].dtype)
            row = 0
            for a in arrays:
                out[(slice(row, row + a.shape[0]), *(slice(0, d) for d in a.shape[1:]))] = a
                row += a.shape[0]
            feed[name] = out
            if tail:
                padded_len = tail[0]
        else:
            feed[name] = np.concatenate(arrays, axis=0)
    return feed, padded_len


def split(
    outputs: Tensors, sizes: Sequence[int], lengths: Sequence[int | None], padded_len: int | None, spec: CollateSpec
) -> list[Tensors]:
    """Cut each output back into one piece per request; a wrong leading dim is an error, never a hang."""
    total = sum(sizes)
    for name, arr in outputs.items():
        if arr.ndim == 0 or arr.shape[0] != total:
            got = arr.shape[0] if arr.ndim else "a scalar"
            raise InferenceError(f"model output `{name}` has {got} rows for a batch of {total}")
    if len(sizes) == 1 and padded_len is None:  # one request, nothing padded: the outputs are its own
        return [dict(outputs)]
    pieces: list[Tensors] = [{} for _ in sizes]
    start = 0
    for i, size in enumerate(sizes):
        end = start + size
        for name, arr in outputs.items():
            piece = arr[start:end]
            axes = spec.variable_outputs.get(name, ())
            own = lengths[i]
            if padded_len is not None and own is not None and own != padded_len:
                for axis in axes:
                    if piece.shape[axis] == padded_len:
                        piece = piece[(slice(None),) * axis + (slice(0, own),)]
            pieces[i][name] = piece
        start = end
    return pieces


def own_length(inputs: Tensors, spec: CollateSpec) -> int | None:
    """Length of a request's first paddable dimension (what its variable outputs are cropped to)."""
    for name in spec.pad_values:
        arr = inputs.get(name)
        if arr is not None and arr.ndim > 1:
            return int(arr.shape[1])
    return None
