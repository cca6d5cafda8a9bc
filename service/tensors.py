"""Open Inference Protocol tensors ⇄ arrays, whatever the wire: what gRPC (`grpc/convert.py`) and HTTP
(`http/codec.py`) both need once each has taken its message apart.

Every function gets the element count the request declared, already checked against the model's limits
(`RequestLimits.check_declared`), and checks the data against it before an array is allocated.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Sequence

import numpy as np

from service.config import DATATYPES, INTEGER_DATATYPES
from service.errors import InvalidInputError, quoted

DTYPES = {k: np.dtype(v) for k, v in DATATYPES.items()}
_LEN = struct.Struct("<I")
# Typed contents arrive in 32-bit fields for the narrower integer types: decoded wide, then range-checked.
_WIDE = {
    "INT8": np.dtype(np.int32),
    "INT16": np.dtype(np.int32),
    "UINT8": np.dtype(np.uint32),
    "UINT16": np.dtype(np.uint32),
}
_JSON_KINDS = {"BOOL": "b", "FP16": "biuf", "FP32": "biuf", "FP64": "biuf", **dict.fromkeys(INTEGER_DATATYPES, "iu")}
"""numpy kinds a JSON list may parse as, per datatype: numbers for numbers, true/false for BOOL."""
_JSON_WORDS = {"b": "true or false", "biuf": "numbers", "iu": "integers"}

_SHARED_MEMORY = "deepserve has no shared memory; send the tensors in the request itself"
UNSUPPORTED_TENSOR_PARAMETERS = {
    "shared_memory_region": _SHARED_MEMORY,
    "shared_memory_byte_size": _SHARED_MEMORY,
    "shared_memory_offset": _SHARED_MEMORY,
    "classification": "deepserve does not implement Triton's classification extension; ask for the raw output, or "
    "use the image classification or sentiment task API",
}
"""Triton's tensor parameters that change what a tensor holds: ignoring them would answer with something other
than what the client asked for, so they are refused. Other parameters are ignored, as Triton does."""


def dtype_of(name: str, datatype: str) -> np.dtype:
    dtype = DTYPES.get(datatype)
    if dtype is None:
        raise InvalidInputError(
            f"input {quoted(name)}: unknown datatype {quoted(datatype)}; use one of {sorted(DTYPES)}"
        )
    return dtype


def refuse_tensor_parameters(kind: str, name: str, keys: Iterable[str]) -> None:
    for key in keys:
        if key in UNSUPPORTED_TENSOR_PARAMETERS:
            raise InvalidInputError(
                f"{kind} {quoted(name)}: parameter {quoted(key)} is not supported: {UNSUPPORTED_TENSOR_PARAMETERS[key]}"
            )


def deadline(*timeouts: float | None) -> float | None:
    """The `time.monotonic()` deadline of the shortest of the timeouts given (seconds), None without any."""
    given = [t for t in timeouts if t is not None]
    return time.monotonic() + min(given) if given else None


# ---- raw bytes ------------------------------------------------------------------------------------
def decode_bytes(raw: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """Elements each prefixed by a 4-byte little-endian length. The count is checked against the data's
    size before the array is allocated: every element takes at least its 4-byte prefix."""
    if count * _LEN.size > len(raw):
        raise InvalidInputError(
            f"input {quoted(name)}: raw BYTES data of {len(raw)} bytes cannot hold {count} elements "
            f"(each takes at least its 4-byte length prefix)"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    pos = 0
    for i in range(count):
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if pos + n > len(view):
            raise InvalidInputError(f"input {quoted(name)}: BYTES element {i} claims {n} bytes but the data ends first")
        out[i] = bytes(view[pos : pos + n])
        pos += n
        if pos + 4 * (count - i - 1) > len(view):
            raise InvalidInputError(f"input {quoted(name)}: raw BYTES data ends after {i + 1} of {count} elements")
    if pos != len(view):
        raise InvalidInputError(f"input {quoted(name)}: {len(view) - pos} bytes left over after {count} BYTES elements")
    return out


def encode_bytes(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def raw_bytes(arr: np.ndarray, datatype: str) -> bytes | memoryview:
    """An output's raw wire bytes: row-major, BYTES elements length-prefixed (no copy for numbers)."""
    return encode_bytes(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).data.cast("B")


