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


def test_guarded_server_guards_each_handler_once_and_registers_no_method() -> None:
    """grpc.aio waits on every registered method for each call, so none is registered: generic handlers serve
    them all, each handler guarded once."""
    server = Server()
    original = unary()
    handlers = {"Check": original}
    guarded_server = GuardedServer(server)  # type: ignore[arg-type]
    guarded_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("h", handlers),))
    guarded_server.add_registered_method_handlers("h", handlers)  # as the generated code does next
    assert server.registered == {} and len(server.generic) == 1
    served = server.generic[0].service(Details("/h/Check"))
    assert served is not original and served.request_deserializer is None  # the boundary parses
    assert server.generic[0].service(Details("/h/Check")) is served  # guarded once
    assert server.generic[0].service(Details("/h/Nope")) is None


def test_a_service_given_only_as_registered_methods_gets_a_generic_handler() -> None:
    server = Server()
    GuardedServer(server).add_registered_method_handlers("only", {"Check": unary()})  # type: ignore[arg-type]
    assert server.registered == {}
    served = server.generic[0].service(Details("/only/Check"))
    assert served is not None and served.request_deserializer is None


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
