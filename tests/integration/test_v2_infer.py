"""ModelInfer through tritonclient (raw contents) and our own stubs (typed contents): outputs equal
onnxruntime run directly on the same model file, for FP32, INT64, BYTES and FP16."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc

from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc


def reference(repo: Path, model: str, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime on the model file itself (string tensors fed as `str`, as onnxruntime expects)."""
    session = ort.InferenceSession(str(repo / model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {k: np.vectorize(bytes.decode, otypes=[object])(v) if v.dtype == object else v for k, v in feed.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def tc_input(name: str, arr: np.ndarray, datatype: str) -> tc.InferInput:
    tensor = tc.InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def text(*items: str) -> np.ndarray:
    arr = np.empty((len(items), 1), dtype=object)
    arr[:, 0] = [s.encode() for s in items]
    return arr


RNG = np.random.default_rng(7)
CASES = {
    "add_sub": {
        "INPUT0": ("FP32", RNG.standard_normal((3, 4)).astype(np.float32)),
        "INPUT1": ("FP32", RNG.standard_normal((3, 4)).astype(np.float32)),
    },
    "token_sum": {"token_ids": ("INT64", RNG.integers(-(2**40), 2**40, (2, 5)))},
    "bytes_identity": {"text": ("BYTES", text("hello", "naïve ☃", ""))},
    "fp16_double": {"x": ("FP16", RNG.standard_normal((4, 3)).astype(np.float16))},
}


@pytest.mark.parametrize("model", sorted(CASES))
def test_raw_infer_equals_onnxruntime(client: tc.InferenceServerClient, model_repo: Path, model: str) -> None:
    case = CASES[model]
    result = client.infer(model, [tc_input(n, arr, dt) for n, (dt, arr) in case.items()])
    expected = reference(model_repo, model, {n: arr for n, (_, arr) in case.items()})
    response = result.get_response()
    assert (response.model_name, response.model_version) == (model, "1")
    assert [o.name for o in response.outputs] == list(expected)
    for name, want in expected.items():
        got = result.as_numpy(name)
        if want.dtype == object:
            assert [g.decode() for g in got.ravel()] == list(want.ravel())
        else:
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def typed_request(model: str, **inputs: tuple[str, np.ndarray]) -> pb.ModelInferRequest:
    fields = {"FP32": "fp32_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}
    request = pb.ModelInferRequest(model_name=model)
    for name, (datatype, arr) in inputs.items():
        tensor = request.inputs.add(name=name, datatype=datatype, shape=arr.shape)
        getattr(tensor.contents, fields[datatype]).extend(arr.ravel().tolist())
    return request


def raw_outputs(response: pb.ModelInferResponse) -> dict[str, tuple[str, list[int], bytes]]:
    pairs = zip(response.outputs, response.raw_output_contents, strict=True)
    return {o.name: (o.datatype, list(o.shape), raw) for o, raw in pairs}


@pytest.mark.parametrize("model", ["add_sub", "token_sum", "bytes_identity"])
def test_typed_contents_give_the_same_answer_as_raw(
    stub: pb_grpc.GRPCInferenceServiceStub, model_repo: Path, model: str
) -> None:
    case = CASES[model]
    response = stub.ModelInfer(typed_request(model, **case), timeout=10)
    expected = reference(model_repo, model, {n: arr for n, (_, arr) in case.items()})
    outputs = raw_outputs(response)
    assert list(outputs) == list(expected)
    for name, want in expected.items():
        datatype, shape, raw = outputs[name]
        assert shape == list(want.shape)
        if datatype == "BYTES":
            framed = b"".join(len(s.encode()).to_bytes(4, "little") + s.encode() for s in want.ravel())
            assert raw == framed
        else:
            np.testing.assert_array_equal(np.frombuffer(raw, dtype=want.dtype).reshape(want.shape), want)


def test_requested_outputs_only(client: tc.InferenceServerClient) -> None:
    case = CASES["add_sub"]
    result = client.infer(
        "add_sub",
        [tc_input(n, arr, dt) for n, (dt, arr) in case.items()],
        outputs=[tc.InferRequestedOutput("OUTPUT1")],
    )
    assert [o.name for o in result.get_response().outputs] == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), case["INPUT0"][1] - case["INPUT1"][1])


def test_requested_outputs_keep_request_order(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    request = typed_request("token_sum", token_ids=("INT64", np.array([[1, 2, 3]])))
    request.outputs.add(name="doubled")
    request.outputs.add(name="total")
    outputs = raw_outputs(stub.ModelInfer(request, timeout=10))
    assert list(outputs) == ["doubled", "total"]
    assert np.frombuffer(outputs["total"][2], dtype=np.int64).tolist() == [6]


def test_request_id_and_version_echoed(
    client: tc.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    case = CASES["fp16_double"]
    result = client.infer("fp16_double", [tc_input("x", case["x"][1], "FP16")], model_version="1", request_id="req-42")
    assert (result.get_response().id, result.get_response().model_version) == ("req-42", "1")
    request = typed_request("add_sub", INPUT0=CASES["add_sub"]["INPUT0"], INPUT1=CASES["add_sub"]["INPUT1"])
    request.id = "typed-7"
    assert stub.ModelInfer(request, timeout=10).id == "typed-7"


def test_a_request_may_carry_a_full_batch(client: tc.InferenceServerClient) -> None:
    a = np.arange(32, dtype=np.float32).reshape(8, 4)
    result = client.infer("add_sub", [tc_input("INPUT0", a, "FP32"), tc_input("INPUT1", a, "FP32")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def token_request(ids: list[int], request_id: str) -> pb.ModelInferRequest:
    request = typed_request("token_sum", token_ids=("INT64", np.array([ids], dtype=np.int64)))
    request.id = request_id
    return request


def decode_token_sum(response: pb.ModelInferResponse) -> tuple[list[int], list[int]]:
    outputs = raw_outputs(response)
    total = np.frombuffer(outputs["total"][2], dtype=np.int64).reshape(outputs["total"][1])
    doubled = np.frombuffer(outputs["doubled"][2], dtype=np.int64).reshape(outputs["doubled"][1])
    return total.ravel().tolist(), doubled.ravel().tolist()


def test_variable_length_requests_padded_together_match_alone(
    client: tc.InferenceServerClient, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """Requests of different lengths share batches (padded with 0, outputs cut back to each one's length)."""
    sequences = [list(range(1, n + 1)) for n in range(1, 13)] + [[5] * 7, [-3, 9]]
    alone = {
        str(i): decode_token_sum(stub.ModelInfer(token_request(s, str(i)), timeout=10)) for i, s in enumerate(sequences)
    }
    for i, seq in enumerate(sequences):
        assert alone[str(i)] == ([sum(seq)], [2 * t for t in seq])
    before = client.get_inference_statistics("token_sum").model_stats[0]
    for _ in range(3):
        futures = [stub.ModelInfer.future(token_request(s, str(i)), timeout=10) for i, s in enumerate(sequences)]
        for future in futures:
            response = future.result()
            assert decode_token_sum(response) == alone[response.id]
    after = client.get_inference_statistics("token_sum").model_stats[0]
    runs = after.execution_count - before.execution_count
    assert after.inference_count - before.inference_count == 3 * len(sequences)
    assert runs < 3 * len(sequences), "concurrent requests never shared a batch"


def test_concurrent_requests_each_get_their_own_rows(client: tc.InferenceServerClient) -> None:
    def one(i: int) -> None:
        a = np.full((1 + i % 3, 4), i, dtype=np.float32)
        b = np.ones_like(a)
        result = client.infer("add_sub", [tc_input("INPUT0", a, "FP32"), tc_input("INPUT1", b, "FP32")])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + 1)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - 1)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(32)))
