"""`grpc.boundary.guarded` refuses requests that do not parse with INVALID_ARGUMENT, in every kind of method."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from service.grpc.boundary import Boundary, guarded
from service.grpc.parsing import Unparsable
from tests.unit.boundary_helpers import Context, Edge

Check = health_pb2.HealthCheckRequest
GOOD = Check(service="v2").SerializeToString()
GARBAGE = b"\xff\xff\xff"
LATIN1 = b"\x0a\x04caf\xe9"  # service = b"caf\xe9"


# ---- requests that do not parse ---------------------------------------------------------------------------
async def echo(request: Any, context: Any) -> str:
    return request.service  # type: ignore[no-any-return]


async def echo_twice(request: Any, context: Any) -> AsyncIterator[str]:
    yield request.service
    yield request.service


async def echo_each(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[str]:
    async for request in requests:
        yield request.service


async def payloads(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def check(behaviour: Any = echo) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(behaviour, Check.FromString, Check.SerializeToString)


async def test_a_parsed_request_reaches_the_behaviour() -> None:
    assert await Edge().behaviour("/h/Check", check())(GOOD, Context()) == "v2"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (GARBAGE, "the request is not a valid grpc.health.v1.HealthCheckRequest message"),
        (LATIN1, "service is not valid UTF-8 (byte 0xe9 at offset 3); send text encoded as UTF-8"),
    ],
)
async def test_an_unparsable_request_is_invalid_argument_and_counted(payload: bytes, message: str) -> None:
    edge, context = Edge(), Context()
    assert await edge.behaviour("/h/Check", check())(payload, context) is None
    assert (context.status, context.details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert edge.refusals.calls == [("/h/Check", message)]
    assert edge.counted() == [("", "", "h", "INVALID_ARGUMENT", 1.0)]


async def test_server_streaming_async_generator_writes_each_response() -> None:
    edge = Edge()
    method = grpc.unary_stream_rpc_method_handler(echo_twice, Check.FromString, Check.SerializeToString)
    context = Context(writes=2)
    assert await edge.behaviour("/h/W", method)(GOOD, context) is None
    assert context.written == ["v2", "v2"]
    garbage = Context()
    assert await edge.behaviour("/h/W", method)(GARBAGE, garbage) is None
    assert garbage.status is grpc.StatusCode.INVALID_ARGUMENT and garbage.written == []


async def test_streamed_requests_end_the_call_at_the_first_that_does_not_parse() -> None:
    edge = Edge()
    method = grpc.stream_stream_rpc_method_handler(echo_each, Check.FromString, Check.SerializeToString)
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await edge.behaviour("/r/I", method)(payloads(GOOD, LATIN1, GOOD), context)
    assert context.written == ["v2"]
    assert context.status is grpc.StatusCode.INVALID_ARGUMENT
    assert [method for method, _ in edge.refusals.calls] == ["/r/I"]
    assert edge.counted() == [("", "", "r", "INVALID_ARGUMENT", 1.0)]


async def test_other_deserializers_that_raise_give_a_generic_message() -> None:
    def strict(data: bytes) -> str:
        return data.decode("ascii")

    async def same(request: str, context: Any) -> str:
        return request

    edge = Edge()
    behaviour = edge.behaviour("/x/Y", grpc.unary_unary_rpc_method_handler(same, strict, None))
    assert await behaviour(b"ok", Context()) == "ok"
    context = Context()
    assert await behaviour(b"\xff", context) is None
    assert context.details == Unparsable("the request could not be parsed").message


def test_synchronous_handlers_and_raw_ones_on_an_uncounted_server_are_left_alone() -> None:
    raw = grpc.unary_unary_rpc_method_handler(echo)
    sync = grpc.unary_unary_rpc_method_handler(lambda r, c: r, Check.FromString)
    assert guarded(raw, "/x/Raw", Boundary()) is raw
    assert guarded(sync, "/x/Sync", Boundary()) is sync
    assert guarded(sync, "/x/Sync", Edge().boundary) is sync
