"""Protobuf ⇄ arrays for the Open Inference Protocol: typed and raw contents, BYTES framing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.grpc import convert
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.types import InferResponse
from service.validation import RequestLimits

LIMITS = RequestLimits(
    model="m",
    max_batch_size=0,
    max_elements={"x": 1000},
    max_variable_dim=None,
    variable_axes={},
    value_ranges={},
    same_shape={},
)


def framed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def test_bytes_framing_round_trips() -> None:
    arr = np.empty((2, 2), dtype=object)
    arr[:] = [[b"", b"a"], ["é".encode(), b"\x00\xff"]]
    raw = convert.encode_bytes(arr)
    assert raw == framed(b"", b"a", "é".encode(), b"\x00\xff")
    assert convert.decode_bytes(raw, 4, "t").tolist() == [b"", b"a", "é".encode(), b"\x00\xff"]


def test_str_elements_are_encoded_as_utf8() -> None:
    assert convert.encode_bytes(np.array(["hé"], dtype=object)) == framed("hé".encode())


@pytest.mark.parametrize(
    ("raw", "count", "fragment"),
    [
        (framed(b"ab"), 2, "raw BYTES data of 6 bytes cannot hold 2 elements"),
        (framed(b"ab") + b"\x00\x00", 2, "BYTES element 1 claims 0 bytes but|bytes left over|ends after 1 of 2"),
        (framed(b"ab", b"") + b"\x00", 3, "raw BYTES data of 11 bytes cannot hold 3 elements"),
        (struct.pack("<I", 10) + b"abc", 1, "BYTES element 0 claims 10 bytes but the data ends first"),
        (framed(b"a") + b"zz", 1, "2 bytes left over after 1 BYTES elements"),
    ],
)
def test_malformed_bytes_named(raw: bytes, count: int, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        convert.decode_bytes(raw, count, "t")


def request(datatype: str, shape: list[int]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    req.inputs.add(name="x", datatype=datatype, shape=shape)
    req.outputs.add(name="y")
    return req


def test_typed_and_raw_contents_decode_to_the_same_array() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    typed = request("FP32", [2, 3])
    typed.inputs[0].contents.fp32_contents.extend(values.ravel().tolist())
    raw = request("FP32", [2, 3])
    raw.raw_input_contents.append(values.tobytes())
    for req in (typed, raw):
        decoded = convert.decode_infer_request(req, None, LIMITS)
        np.testing.assert_array_equal(decoded.inputs["x"], values)
        assert decoded.inputs["x"].dtype == np.float32
        assert (decoded.model, decoded.version, decoded.id, decoded.outputs) == ("m", "2", "r1", ("y",))
        assert decoded.deadline is None


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (request("FP8", [1]), "input 'x': unknown datatype 'FP8'"),
        (request("FP16", [1]), "input 'x': FP16 data must be sent in raw_input_contents"),
        (request("FP32", [2]), "input 'x': 0 values in contents.fp32_contents but shape [2] needs 2"),
    ],
)
def test_bad_requests_named(req: pb.ModelInferRequest, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        convert.decode_infer_request(req, None, LIMITS)


@pytest.mark.parametrize(
    ("datatype", "shape", "fragment"),
    [
        ("BYTES", [2**30], r"declares shape \[1073741824\] \(1073741824 elements\); this model accepts at most 1000"),
        ("FP32", [2**31, 2**31], "accepts at most 1000 elements per input"),
        ("FP32", [1] * 17, "declares 17 dims; at most 16"),
        ("FP32", [2, -1], "shape dims must be non-negative"),
    ],
)
def test_declared_shapes_are_checked_against_the_limits_before_anything_is_allocated(
    datatype: str, shape: list[int], fragment: str
) -> None:
    req = request(datatype, shape)
    req.raw_input_contents.append(b"")  # a 37-byte request that once made the server allocate by the declared count
    with pytest.raises(InvalidInputError, match=fragment):
        convert.decode_infer_request(req, None, LIMITS)


def test_bytes_count_is_checked_against_the_payload_before_allocating() -> None:
    req = request("BYTES", [999])
    req.raw_input_contents.append(framed(b"a"))
    with pytest.raises(InvalidInputError, match="raw BYTES data of 5 bytes cannot hold 999 elements"):
        convert.decode_infer_request(req, None, LIMITS)


def test_unknown_input_is_refused_before_decoding() -> None:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="z" * 100_000, datatype="FP32", shape=[2**40])
    with pytest.raises(
        InvalidInputError, match=r"model .m. has no input named 'z+'…\(99936 more characters\); its inputs are \['x'\]"
    ):
        convert.decode_infer_request(req, None, LIMITS)


@pytest.mark.parametrize(
    ("datatype", "field", "values", "fragment"),
    [
        (
            "INT8",
            "int_contents",
            [1, 1000],
            "INT8 values must be between -128 and 127, contents.int_contents holds 1000",
        ),
        ("INT8", "int_contents", [-129], "holds -129"),
        ("UINT8", "uint_contents", [300], "UINT8 values must be between 0 and 255, contents.uint_contents holds 300"),
        ("INT16", "int_contents", [70000], "INT16 values must be between -32768 and 32767"),
        ("UINT16", "uint_contents", [65536], "holds 65536"),
    ],
)
def test_typed_values_out_of_the_datatype_range_are_invalid(
    datatype: str, field: str, values: list[int], fragment: str
) -> None:
    req = request(datatype, [len(values)])
    getattr(req.inputs[0].contents, field).extend(values)
    with pytest.raises(InvalidInputError, match=fragment):
        convert.decode_infer_request(req, None, LIMITS)


def test_typed_values_in_range_keep_their_datatype() -> None:
    req = request("INT8", [3])
    req.inputs[0].contents.int_contents.extend([-128, 0, 127])
    arr = convert.decode_infer_request(req, None, LIMITS).inputs["x"]
    assert arr.dtype == np.int8 and arr.tolist() == [-128, 0, 127]


def test_raw_size_mismatch_named() -> None:
    req = request("INT64", [2, 2])
    req.raw_input_contents.append(b"\x00" * 24)
    with pytest.raises(InvalidInputError, match=r"raw data is 24 bytes but shape \[2, 2\] of INT64 needs 32"):
        convert.decode_infer_request(req, None, LIMITS)


def test_raw_contents_count_must_match_inputs() -> None:
    req = request("FP32", [1])
    req.raw_input_contents.extend([b"\x00" * 4, b"\x00" * 4])
    with pytest.raises(InvalidInputError, match="2 raw_input_contents for 1 inputs"):
        convert.decode_infer_request(req, None, LIMITS)


def test_timeout_parameter_sets_a_deadline() -> None:
    req = request("FP32", [1])
    req.inputs[0].contents.fp32_contents.append(1.0)
    req.parameters["timeout"].int64_param = 250_000
    assert convert.decode_infer_request(req, None, LIMITS).deadline is not None
    req.parameters["timeout"].string_param = "soon"
    with pytest.raises(InvalidInputError, match="parameter 'timeout' must be a positive integer"):
        convert.decode_infer_request(req, None, LIMITS)


def test_response_is_raw_with_datatypes() -> None:
    text = np.array([[b"ok"]], dtype=object)
    out = pb.ModelInferResponse.FromString(
        convert.serialize_infer_response(
            InferResponse("m", "1", {"a": np.ones((1, 2), dtype=np.float16), "t": text}, "id-9")
        )
    )
    assert (out.model_name, out.model_version, out.id) == ("m", "1", "id-9")
    assert [(o.name, o.datatype, list(o.shape)) for o in out.outputs] == [("a", "FP16", [1, 2]), ("t", "BYTES", [1, 1])]
    assert out.raw_output_contents[0] == np.ones((1, 2), dtype=np.float16).tobytes()
    assert out.raw_output_contents[1] == framed(b"ok")


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_384, 2**21 + 3])
def test_serialized_response_is_what_protobuf_writes(size: int) -> None:
    """Raw contents appended by hand parse back exactly; the lengths cover one- to four-byte varints."""
    values = np.arange(size, dtype=np.uint8)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    data = convert.serialize_infer_response(InferResponse("m", "7", {"a": values, "b": strided}, "x"))
    reference = pb.ModelInferResponse(model_name="m", model_version="7", id="x")
    reference.outputs.add(name="a", datatype="UINT8", shape=[size])
    reference.outputs.add(name="b", datatype="FP32", shape=[3, 2])
    reference.raw_output_contents.extend([values.tobytes(), strided.tobytes()])
    assert pb.ModelInferResponse.FromString(data) == reference


@pytest.mark.parametrize("ident", ["", "x", "é-ünïcode", "r" * 200])
def test_response_ids_of_any_length_parse_back(ident: str) -> None:
    """The id is appended to a cached head: empty, non-ASCII, and long enough for a two-byte length."""
    data = convert.serialize_infer_response(InferResponse("m", "1", {"a": np.ones(3, np.float32)}, ident))
    out = pb.ModelInferResponse.FromString(data)
    assert out.id == ident
    assert (out.model_name, out.model_version, [o.name for o in out.outputs]) == ("m", "1", ["a"])


def test_cached_heads_never_mix_models_versions_or_shapes() -> None:
    seen = set()
    for model, version, rows in [("m", "1", 1), ("m", "2", 1), ("n", "1", 1), ("m", "1", 2), ("m", "1", 1)]:
        arr = np.zeros((rows, 2), np.float32)
        out = pb.ModelInferResponse.FromString(
            convert.serialize_infer_response(InferResponse(model, version, {"p": arr}))
        )
        assert (out.model_name, out.model_version, list(out.outputs[0].shape)) == (model, version, [rows, 2])
        seen.add((model, version, rows))
    assert len(seen) == 4
