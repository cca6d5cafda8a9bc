"""Protocol hygiene on the gRPC port, against `deepserve serve`: bytes that are not a request, Triton methods
deepserve does not implement, and megabyte strings echoed in errors get the status a client can act on,
a short message, and no traceback in the server log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from tests.ops.servers import Server

V2 = "/inference.GRPCInferenceService/"
HEALTH = "/grpc.health.v1.Health/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
ANALYZE = "/deepserve.v1.SentimentAnalyzer/Analyze"
GARBAGE = b"\xff\xff\xff"
LATIN1_NAME = b"\x0a\x04caf\xe9"  # field 1 (ModelMetadataRequest.name, HealthCheckRequest.service) = b"caf\xe9"
HUGE = "n" * (1 << 20)
BAD_CALLS = 200


@pytest.fixture
def channel(committed: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(committed.address) as ch:
        yield ch


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def unary(channel: grpc.Channel, method: str, payload: bytes) -> grpc.RpcError:
    return refused(lambda: channel.unary_unary(method)(payload, timeout=10))


def streamed(channel: grpc.Channel, method: str, payloads: list[bytes]) -> grpc.RpcError:
    return refused(lambda: list(channel.stream_stream(method)(iter(payloads), timeout=10)))


def log_since(server: Server, offset: int) -> list[dict]:
    time.sleep(0.3)  # let the server flush its last lines
    with server.log_path.open("rb") as f:
        f.seek(offset)
        return [json.loads(line) for line in f.read().splitlines() if line.startswith(b"{")]


def assert_quiet(lines: list[dict]) -> None:
    """No error and no traceback: the log stays the operator's, not the client's."""
    loud = [line for line in lines if line["level"] in ("error", "critical") or "exception" in line]
    assert loud == [], loud[:2]


# ---- requests that do not parse ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "payload", "message"),
    [
        (V2 + "ModelInfer", GARBAGE, "the request is not a valid inference.ModelInferRequest message"),
        (V2 + "ServerLive", GARBAGE, "the request is not a valid inference.ServerLiveRequest message"),
        (
            V2 + "ModelMetadata",
            LATIN1_NAME,
            "name is not valid UTF-8 (byte 0xe9 at offset 3); send text encoded as UTF-8",
        ),
        (V2 + "ModelInfer", b"\x0a\x03a\xffb", "model_name is not valid UTF-8 (byte 0xff at offset 1)"),
        (HEALTH + "Check", GARBAGE, "the request is not a valid grpc.health.v1.HealthCheckRequest message"),
        (HEALTH + "Check", LATIN1_NAME, "service is not valid UTF-8 (byte 0xe9 at offset 3)"),
        (ANALYZE, GARBAGE, "the request is not a valid deepserve.v1.AnalyzeRequest message"),
    ],
)
def test_unparsable_unary_requests_are_invalid_argument(
    channel: grpc.Channel, method: str, payload: bytes, message: str
) -> None:
    err = unary(channel, method, payload)
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert err.details().startswith(message)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", [HEALTH + "Watch", "/deepserve.v1.TextGenerator/Generate"])
def test_unparsable_requests_to_server_streams_are_invalid_argument(channel: grpc.Channel, method: str) -> None:
    err = refused(lambda: list(channel.unary_stream(method)(GARBAGE, timeout=10)))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "is not a valid" in err.details()  # type: ignore[attr-defined]


def test_reflection_ends_the_stream_at_the_message_that_does_not_parse(channel: grpc.Channel) -> None:
    list_services = b"\x3a\x00"  # ServerReflectionRequest.list_services = "" (field 7)
    call = channel.stream_stream(REFLECTION)(iter([list_services, GARBAGE, list_services]), timeout=10)
    first = next(call)
    assert b"inference.GRPCInferenceService" in first  # type: ignore[operator]
    err = refused(lambda: next(call))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert err.details() == "the request is not a valid grpc.reflection.v1alpha.ServerReflectionRequest message"  # type: ignore[attr-defined]


def test_a_flood_of_unparsable_requests_logs_one_warning_per_method(committed: Server, channel: grpc.Channel) -> None:
    offset = committed.log_path.stat().st_size
    start = time.monotonic()
    for method in (V2 + "ModelInfer", HEALTH + "Check", ANALYZE):
        for _ in range(BAD_CALLS):
            assert unary(channel, method, GARBAGE).code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    for _ in range(BAD_CALLS // 10):
        assert streamed(channel, REFLECTION, [GARBAGE]).code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    windows = int((time.monotonic() - start) / 10) + 1  # one line per method per 10 s window, at most
    lines = log_since(committed, offset)
    assert_quiet(lines)
    for method in (V2 + "ModelInfer", HEALTH + "Check", ANALYZE, REFLECTION):
        warnings = [line for line in lines if line.get("method") == method]
        assert len(warnings) <= windows, warnings
        assert all(w["level"] == "warning" and "is not a valid" in w["reason"] for w in warnings)
    assert len(lines) <= 4 * windows, lines[:8]


# ---- Triton methods deepserve does not implement ---------------------------------------------------
UNSUPPORTED = [
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
]


def test_unsupported_methods_are_unimplemented_without_an_error_log(committed: Server, channel: grpc.Channel) -> None:
    offset = committed.log_path.stat().st_size
    for name in UNSUPPORTED:
        err = unary(channel, V2 + name, b"")
        assert err.code() is grpc.StatusCode.UNIMPLEMENTED, name  # type: ignore[attr-defined]
        assert err.details().startswith(f"{name} is not supported by deepserve; ")  # type: ignore[attr-defined]
    err = streamed(channel, V2 + "ModelStreamInfer", [b""])
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert "use ModelInfer" in err.details()  # type: ignore[attr-defined]
    for _ in range(BAD_CALLS):
        unary(channel, V2 + "CudaSharedMemoryStatus", b"")
    assert_quiet(log_since(committed, offset))


# ---- client strings echoed in errors ---------------------------------------------------------------
def digits_request(**fields: object) -> service_pb2.ModelInferRequest:
    image = np.zeros((1, 32, 32, 1), dtype=np.float32).tobytes()
    tensor = service_pb2.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 32, 32, 1])
    request = service_pb2.ModelInferRequest(model_name="digits_cnn", inputs=[tensor], raw_input_contents=[image])
    for name, value in fields.items():
        if name == "output":
            request.outputs.add(name=value)
        elif name == "input":
            request.inputs[0].name = value
        else:
            setattr(request, name, value)
    return request


@pytest.mark.parametrize(
    ("method", "request_message", "code", "start"),
    [
        (
            V2 + "ModelMetadata",
            service_pb2.ModelMetadataRequest(name=HUGE),
            "NOT_FOUND",
            "Request for unknown model 'nnnn",
        ),
        (
            V2 + "ModelConfig",
            service_pb2.ModelConfigRequest(name="digits_cnn", version=HUGE),
            "INVALID_ARGUMENT",
            "failed to get model version from specified version string 'nnnn",
        ),
        (
            V2 + "ModelConfig",
            service_pb2.ModelConfigRequest(name="digits_cnn", version="9" * (1 << 20)),
            "NOT_FOUND",
            "model 'digits_cnn' has no version '9999",
        ),
        (V2 + "ModelInfer", digits_request(model_name=HUGE), "NOT_FOUND", "Request for unknown model 'nnnn"),
        (
            V2 + "ModelInfer",
            digits_request(output=HUGE),
            "INVALID_ARGUMENT",
            "model 'digits_cnn' has no output named 'nnnn",
        ),
        (
            V2 + "ModelInfer",
            digits_request(input=HUGE),
            "INVALID_ARGUMENT",
            "model 'digits_cnn' has no input named 'nnnn",
        ),
        (ANALYZE, sa.AnalyzeRequest(texts=["fine"], model_name=HUGE), "NOT_FOUND", "Request for unknown model 'nnnn"),
    ],
)
def test_megabyte_strings_are_echoed_as_a_short_prefix(
    channel: grpc.Channel, method: str, request_message: object, code: str, start: str
) -> None:
    err = unary(channel, method, request_message.SerializeToString())  # type: ignore[attr-defined]
    assert err.code().name == code, err.details()  # type: ignore[attr-defined]
    assert err.details().startswith(start)  # type: ignore[attr-defined]
    assert "…(1048512 more characters)" in err.details()  # type: ignore[attr-defined]
    assert len(err.details()) < 400  # type: ignore[attr-defined]
