"""The checks of Triton's example clients for its `simple*` models (client repository, src/python/examples:
simple_grpc_infer_client, simple_grpc_string_infer_client, grpc_explicit_byte_content_client,
grpc_explicit_int_content_client, grpc_explicit_int8_content_client), against a real server on the models of
tests/triton_models.py. The clients' code stays theirs; these tests make the same calls and the same checks.

`simple_string` has Triton's config, without a warm-up section: the default warm-up on empty strings fails
on its Cast, and the model must load and serve anyway.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor

from tests.conftest import RunningServer
from tests.integration.conftest import serving
from tests.triton_models import write_triton_examples

NUMBERS = np.arange(16, dtype=np.int32).reshape(1, 16)
ONES = np.ones((1, 16), dtype=np.int32)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serving(write_triton_examples(tmp_path_factory.mktemp("triton_examples")))


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def tensor(name: str, data: np.ndarray, datatype: str) -> tc.InferInput:
    infer_input = tc.InferInput(name, list(data.shape), datatype)
    infer_input.set_data_from_numpy(data)
    return infer_input


def as_text(numbers: np.ndarray) -> np.ndarray:
    return np.array([str(n).encode("utf-8") for n in numbers.flat], dtype=np.object_).reshape(numbers.shape)


def test_every_example_model_is_ready(client: tc.InferenceServerClient) -> None:
    for name in ("simple", "simple_int8", "simple_string", "simple_identity"):
        assert client.is_model_ready(name), name


# ---- simple_grpc_infer_client.py ----------------------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_infer_with_and_without_requested_outputs(
    client: tc.InferenceServerClient, compression: str | None
) -> None:
    inputs = [tensor("INPUT0", NUMBERS, "INT32"), tensor("INPUT1", ONES, "INT32")]
    outputs = [tc.InferRequestedOutput("OUTPUT0"), tc.InferRequestedOutput("OUTPUT1")]
    for requested in (outputs, None):
        results = client.infer(
            "simple",
            inputs,
            outputs=requested,
            client_timeout=10,
            headers={"test": "1"},
            compression_algorithm=compression,
        )
        np.testing.assert_array_equal(results.as_numpy("OUTPUT0"), NUMBERS + ONES)
        np.testing.assert_array_equal(results.as_numpy("OUTPUT1"), NUMBERS - ONES)
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1


# ---- simple_grpc_string_infer_client.py ---------------------------------------------------------------------
def test_simple_string_adds_and_subtracts_numbers_written_as_text(client: tc.InferenceServerClient) -> None:
    inputs = [tensor("INPUT0", as_text(NUMBERS), "BYTES"), tensor("INPUT1", as_text(ONES), "BYTES")]
    outputs = [tc.InferRequestedOutput("OUTPUT0"), tc.InferRequestedOutput("OUTPUT1")]
    results = client.infer("simple_string", inputs, outputs=outputs)
    assert [int(s) for s in results.as_numpy("OUTPUT0")[0]] == list(range(1, 17))
    assert [int(s) for s in results.as_numpy("OUTPUT1")[0]] == list(range(-1, 15))


@pytest.mark.parametrize(
    "data",
    [
        np.array([b"he\x00llo"] * 16, dtype=np.object_).reshape(1, 16),
        np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape(1, 16),
    ],
    ids=["embedded-null", "binary-bytes_"],
)
def test_simple_identity_echoes_strings_with_null_characters(
    client: tc.InferenceServerClient, data: np.ndarray
) -> None:
    results = client.infer(
        "simple_identity", [tensor("INPUT0", data, "BYTES")], outputs=[tc.InferRequestedOutput("OUTPUT0")]
    )
    echoed = results.as_numpy("OUTPUT0")
    if data.dtype == np.object_:
        assert np.array_equal(data, echoed)
    else:
        assert np.array_equal(data, np.char.encode(echoed.astype(str)))


# ---- grpc_explicit_*_content_client.py ----------------------------------------------------------------------
def explicit_request(model: str, datatype: str, field: str, first: list, second: list) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, model_version="")
    for name, values in (("INPUT0", first), ("INPUT1", second)):
        infer_input = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype=datatype, shape=[1, 16])
        getattr(infer_input.contents, field).extend(values)
        request.inputs.append(infer_input)
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.append(service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name))
    return request


def raw_outputs(response: service_pb2.ModelInferResponse, decode: object) -> list[np.ndarray]:
    return [
        np.resize(decode(raw), list(output.shape))  # type: ignore[operator]
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    ]


def test_explicit_byte_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = explicit_request(
        "simple_string", "BYTES", "bytes_contents", [str(i).encode("utf-8") for i in range(16)], [b"1"] * 16
    )
    total, difference = raw_outputs(stub.ModelInfer(request), deserialize_bytes_tensor)
    assert [int(s) for s in total[0]] == [i + 1 for i in range(16)]
    assert [int(s) for s in difference[0]] == [i - 1 for i in range(16)]


@pytest.mark.parametrize(
    ("model", "datatype", "dtype"), [("simple", "INT32", np.int32), ("simple_int8", "INT8", np.int8)]
)
def test_explicit_int_contents(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str, datatype: str, dtype: type
) -> None:
    request = explicit_request(model, datatype, "int_contents", list(range(16)), [1] * 16)
    total, difference = raw_outputs(stub.ModelInfer(request), lambda raw: np.frombuffer(raw, dtype=dtype))
    assert total[0].tolist() == [i + 1 for i in range(16)]
    assert difference[0].tolist() == [i - 1 for i in range(16)]


def test_raw_and_typed_contents_together_are_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_explicit_int_content_client's last step, with the message it checks for."""
    request = explicit_request("simple", "INT32", "int_contents", list(range(16)), [1] * 16)
    request.raw_input_contents.append(np.arange(8).tobytes())
    del request.inputs[0].contents.int_contents[:8]
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'" in (
        info.value.details() or ""
    )


def test_a_version_that_is_not_a_number_is_refused(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_explicit_int8_content_client's last step, with the message it checks for."""
    request = explicit_request("simple_int8", "INT8", "int_contents", list(range(16)), [1] * 16)
    request.model_version = "wrong_specification"
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "failed to get model version from specified version string 'wrong_specification'" in (
        info.value.details() or ""
    )
