"""Protobuf ⇄ domain types for the Open Inference Protocol. The only place V2 messages are taken apart."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from service import tensors
from service.config import ModelConfig
from service.errors import InvalidInputError, quoted
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import model_config_pb2 as mc
from service.types import InferRequest, InferResponse, ModelStats
from service.validation import RequestLimits, datatype_of

# Typed-contents field for each datatype (FP16/BF16 travel only as raw bytes).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_CONFIG_TYPES = {
    "BOOL": mc.TYPE_BOOL,
    "UINT8": mc.TYPE_UINT8,
    "UINT16": mc.TYPE_UINT16,
    "UINT32": mc.TYPE_UINT32,
    "UINT64": mc.TYPE_UINT64,
    "INT8": mc.TYPE_INT8,
    "INT16": mc.TYPE_INT16,
    "INT32": mc.TYPE_INT32,
    "INT64": mc.TYPE_INT64,
    "FP16": mc.TYPE_FP16,
    "FP32": mc.TYPE_FP32,
    "FP64": mc.TYPE_FP64,
    "BYTES": mc.TYPE_STRING,
}
_RAW_OUTPUT_TAG = bytes([pb.ModelInferResponse.RAW_OUTPUT_CONTENTS_FIELD_NUMBER << 3 | 2])
"""Field `raw_output_contents`, wire type 2 (length-delimited): one byte, as the field number is below 16."""
_ID_TAG = bytes([pb.ModelInferResponse.ID_FIELD_NUMBER << 3 | 2])
decode_bytes = tensors.decode_bytes
encode_bytes = tensors.encode_bytes


# ---- requests ---------------------------------------------------------------------------------
def _decode_tensor(
    tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, limits: RequestLimits
) -> np.ndarray:
    """One input tensor; its declared shape is checked against the limits and the payload before any
    array is allocated for it."""
    name, datatype = tensor.name, tensor.datatype
    count = limits.check_declared(name, tensor.shape)
    shape = tuple(tensor.shape)
    tensors.dtype_of(name, datatype)
    if raw is not None:
        return tensors.from_raw(name, datatype, shape, count, raw)
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(f"input {quoted(name)}: {datatype} data must be sent in raw_input_contents")
    return tensors.from_typed(name, datatype, shape, count, getattr(tensor.contents, field), f"contents.{field}")


def _decode_fixed(
    request: pb.ModelInferRequest, raw_contents: Sequence[bytes], limits: RequestLimits
) -> dict[str, np.ndarray] | None:
    """The common request in one pass (`RequestLimits.decode_fixed`): raw contents only, one per input, and no
    parameters. None: the full path decodes it, or names what is wrong."""
    inputs = request.inputs
    if len(inputs) != len(raw_contents):
        return None
    found = []
    for i in range(len(inputs)):  # by index: iterating protobuf's containers ends by raising IndexError
        tensor = inputs[i]
        if tensor.parameters or tensor.HasField("contents"):
            return None
        found.append((tensor.name, tensor.datatype, tensor.shape[:], raw_contents[i]))  # shape[:] is a list, fast
    return limits.decode_fixed(found)


def _refuse_tensor_parameters(request: pb.ModelInferRequest) -> None:
    for kind, items in (("input", request.inputs), ("output", request.outputs)):
        for tensor in items:
            if tensor.parameters:
                tensors.refuse_tensor_parameters(kind, tensor.name, tensor.parameters)


def _timeout_parameter(request: pb.ModelInferRequest) -> float | None:
    """Triton's `timeout` request parameter, in microseconds."""
    param = request.parameters.get("timeout")
    if param is None:
        return None
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param") or getattr(param, kind) <= 0:
        raise InvalidInputError("parameter 'timeout' must be a positive integer number of microseconds")
    return float(getattr(param, kind)) / 1e6


def decode_infer_request(
    request: pb.ModelInferRequest, time_remaining: float | None, limits: RequestLimits
) -> InferRequest:
    """`time_remaining` is the gRPC deadline's remaining seconds (None without a deadline); `limits` are the
    model's, checked before any tensor is decoded."""
    raw_contents = request.raw_input_contents
    if raw_contents and not request.parameters and not request.outputs and limits.fixed is not None:
        fast = _decode_fixed(request, raw_contents, limits)
        if fast is not None:
            return InferRequest(
                request.model_name,
                request.model_version,
                fast,
                (),
                request.id,
                tensors.deadline(time_remaining, None),
                True,
            )
    mixed = next((t.name for t in request.inputs if t.HasField("contents")), None) if raw_contents else None
    if mixed is not None:  # Triton's wording, which its example clients check for
        raise InvalidInputError(
            f"contents field must not be specified when using raw_input_contents for {quoted(mixed)} for model "
            f"{quoted(request.model_name)}; send every input in raw_input_contents, or every one in contents"
        )
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise InvalidInputError(
            f"{len(raw_contents)} raw_input_contents for {len(request.inputs)} inputs; send one per input, or none"
        )
    _refuse_tensor_parameters(request)
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInputError(f"input {quoted(tensor.name)} appears twice in the request")
        inputs[tensor.name] = _decode_tensor(tensor, raw_contents[i] if raw_contents else None, limits)
    timeout = _timeout_parameter(request) if request.parameters else None
    deadline = tensors.deadline(time_remaining, timeout)
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        inputs=inputs,
        outputs=tuple(o.name for o in request.outputs),
        id=request.id,
        deadline=deadline,
    )


