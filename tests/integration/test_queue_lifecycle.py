"""Deadlines and cancellations over real gRPC: the request leaves the queue before it costs compute."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import RunningServer
from tests.integration.conftest import serving
from tests.tiny_models import make_repository


@pytest.fixture
def slow_server(tmp_path: Path):
    yield from serving(make_repository(tmp_path, names=("slower",)))


def slow_request(batch: int = 4, timeout_us: int | None = None) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="slower")
    req.inputs.add(name="x", datatype="FP32", shape=[batch, 64, 512])
    req.raw_input_contents.append(np.ones((batch, 64, 512), np.float32).tobytes())
    if timeout_us is not None:
        req.parameters["timeout"].int64_param = timeout_us
    return req


def executions(stub: pb_grpc.GRPCInferenceServiceStub) -> int:
    return stub.ModelStatistics(pb.ModelStatisticsRequest(name="slower")).model_stats[0].execution_count


def pipeline(server: RunningServer):  # type: ignore[no-untyped-def]
    return server.app.registry.get("slower")


def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def test_cancelled_call_leaves_the_queue_and_never_runs(slow_server):
    with grpc.insecure_channel(slow_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        busy = [stub.ModelInfer.future(slow_request()) for _ in range(2)]  # one runs, one waits
        wait_until(lambda: pipeline(slow_server).batcher.queue_depth == 1)
        victim = stub.ModelInfer.future(slow_request())
        wait_until(lambda: pipeline(slow_server).batcher.queue_depth == 2)
        victim.cancel()
        wait_until(lambda: pipeline(slow_server).batcher.queue_depth <= 1)
        for call in busy:
            call.result(timeout=30)
        assert executions(stub) == 2, "the cancelled request must not have run"
        assert pipeline(slow_server).metrics.rejected["cancelled"]._value.get() == 1


@pytest.mark.parametrize("how", ["grpc-deadline", "timeout-parameter"])
def test_request_expiring_in_the_queue_gets_deadline_exceeded(slow_server, how):
    with grpc.insecure_channel(slow_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        busy = [stub.ModelInfer.future(slow_request()) for _ in range(3)]
        wait_until(lambda: pipeline(slow_server).batcher.queue_depth >= 1)  # the victim queues behind it
        with pytest.raises(grpc.RpcError) as err:
            if how == "grpc-deadline":
                stub.ModelInfer(slow_request(), timeout=0.01)
            else:
                stub.ModelInfer(slow_request(timeout_us=10_000), timeout=30)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for call in busy:
            call.result(timeout=30)
        assert executions(stub) == 3, "batches of 4 run alone: a 4th execution would be the expired request"
        wait_until(lambda: pipeline(slow_server).batcher.queue_depth == 0)
        # and the server serves normally afterwards
        assert stub.ModelInfer(slow_request(batch=1), timeout=60).outputs[0].shape == [1, 64, 512]


def test_bad_timeout_parameter_is_invalid_argument(slow_server):
    with grpc.insecure_channel(slow_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        req = slow_request(batch=1)
        req.parameters["timeout"].string_param = "soon"
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "timeout" in err.value.details()
