"""`grpc.requests`: handlers guarded at registration refuse requests that do not parse with INVALID_ARGUMENT,
for unary and streamed requests alike, and log the refusals at a bounded rate."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from service.grpc.requests import GuardedServer, RefusalLog, Unparsable, guarded

Request = health_pb2.HealthCheckRequest
GOOD = Request(service="v2").SerializeToString()
GARBAGE = b"\xff\xff\xff"
LATIN1 = b"\x0a\x04caf\xe9"  # service = b"caf\xe9"


class Context:
    def __init__(self) -> None:
        self.written: list[Any] = []
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    async def write(self, message: Any) -> None:
        self.written.append(message)


class Refusals:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, method: str, reason: str) -> None:
        self.calls.append((method, reason))


async def echo(request: Any, context: Any) -> str:
    return request.service


async def echo_twice(request: Any, context: Any) -> AsyncIterator[str]:
    yield request.service
    yield request.service


async def echo_each(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[str]:
    async for request in requests:
        yield request.service


async def messages(*payloads: bytes, deserializer: Any) -> AsyncIterator[Any]:
    for payload in payloads:
        yield deserializer(payload)


def unary(behaviour: Any = echo) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour, Request.FromString, Request.SerializeToString)


async def test_a_parsed_request_reaches_the_behaviour() -> None:
    handler = guarded(unary(), "/h/Check", Refusals())
    assert handler.unary_unary is not None and handler.request_deserializer is not None
    assert await handler.unary_unary(handler.request_deserializer(GOOD), Context()) == "v2"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (GARBAGE, "the request is not a valid grpc.health.v1.HealthCheckRequest message"),
        (LATIN1, "service is not valid UTF-8 (byte 0xe9 at offset 3); send text encoded as UTF-8"),
    ],
)
async def test_an_unparsable_request_is_invalid_argument(payload: bytes, message: str) -> None:
    refusals = Refusals()
    handler = guarded(unary(), "/h/Check", refusals)
    request = handler.request_deserializer(payload)  # type: ignore[misc]
    assert request == Unparsable(message)
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await handler.unary_unary(request, context)  # type: ignore[misc]
    assert context.aborted == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert refusals.calls == [("/h/Check", message)]


async def test_server_streaming_async_generator_writes_each_response() -> None:
    handler = guarded(
        grpc.unary_stream_rpc_method_handler(echo_twice, Request.FromString, Request.SerializeToString),
        "/h/W",
        Refusals(),
    )
    context = Context()
    assert await handler.unary_stream(handler.request_deserializer(GOOD), context) is None  # type: ignore[misc]
    assert context.written == ["v2", "v2"]
    with pytest.raises(grpc.aio.AbortError):
        await handler.unary_stream(handler.request_deserializer(GARBAGE), Context())  # type: ignore[misc]


async def test_streamed_requests_end_the_call_at_the_first_that_does_not_parse() -> None:
    refusals = Refusals()
    handler = guarded(
        grpc.stream_stream_rpc_method_handler(echo_each, Request.FromString, Request.SerializeToString),
        "/r/I",
        refusals,
    )
    context = Context()
    requests = messages(GOOD, LATIN1, GOOD, deserializer=handler.request_deserializer)
    with pytest.raises(grpc.aio.AbortError):
        await handler.stream_stream(requests, context)  # type: ignore[misc]
    assert context.written == ["v2"]
    assert context.aborted is not None and context.aborted[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert [method for method, _ in refusals.calls] == ["/r/I"]


def test_other_deserializers_that_raise_give_a_generic_message() -> None:
    def strict(data: bytes) -> str:
        return data.decode("ascii")

    handler = guarded(grpc.unary_unary_rpc_method_handler(echo, strict, None), "/x/Y", Refusals())
    assert handler.request_deserializer(b"ok") == "ok"  # type: ignore[misc]
    assert handler.request_deserializer(b"\xff") == Unparsable("the request could not be parsed")  # type: ignore[misc]


def test_raw_and_synchronous_handlers_are_left_alone() -> None:
    raw = grpc.unary_unary_rpc_method_handler(echo)
    sync = grpc.unary_unary_rpc_method_handler(lambda r, c: r, Request.FromString)
    assert guarded(raw, "/x/Raw", Refusals()) is raw
    assert guarded(sync, "/x/Sync", Refusals()) is sync


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
    assert registered is not original
    assert registered.request_deserializer(GARBAGE) == Unparsable(  # type: ignore[misc]
        "the request is not a valid grpc.health.v1.HealthCheckRequest message"
    )
    assert server.generic[0].service(Details("/h/Check")) is registered
    assert server.generic[0].service(Details("/h/Nope")) is None


def test_refusals_log_once_per_method_per_window_and_count_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(seconds=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="service.grpc.requests"):
        for _ in range(200):
            refusals("/a/M", "bad")
            now[0] += 0.01
        refusals("/b/N", "bad")
        now[0] = 10.5
        refusals("/a/M", "bad")
    lines = [(r.method, r.not_logged) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("/a/M", 0), ("/b/N", 0), ("/a/M", 199)]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in caplog.records)