def from_raw(name: str, datatype: str, shape: tuple[int, ...], count: int, raw: bytes | memoryview) -> np.ndarray:
    """A tensor sent as raw bytes (gRPC `raw_input_contents`, HTTP binary data)."""
    dtype = dtype_of(name, datatype)
    if datatype == "BYTES":
        return decode_bytes(raw, count, name).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input {quoted(name)}: raw data is {len(raw)} bytes but shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


# ---- typed values ---------------------------------------------------------------------------------
def from_typed(
    name: str, datatype: str, shape: tuple[int, ...], count: int, values: Sequence[object], where: str
) -> np.ndarray:
    """A tensor sent as values of a typed field (gRPC `contents.<type>_contents`); `where` names the field."""
    dtype = dtype_of(name, datatype)
    _check_count(name, len(values), where, shape, count)
    if datatype == "BYTES":
        return _objects(list(values), shape)
    wide = np.asarray(values, dtype=_WIDE.get(datatype, dtype))
    if datatype in _WIDE:
        _check_range(name, datatype, wide, where)
    return wide.astype(dtype, copy=False).reshape(shape)


def from_json(name: str, datatype: str, shape: tuple[int, ...], count: int, data: object) -> np.ndarray:
    """A tensor sent as a JSON list (HTTP `data`), flat or nested, in row-major order. Numbers must be numbers
    (no strings, no floats for integers), integers in their datatype's range; BYTES elements are strings
    (UTF-8) or lists of byte values."""
    dtype = dtype_of(name, datatype)
    values = _flat(name, data)
    _check_count(name, len(values), "data", shape, count)
    if datatype == "BYTES":
        return _objects([_json_bytes(name, i, v) for i, v in enumerate(values)], shape)
    try:
        parsed = np.asarray(values)
    except (OverflowError, ValueError):
        parsed = np.asarray(values, dtype=object)
    kinds = _JSON_KINDS[datatype]
    if parsed.size and parsed.dtype.kind not in kinds:
        raise InvalidInputError(
            f"input {quoted(name)}: {datatype} data must be {_JSON_WORDS[kinds]}; the request sent "
            f"{_what(values, kinds)}"
        )
    if datatype in INTEGER_DATATYPES:
        _check_range(name, datatype, parsed, "data")
    return parsed.astype(dtype, copy=False).reshape(shape)


def _check_count(name: str, got: int, where: str, shape: tuple[int, ...], count: int) -> None:
    if got != count:
        raise InvalidInputError(f"input {quoted(name)}: {got} values in {where} but shape {list(shape)} needs {count}")


def _objects(values: list[object], shape: tuple[int, ...]) -> np.ndarray:
    """BYTES elements as an object array (np.asarray would make fixed-width strings, or split nested ones)."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr.reshape(shape)


def _flat(name: str, data: object) -> list[object]:
    if not isinstance(data, list):
        raise InvalidInputError(f"input {quoted(name)}: data must be a JSON list of the tensor's values, row-major")
    if not data or not isinstance(data[0], list):
        return data
    out: list[object] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) >= 16:
                    raise InvalidInputError(f"input {quoted(name)}: data nests lists more than 16 deep")
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _json_bytes(name: str, index: int, value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise InvalidInputError(f"input {quoted(name)}: BYTES element {index} must be a string, got {type(value).__name__}")


def _what(values: list[object], kinds: str) -> str:
    for value in values:
        kind = np.asarray(value).dtype.kind if isinstance(value, (bool, int, float)) else "O"
        if kind not in kinds:
            return f"{quoted(repr(value), 32)} ({type(value).__name__})"
    return "values out of any numeric range"


def _check_range(name: str, datatype: str, values: np.ndarray, where: str) -> None:
    if not values.size:
        return
    info = np.iinfo(DTYPES[datatype])
    low, high = int(values.min()), int(values.max())
    if low < info.min or high > info.max:
        raise InvalidInputError(
            f"input {quoted(name)}: {datatype} values must be between {info.min} and {info.max}, "
            f"{where} holds {low if low < info.min else high}"
        )


def to_json(arr: np.ndarray) -> list[object]:
    """An output's values as a flat JSON-ready list, row-major; BYTES elements as UTF-8 text."""
    if arr.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return arr.reshape(-1).tolist()  # type: ignore[no-any-return]
