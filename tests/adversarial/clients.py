"""Requests a careless or hostile client sends, built with tritonclient's and deepserve's own stubs, and
ways to time and count them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.ops.servers import Server, metric

MAX_MESSAGE = 64 * 1024 * 1024
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]


def v2_request(model: str, *tensors: tuple[str, str, list[int], bytes]) -> service_pb2.ModelInferRequest:
    """ModelInfer with raw contents: each tensor as (name, datatype, shape, raw bytes)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def tokens(name: str, ids: np.ndarray) -> tuple[str, str, list[int], bytes]:
    ids = np.asarray(ids, dtype=np.int64)
    return (name, "INT64", list(ids.shape), ids.tobytes())


def digit_request(rows: int = 1) -> service_pb2.ModelInferRequest:
    image = np.zeros((rows, 32, 32, 1), np.float32)
    return v2_request("digits_cnn", ("image", "FP32", list(image.shape), image.tobytes()))


def v2_stub(channel: grpc.Channel) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(channel)


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """The status a call ends with (OK or the error's), and its message."""
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def timed(call: Callable[[], object]) -> tuple[float, grpc.StatusCode, str]:
    start = time.perf_counter()
    code, message = code_of(call)
    return time.perf_counter() - start, code, message


def requests_counted(server: Server, **labels: str) -> Counter[str]:
    """deepserve_requests_total by code, for the samples with `labels`."""
    samples = server.scrape()
    codes = {dict(ls).get("code", "") for (name, ls) in samples if name == "deepserve_requests_total"}
    return Counter({c: int(metric(samples, "deepserve_requests_total", code=c, **labels)) for c in codes if c})


def percentile(values: Iterable[float], q: float) -> float:
    return float(np.percentile(np.asarray(list(values)), q))
