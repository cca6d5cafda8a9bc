"""Every RPC and every HTTP route is counted once, by the one boundary of its protocol: each method of each
service on the gRPC port and each route of the HTTP port is called once over a real connection, and
`deepserve_requests_total` must grow by exactly one under the method's `api` label and the status its client saw.
A new RPC or route is covered as soon as it exists (the methods come from the services' descriptors, the routes
from the HTTP port's table)."""

from __future__ import annotations

import http.client
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from service.grpc._generated.deepserve.v1 import image_classifier_pb2 as ic
from service.grpc._generated.deepserve.v1 import sentiment_analyzer_pb2 as sa
from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc.boundary import api_of
from service.http import routes
from service.http.server import APIS
from tests.conftest import FREE_PORT, RunningServer
from tests.integration.conftest import serving
from tests.waiting import eventually

SERVICES = [
    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    ic.DESCRIPTOR.services_by_name["ImageClassifier"],
    sa.DESCRIPTOR.services_by_name["SentimentAnalyzer"],
    tg.DESCRIPTOR.services_by_name["TextGenerator"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]
METHODS = [(f"/{s.full_name}/{m.name}", m) for s in SERVICES for m in s.methods]
PATH_PARAMS = {"name": "quadrants", "version": "1"}


@pytest.fixture(scope="module")
def served(task_repo: Path) -> Iterator[RunningServer]:
    yield from serving(task_repo, http_port=FREE_PORT)


def counted(served: RunningServer, api: str) -> Counter[str]:
    """deepserve_requests_total of `api` by code, over every model."""
    codes: Counter[str] = Counter()
    for family in served.app.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "deepserve_requests_total" and sample.labels["api"] == api:
                codes[sample.labels["code"]] += int(sample.value)
    return codes


def _request(method: object) -> bytes:
    """A small request of the method's type naming a loaded model where it names one (an empty one otherwise)."""
    name = method.input_type.name  # type: ignore[attr-defined]
    fields = method.input_type.fields_by_name  # type: ignore[attr-defined]
    if "model_name" in fields:
        return method.input_type._concrete_class(model_name="quadrants").SerializeToString()  # type: ignore[attr-defined]
    if "name" in fields and name != "ServerReflectionRequest":
        return method.input_type._concrete_class(name="quadrants").SerializeToString()  # type: ignore[attr-defined]
    return b""


def _call(channel: grpc.Channel, path: str, method: object, request: bytes) -> str:
    """Call `path` once; the status the client saw."""
    try:
        if method.client_streaming:  # type: ignore[attr-defined]
            list(channel.stream_stream(path)(iter([request]), timeout=5))
        elif method.server_streaming:  # type: ignore[attr-defined]
            list(channel.unary_stream(path)(request, timeout=0.5))  # Health/Watch runs until its deadline
        else:
            channel.unary_unary(path)(request, timeout=5)
    except grpc.RpcError as err:
        return err.code().name  # type: ignore[attr-defined, no-any-return]
    return "OK"


@pytest.mark.parametrize(("path", "method"), METHODS, ids=[path for path, _ in METHODS])
def test_every_rpc_is_counted_once_with_the_status_its_client_saw(
    served: RunningServer, path: str, method: object
) -> None:
    api, _ = api_of(path)
    with grpc.insecure_channel(served.address) as channel:
        first = counted(served, api)
        _call(channel, path, method, _request(method))  # the first call may load lazily built state
        eventually(lambda: counted(served, api) != first)
        before = counted(served, api)
        code = _call(channel, path, method, _request(method))
    # a call cut by its deadline ends on the server a moment after the client hears of it
    eventually(lambda: counted(served, api) != before)
    assert counted(served, api) - before == {code: 1}


def test_task_calls_are_counted_under_the_model_that_answered(served: RunningServer) -> None:
    labels = {"model": "tiny_sentiment", "version": "1", "api": "sentiment", "code": "OK"}
    registry = served.app.metrics.registry
    before = registry.get_sample_value("deepserve_requests_total", labels) or 0
    with grpc.insecure_channel(served.address) as channel:
        analyze = channel.unary_unary("/deepserve.v1.SentimentAnalyzer/Analyze")
        analyze(sa.AnalyzeRequest(texts=["fine"], model_name="tiny_sentiment").SerializeToString(), timeout=10)
    assert registry.get_sample_value("deepserve_requests_total", labels) == before + 1


ROUTES = [(op.method.upper(), op.path, op.handler) for op in routes.OPERATIONS] + [
    ("GET", "/openapi.json", "openapi"),
    ("GET", "/docs", "docs"),
    ("GET", "/docs/docs.js", "docs"),
]


@pytest.mark.parametrize(("verb", "path", "handler"), ROUTES, ids=[f"{v} {p}" for v, p, _ in ROUTES])
def test_every_http_route_is_counted_once_with_the_status_its_client_saw(
    served: RunningServer, verb: str, path: str, handler: str
) -> None:
    api = APIS.get(handler, (f"http_{handler}", None))[0]
    before = counted(served, api)
    connection = http.client.HTTPConnection("127.0.0.1", served.app.http_port, timeout=10)
    try:
        connection.request(verb, path.format(**PATH_PARAMS), body=b"" if verb == "POST" else None)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert counted(served, api) - before == {str(response.status): 1}


def test_the_tests_cover_every_service_on_the_port(served: RunningServer) -> None:
    served = set(served.app.services) | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
    assert {s.full_name for s in SERVICES} == served, Path(__file__).name
