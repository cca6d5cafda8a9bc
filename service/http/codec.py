"""KServe V2 REST (JSON, and Triton's binary tensor data extension) ⇄ domain types. The only place HTTP inference
bodies are taken apart; the tensors themselves go through `service/tensors.py`, as gRPC's do.

Binary data: the body is a JSON header of `Inference-Header-Content-Length` bytes, then each input that has the
parameter `binary_data_size` takes that many bytes, in the order of `inputs`. Outputs are answered as binary data
when their `parameters.binary_data` is true, or, for outputs that do not say, when the request's
`parameters.binary_data_output` is; the response then carries `Inference-Header-Content-Length` too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import tensors
from service.config import ModelConfig
from service.errors import InvalidInputError, quoted
from service.types import InferRequest, InferResponse
from service.validation import RequestLimits, datatype_of

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Decoded:
    request: InferRequest
    binary: Callable[[str], bool]
    """Whether an output is to be answered as binary data."""


def parse_json(data: bytes | memoryview, what: str) -> Any:
    try:
        return json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidInputError(f"{what} is not valid JSON: {err}") from None


def decode_infer_request(
    body: bytes, header_length: int | None, model: str, version: str, limits: RequestLimits
) -> Decoded:
    """`header_length`: the `Inference-Header-Content-Length` header, None without one (the body is all JSON)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes; it must be the "
            "length of the JSON part at the start of the body"
        )
    view = memoryview(body)
    end = len(body) if header_length is None else header_length
    header = _object(parse_json(view[:end], "the request body"), "the request body")
    inputs_json = header.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidInputError("the request must have 'inputs', a non-empty list of tensors")
    parameters = _object(header.get("parameters", {}), "'parameters'")
    inputs: dict[str, np.ndarray] = {}
    offset = end
    for index, item in enumerate(inputs_json):
        tensor = _object(item, f"inputs[{index}]")
        name = _string(tensor, "name", f"inputs[{index}]")
        if name in inputs:
            raise InvalidInputError(f"input {quoted(name)} appears twice in the request")
        inputs[name], offset = _decode_input(name, tensor, view, offset, limits)
    if offset != len(body):
        raise InvalidInputError(
            f"{len(body) - offset} bytes of binary data after the inputs' binary_data_size; send exactly what they say"
        )
    binary = _binary_choice(header.get("outputs", []), parameters)
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    request = InferRequest(
        model=model,
        version=version,
        inputs=inputs,
        outputs=tuple(binary.names),
        id=request_id,
        deadline=tensors.deadline(_timeout(parameters)),
    )
    return Decoded(request, binary)


def _decode_input(
    name: str, tensor: dict[str, Any], body: memoryview, offset: int, limits: RequestLimits
) -> tuple[np.ndarray, int]:
    where = f"input {quoted(name)}"
    datatype = _string(tensor, "datatype", where)
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInputError(f"{where}: 'shape' must be a list of integers")
    count = limits.check_declared(name, shape)
    tensors.dtype_of(name, datatype)
    parameters = _object(tensor.get("parameters", {}), f"{where} 'parameters'")
    tensors.refuse_tensor_parameters("input", name, parameters)
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise InvalidInputError(f"{where} has no 'data' (and no binary_data_size parameter)")
        return tensors.from_json(name, datatype, tuple(shape), count, tensor["data"]), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"{where}: binary_data_size must be a non-negative integer")
    if "data" in tensor:
        raise InvalidInputError(f"{where} has both 'data' and binary_data_size; send one")
    if offset + size > len(body):
        raise InvalidInputError(
            f"{where}: binary_data_size is {size} but only {len(body) - offset} bytes of binary data are left"
        )
    return tensors.from_raw(name, datatype, tuple(shape), count, body[offset : offset + size]), offset + size


class _BinaryChoice:
    """Which outputs are answered as binary data (callable), and the outputs asked for (`names`)."""

    def __init__(self, names: list[str], chosen: dict[str, bool], default: bool) -> None:
        self.names, self.chosen, self.default = names, chosen, default

    def __call__(self, name: str) -> bool:
        return self.chosen.get(name, self.default)