def serialize_infer_response(response: InferResponse) -> bytes:
    """The wire bytes of a ModelInferResponse with raw output contents. The small part (names, datatypes,
    shapes) is built by protobuf once per model version and output layout (`_response_head`); the id and each
    output's bytes are appended as their fields (`id`, `raw_output_contents`), straight from the array, so a
    large output is copied once, not three times (tobytes, into the message, serializing): less memory per
    response waiting on a slow client, and less time on the event loop. Fields may come in any order on the
    wire; protobuf parses them the same."""
    layout = []
    parts: list[bytes | memoryview] = []
    for name, arr in response.outputs.items():
        datatype = datatype_of(arr)
        layout.append((name, datatype, arr.shape))
        data = tensors.raw_bytes(arr, datatype)
        parts += (_RAW_OUTPUT_TAG, _varint(len(data)), data)
    head = _response_head(response.model, response.version, tuple(layout))
    if response.id:
        ident = response.id.encode()
        head += _ID_TAG + _varint(len(ident)) + ident
    return b"".join([head, *parts])


@functools.lru_cache(maxsize=4096)
def _response_head(model: str, version: str, layout: tuple[tuple[str, str, tuple[int, ...]], ...]) -> bytes:
    """A ModelInferResponse's model, version and outputs (name, datatype, shape), serialized. A version's
    layouts are few (one per batch size and output length), so the cache holds them all but the rarest."""
    out = pb.ModelInferResponse(model_name=model, model_version=version)
    for name, datatype, shape in layout:
        out.outputs.add(name=name, datatype=datatype, shape=shape)
    return out.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ---- metadata, config, statistics ----------------------------------------------------------------
def _shape(config: ModelConfig, dims: tuple[int, ...]) -> list[int]:
    return ([-1] if config.batched else []) + list(dims)


def model_metadata(name: str, versions: list[str], config: ModelConfig) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=name,
        versions=versions,
        platform="onnxruntime_onnx",
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=_shape(config, t.dims)) for t in config.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=_shape(config, t.dims)) for t in config.outputs],
    )


def model_config(name: str, versions: list[str], config: ModelConfig) -> mc.ModelConfig:
    db = config.dynamic_batching
    out = mc.ModelConfig(
        name=name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=config.max_batch_size,
        input=[mc.ModelInput(name=t.name, data_type=_CONFIG_TYPES[t.datatype], dims=t.dims) for t in config.inputs],
        output=[mc.ModelOutput(name=t.name, data_type=_CONFIG_TYPES[t.datatype], dims=t.dims) for t in config.outputs],
        instance_group=[
            mc.ModelInstanceGroup(name=f"{name}_0", count=config.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        ],
        default_model_filename="model.onnx",
    )
    out.version_policy.specific.versions.extend(int(v) for v in versions)
    if config.batched and db.enabled:
        out.dynamic_batching.preferred_batch_size.extend(db.preferred_batch_sizes)
        out.dynamic_batching.max_queue_delay_microseconds = int(db.max_queue_delay_ms * 1000)
        policy = out.dynamic_batching.default_queue_policy
        policy.max_queue_size = db.max_queue_size
        if db.default_timeout_ms:
            policy.default_timeout_microseconds = int(db.default_timeout_ms * 1000)
            policy.allow_timeout_override = True
    return out


def model_statistics(name: str, version: str, stats: ModelStats) -> pb.ModelStatistics:
    def duration(d: object) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns)  # type: ignore[attr-defined]

    out = pb.ModelStatistics(
        name=name,
        version=version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
    )
    s = out.inference_stats
    for field in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        getattr(s, field).CopyFrom(duration(getattr(stats, field)))
    for size, b in sorted(stats.batches.items()):
        out.batch_stats.add(
            batch_size=size,
            compute_input=duration(b.compute_input),
            compute_infer=duration(b.compute_infer),
            compute_output=duration(b.compute_output),
        )
    return out
