"""No internals in what clients read: no server path, no raw ONNX Runtime / tokenizers / YAML / Pillow text.

One server on a repository with a model broken in each way that reaches a client (RepositoryIndex reasons,
UNAVAILABLE "failed to load", RepositoryModelLoad errors, task API errors), plus bad images and unsupported
parameters. Every message a client reads here is collected and scanned for the repository's path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from service.errors import InferenceError
from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import image_classifier_pb2_grpc as ic_grpc
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2_grpc as sa_grpc
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from service.grpc.errors import status_of
from tests.conftest import RunningServer, start_server
from tests.crafted_images import bmp, noisy_png, png_header
from tests.security.broken_models import BROKEN, broken_repository

LIBRARY_TEXT = [
    *("ONNXRuntimeError", "INVALID_PROTOBUF", "Protobuf parsing", "Got invalid dimensions", "Load model from"),
    *("while parsing", "while scanning", "expected ',' or ']'", '"<unicode string>"'),  # PyYAML
    *("Errno", "No such file or directory", "Traceback", "Exception"),  # OSError, Python
    *("cannot identify image file", "image file is truncated", "broken PNG", "Image size ("),  # Pillow
    *("could be decompression bomb", "Unsupported BMP compression"),  # Pillow
    *("expected value at line", "Error("),  # tokenizers (serde)
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return broken_repository(tmp_path_factory.mktemp("messages"))


@pytest.fixture(scope="module")
def server(root: Path) -> Iterator[RunningServer]:
    running = start_server(root, model_control_mode="explicit")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def seen() -> list[str]:
    """Every message a client read in this module; the last test scans them all."""
    return []


def refused(seen: list[str], call: Callable[[], object], code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() is code, info.value.details()
    seen.append(info.value.details())
    return info.value.details()


def v2(channel: grpc.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


# ---- load errors, wherever a client reads them ------------------------------------------------------------
def test_index_reasons_are_clean(channel: grpc.Channel, seen: list[str]) -> None:
    index = v2(channel).RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
    reasons = {m.name: (m.state, m.reason) for m in index.models}
    for name, problem in BROKEN.items():
        assert reasons[name] == ("UNAVAILABLE", f"model '{name}': {problem}") or problem in reasons[name][1], name
    seen += [reason for _, reason in reasons.values()]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unavailable_says_why_in_our_words(channel: grpc.Channel, seen: list[str], name: str) -> None:
    request = pb.ModelMetadataRequest(name=name)
    message = refused(seen, lambda: v2(channel).ModelMetadata(request, timeout=10), grpc.StatusCode.UNAVAILABLE)
    assert message.startswith(f"model '{name}' failed to load: model '{name}': ")
    assert BROKEN[name] in message


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_repository_model_load_says_why_in_our_words(channel: grpc.Channel, seen: list[str], name: str) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    message = refused(seen, lambda: v2(channel).RepositoryModelLoad(request, timeout=30), grpc.StatusCode.UNAVAILABLE)
    assert message.startswith(f"model '{name}': ") and BROKEN[name] in message


def test_task_assets_that_fail_fail_the_load_cleanly(channel: grpc.Channel, seen: list[str]) -> None:
    """Task assets load with the model: one that cannot be read fails the load, and every API says so alike."""
    request = sa.AnalyzeRequest(texts=["great"], model_name="bad_labels")
    analyze = sa_grpc.SentimentAnalyzerStub(channel).Analyze
    message = refused(seen, lambda: analyze(request, timeout=10), grpc.StatusCode.UNAVAILABLE)
    assert message == (
        "model 'bad_labels' failed to load: model 'bad_labels': cannot read 'labels.txt' (`labels`): "
        "it is not UTF-8 text (byte 0)"
    )
    assert not v2(channel).ModelReady(pb.ModelReadyRequest(name="bad_labels"), timeout=10).ready


# ---- bad images ---------------------------------------------------------------------------------------
UNREADABLE = "images[0] cannot be read: its header is damaged or uses an unsupported variant"
BOMB = (
    "images[0] is refused as a decompression bomb: its header declares far more pixels than allowed "
    "(limits.max_image_pixels)"
)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (noisy_png()[:200], "images[0] is truncated or corrupt (PNG data)"),
        (bmp(compression=9), UNREADABLE),
        (png_header(30000, 30000), BOMB),
        (b"GIF89a" + b"\xff" * 20, "images[0] is not a PNG, JPEG, BMP, GIF or WebP file"),
    ],
)
def test_image_errors_carry_no_pillow_text(channel: grpc.Channel, seen: list[str], image: bytes, expected: str) -> None:
    request = ic.ClassifyRequest(images=[image], model_name="quadrants")
    classify = ic_grpc.ImageClassifierStub(channel).Classify
    assert refused(seen, lambda: classify(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT) == expected


# ---- parameters -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "parameters",
    [
        {"config": pb.ModelRepositoryParameter(string_param='{"max_batch_size": 1}')},
        {"file:1/model.onnx": pb.ModelRepositoryParameter(bytes_param=b"\x00" * 1024)},
        {"config": pb.ModelRepositoryParameter(string_param="{}"), "file:config.yaml": pb.ModelRepositoryParameter()},
        {"anything": pb.ModelRepositoryParameter(bool_param=True)},
    ],
)
def test_load_parameters_are_refused(channel: grpc.Channel, seen: list[str], parameters: dict) -> None:
    request = pb.RepositoryModelLoadRequest(model_name="add_sub", parameters=parameters)
    load = v2(channel).RepositoryModelLoad
    message = refused(seen, lambda: load(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    names = ", ".join(repr(name) for name in sorted(parameters))
    assert message == (
        f"RepositoryModelLoad parameters are not supported (got {names}): deepserve loads a model only as it is in "
        "its repository; change the files there and load it again without parameters"
    )
    assert v2(channel).ModelReady(pb.ModelReadyRequest(name="add_sub"), timeout=10).ready


def test_many_load_parameters_are_named_in_short(channel: grpc.Channel, seen: list[str]) -> None:
    parameters = {f"file:{'x' * 200}{i}": pb.ModelRepositoryParameter() for i in range(50)}
    request = pb.RepositoryModelLoadRequest(model_name="add_sub", parameters=parameters)
    load = v2(channel).RepositoryModelLoad
    message = refused(seen, lambda: load(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert "and 45 more" in message and len(message) < 1000


@pytest.fixture(scope="module")
def triton(server: RunningServer) -> tc.InferenceServerClient:
    return tc.InferenceServerClient(server.address)


def test_tritonclient_load_with_an_override_is_refused(triton: tc.InferenceServerClient, seen: list[str]) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.load_model("add_sub", config='{"max_batch_size": 2}', files={"file:1/model.onnx": b"\x00"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert (
        "RepositoryModelLoad parameters are not supported (got 'config', 'file:1/model.onnx')" in info.value.message()
    )
    seen.append(info.value.message())
    triton.load_model("add_sub")  # without parameters: loads
    triton.unload_model("quadrants", unload_dependents=True)  # tritonclient always sends `unload_dependents`
    triton.load_model("quadrants")


def add_sub_inputs() -> list[tc.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = tc.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        inputs.append(tensor)
    return inputs


def test_tritonclient_infer_parameters_keep_working(triton: tc.InferenceServerClient) -> None:
    """Triton ignores request parameters it does not use; so does deepserve (tritonclient sends `priority` and
    `sequence_*` when asked, and anything in `parameters=`)."""
    result = triton.infer(
        "add_sub", add_sub_inputs(), priority=3, timeout=10_000_000, parameters={"custom": "x", "n": 2}
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2, np.float32))


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (dict(class_count=2), "output 'OUTPUT0': parameter 'classification' is not supported"),
        (dict(), None),
    ],
)
def test_tensor_parameters_that_change_the_answer_are_refused(
    triton: tc.InferenceServerClient, seen: list[str], output: dict, expected: str | None
) -> None:
    outputs = [tc.InferRequestedOutput("OUTPUT0", **output)]
    if expected is None:
        assert triton.infer("add_sub", add_sub_inputs(), outputs=outputs).as_numpy("OUTPUT0") is not None
        return
    with pytest.raises(InferenceServerException) as info:
        triton.infer("add_sub", add_sub_inputs(), outputs=outputs)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and expected in info.value.message()
    seen.append(info.value.message())


def test_shared_memory_inputs_are_refused(channel: grpc.Channel, seen: list[str]) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype="FP32", shape=[1, 4])
    tensor.parameters["shared_memory_region"].string_param = "region"
    request = pb.ModelInferRequest(model_name="add_sub", inputs=[tensor])
    message = refused(seen, lambda: v2(channel).ModelInfer(request, timeout=10), grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith(
        "input 'INPUT0': parameter 'shared_memory_region' is not supported: deepserve has no shared"
    )


def test_not_found_names_no_path(channel: grpc.Channel, seen: list[str]) -> None:
    for call in (
        lambda: v2(channel).RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="not_here"), timeout=10),
        lambda: v2(channel).RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="not_here"), timeout=10),
        lambda: v2(channel).ModelMetadata(pb.ModelMetadataRequest(name="not_here"), timeout=10),
    ):
        refused(seen, call, grpc.StatusCode.NOT_FOUND)


# ---- INTERNAL: a generic message and the request id; the details only in the log ---------------------------
def test_internal_errors_carry_the_request_id_and_no_details(seen: list[str]) -> None:
    model_failed = InferenceError("model 'm' failed to run this request; the error was logged")
    assert status_of(model_failed, "req-7") == (grpc.StatusCode.INTERNAL, f"{model_failed.message} (request id req-7)")
    unexpected = OSError(2, "No such file or directory", "/srv/models/m/1/model.onnx")
    code, message = status_of(unexpected, "req-8")
    assert (code, message) == (
        grpc.StatusCode.INTERNAL,
        "internal error; it was logged on the server (request id req-8)",
    )
    code, message = status_of(RuntimeError("boom"), "x" * 100_000)
    assert message == f"internal error; it was logged on the server (request id {'x' * 64}…)"
    seen.append(status_of(unexpected)[1])


# ---- and the scan -------------------------------------------------------------------------------------------
def test_no_message_names_a_server_path_or_quotes_a_library(root: Path, seen: list[str]) -> None:
    assert len(seen) >= 2 * len(BROKEN) + 10, "run the whole module: the scan reads what the other tests saw"
    paths = {str(root), str(root.resolve()), str(root.parent), str(root.parent.resolve())}
    for message in seen:
        assert not [p for p in paths if p in message], message
        assert not [t for t in LIBRARY_TEXT if t in message], message
        assert "top_secret" not in message