def _binary_choice(outputs: object, parameters: dict[str, Any]) -> _BinaryChoice:
    if not isinstance(outputs, list):
        raise InvalidInputError("'outputs' must be a list")
    default = parameters.get("binary_data_output", False)
    if not isinstance(default, bool):
        raise InvalidInputError("parameter 'binary_data_output' must be true or false")
    names: list[str] = []
    chosen: dict[str, bool] = {}
    for index, item in enumerate(outputs):
        output = _object(item, f"outputs[{index}]")
        name = _string(output, "name", f"outputs[{index}]")
        params = _object(output.get("parameters", {}), f"output {quoted(name)} 'parameters'")
        tensors.refuse_tensor_parameters("output", name, params)
        binary = params.get("binary_data", default)
        if not isinstance(binary, bool):
            raise InvalidInputError(f"output {quoted(name)}: binary_data must be true or false")
        names.append(name)
        chosen[name] = binary
    return _BinaryChoice(names, chosen, default)


def _timeout(parameters: dict[str, Any]) -> float | None:
    """Triton's `timeout` request parameter, in microseconds."""
    value = parameters.get("timeout")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError("parameter 'timeout' must be a positive integer number of microseconds")
    return value / 1e6


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object")
    return value


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{where}: {key!r} must be a non-empty string")
    return value


# ---- responses --------------------------------------------------------------------------------------
def encode_infer_response(response: InferResponse, binary: Callable[[str], bool]) -> tuple[bytes, dict[str, str]]:
    """The body and its headers: all JSON, or a JSON header followed by the binary outputs."""
    outputs: list[dict[str, Any]] = []
    parts: list[bytes | memoryview] = []
    for name, arr in response.outputs.items():
        datatype = datatype_of(arr)
        out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary(name):
            data = tensors.raw_bytes(arr, datatype)
            out["parameters"] = {"binary_data_size": len(data)}
            parts.append(data)
        else:
            out["data"] = tensors.to_json(arr)
        outputs.append(out)
    body: dict[str, Any] = {"model_name": response.model, "model_version": response.version}
    if response.id:
        body["id"] = response.id
    body["outputs"] = outputs
    header = json.dumps(body, separators=(",", ":")).encode()
    if not parts:
        return header, {"content-type": JSON_TYPE}
    return b"".join([header, *parts]), {"content-type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


def model_metadata(name: str, versions: list[str], config: ModelConfig) -> dict[str, Any]:
    batch = [-1] if config.batched else []

    def tensor(t: Any) -> dict[str, Any]:
        return {"name": t.name, "datatype": t.datatype, "shape": [*batch, *t.dims]}

    return {
        "name": name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": [tensor(t) for t in config.inputs],
        "outputs": [tensor(t) for t in config.outputs],
    }


def model_config(name: str, versions: list[str], config: ModelConfig) -> dict[str, Any]:
    """Triton's model configuration extension, as its HTTP endpoint answers: the JSON of the `inference.ModelConfig`
    that gRPC's `ModelConfig` returns (protobuf field names, enums by name), with 64-bit integers as JSON numbers
    as Triton writes them. A test checks that the two agree for every model."""

    def tensor(t: Any) -> dict[str, Any]:
        kind = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
        return {"name": t.name, "data_type": kind, "dims": list(t.dims)}

    out: dict[str, Any] = {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": [int(v) for v in versions]}},
        "max_batch_size": config.max_batch_size,
        "input": [tensor(t) for t in config.inputs],
        "output": [tensor(t) for t in config.outputs],
        "instance_group": [{"name": f"{name}_0", "count": config.instances, "kind": "KIND_CPU"}],
        "default_model_filename": "model.onnx",
    }
    db = config.dynamic_batching
    if config.batched and db.enabled:
        policy: dict[str, Any] = {"max_queue_size": db.max_queue_size}
        if db.default_timeout_ms:
            policy["default_timeout_microseconds"] = int(db.default_timeout_ms * 1000)
            policy["allow_timeout_override"] = True
        out["dynamic_batching"] = {
            "preferred_batch_size": list(db.preferred_batch_sizes),
            "max_queue_delay_microseconds": int(db.max_queue_delay_ms * 1000),
            "default_queue_policy": policy,
        }
    return out


def model_statistics(name: str, version: str, stats: Any) -> dict[str, Any]:
    """Triton's statistics extension, as its HTTP endpoint answers (`ModelStatistics` on gRPC): counts and
    durations in nanoseconds."""

    def duration(d: Any) -> dict[str, int]:
        return {"count": int(d.count), "ns": int(d.ns)}

    kinds = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
    return {
        "name": name,
        "version": version,
        "last_inference": int(stats.last_inference_ms),
        "inference_count": int(stats.inference_count),
        "execution_count": int(stats.execution_count),
        "inference_stats": {kind: duration(getattr(stats, kind)) for kind in kinds},
        "batch_stats": [
            {"batch_size": size, **{kind: duration(getattr(b, kind)) for kind in kinds[3:]}}
            for size, b in sorted(stats.batches.items())
        ],
    }
