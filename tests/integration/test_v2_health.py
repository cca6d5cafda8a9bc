"""A started server answers liveness, readiness, health checks and reflection on its one gRPC port."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as tc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service import __version__
from tests.conftest import RunningServer

V2 = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.mark.parametrize("service", ["", V2])
def test_health_serving_after_start(channel: grpc.Channel, service: str) -> None:
    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_unknown_service_not_found(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {V2, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_reflection_describes_the_v2_service(channel: grpc.Channel) -> None:
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    service = pool.FindServiceByName(V2)
    methods = {m.name for m in service.methods}
    assert {"ServerLive", "ServerReady", "ModelReady", "ModelMetadata", "ModelInfer", "ModelConfig"} <= methods
    assert service.methods_by_name["ModelInfer"].input_type.full_name == "inference.ModelInferRequest"


def test_live_and_ready(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("add_sub", "2")
    assert not client.is_model_ready("nope")


def test_server_metadata(client: tc.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "deepserve"
    assert metadata.version == __version__
    assert {"model_repository", "model_configuration", "statistics"} <= set(metadata.extensions)
