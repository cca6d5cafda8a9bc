"""Requests that do not parse: INVALID_ARGUMENT with a message a client can act on, for every service on the port.

The protobuf runtime refuses to parse a message whose bytes are not a valid encoding, or whose `string`
fields hold invalid UTF-8; grpc.aio would then answer UNKNOWN "Unexpected <class '...DecodeError'>" and
log an ERROR with a traceback for each call, so a client sending garbage could fill the log.
`GuardedServer` stands in for the server while services register and wraps every method handler once
(`guarded`): its deserializer returns `Unparsable` instead of raising, and its behaviour ends a call that
receives one with INVALID_ARGUMENT (for a streamed request, at the message that does not parse). The
message names the field, element and byte when a text field is not UTF-8 (`parsing.py`). Refusals are logged
as at most one WARNING per method every `REFUSAL_LOG_SECONDS`, with the count of those not logged.
No interceptor: wrapping at registration costs a call one isinstance check.

With an `Authorizing` (the server's bearer tokens, `grpc/auth.py`), each method that needs a scope gets its
check (`Admit`) wired in at registration too: the call is authorized before its request is parsed, and its
accounting ends in a `finally` that every ending reaches (done, failed, cancelled, a stream closed early).
Open methods, and every method on a server without tokens, get no check: they cost nothing more.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from service.errors import DeepserveError, InvalidInputError
from service.grpc.errors import fail, status_of
from service.grpc.parsing import Unparsable, lenient
from service.logs import RefusalLog

log = logging.getLogger(__name__)


Admit = Callable[[grpc.aio.ServicerContext], Callable[[], None]]
"""Authorizes one call before its handler runs: returns what ends the call's accounting (called once, when the
call ends), or raises the `DeepserveError` the call is answered with."""


class Authorizing(Protocol):
    def admission(self, method: str) -> Admit | None:
        """The check for `method` (asked once, at registration); None when the method is open."""


class GuardedServer:
    """Pass this instead of the server to `add_*_to_server` functions (the generated ones, health's,
    reflection's): it guards every method handler (`guarded`) before it reaches the server."""

    def __init__(
        self, server: grpc.aio.Server, refusals: RefusalLog | None = None, authorizer: Authorizing | None = None
    ) -> None:
        self.server = server
        self.refusals = refusals or RefusalLog(logger=log)
        self.authorizer = authorizer
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        """Method → the handler registered for it and its guarded twin."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(_GuardedGenericHandler(h, self.guard) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        guarded = {name: self.guard(handler, f"/{service}/{name}") for name, handler in handlers.items()}
        self.server.add_registered_method_handlers(service, guarded)

    def guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`guarded(handler)`, built once per method and handler (generated code registers each handler
        twice: as a registered method, and in a generic handler that grpc asks for each call it finds no
        registered method for)."""
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            admit = self.authorizer.admission(method) if self.authorizer is not None else None
            known = self._guarded[method] = (handler, guarded(handler, method, self.refusals, admit))
        return known[1]


def guarding(server: grpc.aio.Server | GuardedServer) -> GuardedServer:
    return server if isinstance(server, GuardedServer) else GuardedServer(server)


def add_service(
    server: grpc.aio.Server | GuardedServer, servicer: object, service: ServiceDescriptor, module: ModuleType
) -> None:
    """Register `servicer`'s methods for `service`, guarded (like a generated `add_*_to_server`)."""
    handlers = {}
    for method in service.methods:
        request, response = getattr(module, method.input_type.name), getattr(module, method.output_type.name)
        factory = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    guarded_server = guarding(server)
    guarded_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    guarded_server.add_registered_method_handlers(service.full_name, handlers)


def guarded(
    handler: grpc.RpcMethodHandler, method: str, refused: Callable[[str, str], None], admit: Admit | None = None
) -> grpc.RpcMethodHandler:
    """`handler` with a deserializer that returns `Unparsable` instead of raising, and a behaviour that ends
    the call with INVALID_ARGUMENT when it gets one; with `admit`, the call is authorized first (`_admitted`).
    Without `admit`, handlers without a deserializer (raw bytes) or with a synchronous behaviour (not served
    by grpc.aio) are returned as they are; with it, a synchronous one is an error (it would go unchecked)."""
    behaviour = handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    streams = inspect.isasyncgenfunction(behaviour)
    if not (streams or inspect.iscoroutinefunction(behaviour)):
        if admit is not None:
            raise TypeError(f"{method}: a synchronous handler cannot be authorized; make it async")
        return handler
    if handler.request_deserializer is None and admit is None:
        return handler

    async def refuse(request: Unparsable, context: grpc.aio.ServicerContext) -> None:
        refused(method, request.message)
        await context.abort(*status_of(InvalidInputError(request.message)))  # abort: it must also end a stream

    async def checked(requests: AsyncIterable[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Unparsable):
                await refuse(request, context)
            yield request

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if handler.request_streaming:
            request = checked(request, context)
        elif isinstance(request, Unparsable):
            await refuse(request, context)
        if not streams:
            return await behaviour(request, context)
        # what grpc.aio does with an async generator: write each response (so no extra hop per message)
        async with contextlib.aclosing(behaviour(request, context)) as responses:
            async for response in responses:
                await context.write(response)
        return None

    factory = _FACTORIES[handler.request_streaming, handler.response_streaming]
    serializer = _passing_bytes(handler.response_serializer)
    parse = None if handler.request_deserializer is None else lenient(handler.request_deserializer)
    if admit is None:
        return factory(call, parse, serializer)  # type: ignore[operator]
    return factory(_admitted(call, admit, parse, handler.request_streaming), None, serializer)  # type: ignore[operator]


def _admitted(
    call: Callable[[Any, grpc.aio.ServicerContext], Any],
    admit: Admit,
    parse: Callable[[bytes], Any] | None,
    request_streaming: bool,
) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    """`call`, authorized by `admit` before its request is parsed (so a refused caller costs no parsing), with
    the call's accounting ended however it ends: returned, failed, cancelled, or a stream closed early."""

    async def parsed(requests: AsyncIterable[bytes]) -> AsyncIterator[Any]:
        async for data in requests:
            yield parse(data)  # type: ignore[misc]

    async def admitted(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            release = admit(context)
        except DeepserveError as err:
            fail(context, err)
            return None
        try:
            if parse is not None:
                request = parsed(request) if request_streaming else parse(request)
            return await call(request, context)
        finally:
            release()

    return admitted


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _passing_bytes(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The response serializer, except that a handler may return its response already serialized (bytes)."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serializer(response)

    return serialize


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    """Guards the handlers another generic handler finds (each once, by `GuardedServer.guard`)."""

    def __init__(
        self, inner: grpc.GenericRpcHandler, guard: Callable[[grpc.RpcMethodHandler, str], grpc.RpcMethodHandler]
    ) -> None:
        self.inner = inner
        self.guard = guard

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self.inner.service(handler_call_details)
        return None if handler is None else self.guard(handler, handler_call_details.method)  # type: ignore[attr-defined]

    def service_name(self) -> str | None:
        name = getattr(self.inner, "service_name", None)
        return name() if callable(name) else None
