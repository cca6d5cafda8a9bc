"""/metrics, scraped over HTTP: request durations and counts by status code follow the requests made."""

from __future__ import annotations

import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import RunningServer

Labels = dict[str, str]
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def scrape(server: RunningServer) -> dict[str, list[tuple[str, Labels, float]]]:
    """Metric family name → its samples (name, labels, value)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def value(families: dict, sample: str, **labels: str) -> float:
    """Sum of the samples named `sample` whose labels include `labels` (0 when there are none yet)."""
    family = next((sample.removesuffix(s) for s in SUFFIXES if sample.endswith(s)), sample)
    return sum(v for name, got, v in families.get(family, []) if name == sample and labels.items() <= got.items())


def add_sub(batch: int = 1, width: int = 4, model: str = "add_sub") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="FP32", shape=[batch, width])
        request.raw_input_contents.append(np.ones((batch, width), dtype=np.float32).tobytes())
    return request


def test_request_duration_count_grows_by_exactly_n(
    server: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    labels = {"model": "add_sub", "version": "1", "api": "v2"}
    before = scrape(server)
    n = 7
    for i in range(n):
        stub.ModelInfer(add_sub(batch=1 + i % 3), timeout=10)
    after = scrape(server)
    duration = "deepserve_request_duration_seconds"
    assert value(after, f"{duration}_count", **labels) - value(before, f"{duration}_count", **labels) == n
    assert value(after, f"{duration}_sum", **labels) > value(before, f"{duration}_sum", **labels)
    inf_bucket = value(after, f"{duration}_bucket", le="+Inf", **labels)
    assert inf_bucket == value(after, f"{duration}_count", **labels)
    ok = value(after, "deepserve_requests_total", code="OK", **labels)
    assert ok - value(before, "deepserve_requests_total", code="OK", **labels) == n


def test_failures_counted_by_status_code(server: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    before = scrape(server)
    truncated = add_sub()
    truncated.raw_input_contents[1] = truncated.raw_input_contents[1][:-1]  # fails while decoding
    failing = [add_sub(width=5), add_sub(batch=9), truncated, add_sub(model="nope")]
    for request in failing:
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(request, timeout=10)
    stub.ModelInfer(add_sub(), timeout=10)
    after = scrape(server)

    def grew(code: str, **labels: str) -> float:
        key = "deepserve_requests_total"
        return value(after, key, code=code, **labels) - value(before, key, code=code, **labels)

    assert grew("INVALID_ARGUMENT", model="add_sub", version="1") == 3
    assert grew("NOT_FOUND", model="_unknown") == 1
    assert grew("OK", model="add_sub") == 1
    assert grew("NOT_FOUND", model="add_sub") == 0
    count = "deepserve_request_duration_seconds_count"
    assert value(after, count) - value(before, count) == len(failing) + 1


def test_model_metrics_exported(server: RunningServer, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    before = scrape(server)
    stub.ModelInfer(add_sub(batch=3), timeout=10)
    after = scrape(server)
    labels = {"model": "add_sub", "version": "1"}
    assert value(after, "deepserve_model_ready", **labels) == 1
    assert value(after, "deepserve_queue_capacity", **labels) == 1024
    assert value(after, "deepserve_inflight_requests", **labels) == 0
    for histogram in ("deepserve_batch_size", "deepserve_compute_duration_seconds", "deepserve_queue_duration_seconds"):
        assert value(after, f"{histogram}_count", **labels) == value(before, f"{histogram}_count", **labels) + 1
    assert value(after, "deepserve_batch_size_sum", **labels) == value(before, "deepserve_batch_size_sum", **labels) + 3
