"""Bad requests get the status a client can act on and a message naming the problem; the server stays up."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import RunningServer, start_server
from tests.tiny_models import make_repository

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


def raw_request(model: str, *inputs: tuple[str, str, list[int], bytes], version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape, raw in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def fp32(name: str, *shape: int) -> tuple[str, str, list[int], bytes]:
    return name, "FP32", list(shape), np.ones(shape, dtype=np.float32).tobytes()


def add_sub(batch: int = 2, version: str = "") -> pb.ModelInferRequest:
    return raw_request("add_sub", fp32("INPUT0", batch, 4), fp32("INPUT1", batch, 4), version=version)


def with_outputs(request: pb.ModelInferRequest, *names: str) -> pb.ModelInferRequest:
    for name in names:
        request.outputs.add(name=name)
    return request


def bytes_request(*items: bytes) -> pb.ModelInferRequest:
    raw = b"".join(len(i).to_bytes(4, "little") + i for i in items)
    return raw_request("bytes_identity", ("text", "BYTES", [len(items), 1], raw))


def typed_fp32(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="add_sub")
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=shape).contents.fp32_contents.extend(values)
    return request


BAD_REQUESTS: dict[str, tuple[Callable[[], pb.ModelInferRequest], grpc.StatusCode, str]] = {
    "unknown model": (
        lambda: raw_request("nope", fp32("INPUT0", 1, 4)),
        NOT_FOUND,
        "unknown model 'nope'; available models: ['add_sub', 'bytes_identity', 'fp16_double', 'token_sum']",
    ),
    "unknown version": (lambda: add_sub(version="7"), NOT_FOUND, "model 'add_sub' has no version '7' loaded"),
    "non-numeric version": (
        lambda: add_sub(version="latest"),
        INVALID,
        "failed to get model version from specified version string 'latest': versions are positive integers",
    ),
    "path traversal": (
        lambda: raw_request("../add_sub", fp32("INPUT0", 1, 4)),
        NOT_FOUND,
        "unknown model '../add_sub'",
    ),
    "wrong datatype": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), ("INPUT1", "FP64", [2, 4], bytes(64))),
        INVALID,
        "input 'INPUT1' of model 'add_sub' must be FP32, the request sent FP64",
    ),
    "unknown datatype": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), ("INPUT1", "FLOAT", [2, 4], bytes(32))),
        INVALID,
        "input 'INPUT1': unknown datatype 'FLOAT'",
    ),
    "wrong rank": (
        lambda: raw_request("add_sub", fp32("INPUT0", 4), fp32("INPUT1", 4)),
        INVALID,
        "input 'INPUT0' of model 'add_sub' must have shape [-1, 4] (-1: any size), the request sent [4]",
    ),
    "wrong shape": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 5), fp32("INPUT1", 2, 5)),
        INVALID,
        "must have shape [-1, 4] (-1: any size), the request sent [2, 5]",
    ),
    "raw size not matching shape": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), ("INPUT1", "FP32", [2, 4], bytes(28))),
        INVALID,
        "input 'INPUT1': raw data is 28 bytes but shape [2, 4] of FP32 needs 32",
    ),
    "typed count not matching shape": (
        lambda: typed_fp32([1.0, 2.0, 3.0], [1, 4]),
        INVALID,
        "input 'INPUT0': 3 values in contents.fp32_contents but shape [1, 4] needs 4",
    ),
    "batch above max_batch_size": (
        lambda: add_sub(batch=9),
        INVALID,
        "batch size 9 exceeds max_batch_size 8 of model 'add_sub'; split the request",
    ),
    "inputs disagree on batch": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), fp32("INPUT1", 3, 4)),
        INVALID,
        "all inputs must have the same batch size",
    ),
    "missing input": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4)),
        INVALID,
        "model 'add_sub' needs input 'INPUT1', which the request does not carry",
    ),
    "unknown input": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), fp32("INPUT1", 2, 4), fp32("INPUT2", 2, 4)),
        INVALID,
        "model 'add_sub' has no input named 'INPUT2'; its inputs are ['INPUT0', 'INPUT1']",
    ),
    "input twice": (
        lambda: raw_request("add_sub", fp32("INPUT0", 2, 4), fp32("INPUT0", 2, 4)),
        INVALID,
        "input 'INPUT0' appears twice in the request",
    ),
    "unknown output requested": (
        lambda: with_outputs(add_sub(), "OUTPUT0", "OUTPUT9"),
        INVALID,
        "model 'add_sub' has no output named 'OUTPUT9'; its outputs are ['OUTPUT0', 'OUTPUT1']",
    ),
    "truncated BYTES element": (
        lambda: raw_request("bytes_identity", ("text", "BYTES", [1, 1], (9).to_bytes(4, "little") + b"abc")),
        INVALID,
        "input 'text': BYTES element 0 claims 9 bytes but the data ends first",
    ),
    "BYTES not UTF-8": (
        lambda: bytes_request(b"ok", b"\xff\xfe"),
        INVALID,
        "input 'text' of model 'bytes_identity': element 1 is not valid UTF-8",
    ),
    "FP16 in typed contents": (
        lambda: _typed_fp16(),
        INVALID,
        "input 'x': FP16 data must be sent in raw_input_contents",
    ),
}


def _typed_fp16() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="fp16_double")
    request.inputs.add(name="x", datatype="FP16", shape=[1, 3]).contents.fp32_contents.extend([1, 2, 3])
    return request


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_status_and_message(stub: pb_grpc.GRPCInferenceServiceStub, case: str) -> None:
    make, status, fragment = BAD_REQUESTS[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(make(), timeout=10)
    assert info.value.code() is status
    assert fragment in info.value.details()
    # the server is still up and serves the next request
    response = stub.ModelInfer(add_sub(), timeout=10)
    assert np.frombuffer(response.raw_output_contents[0], dtype=np.float32).tolist() == [2.0] * 8


def test_errors_through_tritonclient(server: RunningServer) -> None:
    client = tc.InferenceServerClient(server.address)
    x = tc.InferInput("token_ids", [17, 2], "INT64")
    x.set_data_from_numpy(np.ones((17, 2), dtype=np.int64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("token_sum", [x])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "batch size 17 exceeds max_batch_size 16 of model 'token_sum'" in info.value.message()
    y = tc.InferInput("token_ids", [2, 2], "INT32")
    y.set_data_from_numpy(np.ones((2, 2), dtype=np.int32))
    with pytest.raises(InferenceServerException, match="must be INT64, the request sent INT32"):
        client.infer("token_sum", [y])
    assert client.is_server_live() and client.is_model_ready("token_sum")


def test_oversized_message_is_resource_exhausted(tmp_path: Path) -> None:
    running = start_server(make_repository(tmp_path, names=("add_sub",)), max_message_bytes=16 * 1024)
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            big = raw_request("add_sub", fp32("INPUT0", 8, 4), ("INPUT1", "FP32", [8, 4], bytes(32 * 1024)))
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(big, timeout=10)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "larger than max" in info.value.details()
            assert "16384" in info.value.details()
            assert len(stub.ModelInfer(add_sub(), timeout=10).outputs) == 2
    finally:
        running.stop()


@pytest.fixture
def fenced_repo(tmp_path: Path) -> Path:
    """A repository with one model, next to model folders outside it that must never be read."""
    make_repository(tmp_path / "outside_ok", names=("add_sub",))
    bad = tmp_path / "outside_bad"
    bad.mkdir()
    (bad / "config.yaml").write_text("bogus_outside_key: 1\n")
    return make_repository(tmp_path / "repo", names=("token_sum",))


@pytest.mark.parametrize("name", ["../outside_ok/add_sub", "../outside_bad", "..", "token_sum/../../outside_bad"])
def test_path_traversal_is_not_found_and_reads_nothing_outside(fenced_repo: Path, name: str) -> None:
    running = start_server(fenced_repo, model_control_mode="explicit")
    try:
        client = tc.InferenceServerClient(running.address)
        for call in (client.load_model, client.unload_model, client.get_model_metadata, client.get_model_config):
            with pytest.raises(InferenceServerException) as info:
                call(name)
            assert info.value.status() == "StatusCode.NOT_FOUND", call
            assert "bogus_outside_key" not in info.value.message()
        assert not client.is_model_ready(name)
        x = tc.InferInput("INPUT0", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        with pytest.raises(InferenceServerException) as info:
            client.infer(name, [x])
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert [m.name for m in client.get_model_repository_index().models] == ["token_sum"]
        assert [p.name for p in running.app.registry.loaded()] == ["token_sum"]
        assert client.is_model_ready("token_sum")
    finally:
        running.stop()


def test_load_message_for_traversal_names_the_rule(fenced_repo: Path) -> None:
    running = start_server(fenced_repo, model_control_mode="explicit")
    try:
        with pytest.raises(InferenceServerException) as info:
            tc.InferenceServerClient(running.address).load_model("../outside_bad")
        assert "'../outside_bad' is not a valid model name" in info.value.message()
        assert "no path separators" in info.value.message()
    finally:
        running.stop()
