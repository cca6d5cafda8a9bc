"""`grpc.requests`: every handler is put behind the boundary at registration, once; refusals of requests that do not
parse are logged at a bounded rate (the boundary itself: `test_grpc_boundary_parsing.py`)."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from service.grpc.requests import GuardedServer
from service.logs import RefusalLog

Request = health_pb2.HealthCheckRequest


async def echo(request: Any, context: Any) -> str:
    return request.service  # type: ignore[no-any-return]


def unary() -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(echo, Request.FromString, Request.SerializeToString)


class Server:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: tuple[grpc.GenericRpcHandler, ...]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.registered.update({f"/{service}/{name}": handler for name, handler in handlers.items()})


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_guarded_server_guards_registered_and_generic_handlers_once() -> None:
    server = Server()
    original = unary()
    handlers = {"Check": original}
    guarded_server = GuardedServer(server)  # type: ignore[arg-type]
    guarded_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("h", handlers),))
    guarded_server.add_registered_method_handlers("h", handlers)
    registered = server.registered["/h/Check"]
    assert registered is not original and registered.request_deserializer is None  # the boundary parses
    assert server.generic[0].service(Details("/h/Check")) is registered
    assert server.generic[0].service(Details("/h/Nope")) is None


def test_refusals_log_once_per_method_per_window_and_count_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(seconds=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="service.logs"):
        for _ in range(200):
            refusals("/a/M", "bad")
            now[0] += 0.01
        refusals("/b/N", "bad")
        now[0] = 10.5
        refusals("/a/M", "bad")
    lines = [(r.method, r.not_logged) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("/a/M", 0), ("/b/N", 0), ("/a/M", 199)]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in caplog.records)
