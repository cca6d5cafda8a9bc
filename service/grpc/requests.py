"""Registering services behind the request boundary: `GuardedServer` stands in for the server while services
register (the generated `add_*_to_server` functions, health's, reflection's, `add_service` for the task APIs) and
wraps every method handler once with `boundary.guarded` (accounting, authorization, parsing, errors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from service.grpc.boundary import Boundary, guarded


class GuardedServer:
    """Pass this instead of the server to `add_*_to_server` functions (the generated ones, health's,
    reflection's): it guards every method handler (`guarded`) before it reaches the server.

    Every method is served through a generic handler, none as a registered method. grpc.aio keeps one pending
    call request per registered method and, for every call that arrives, waits on all of them again with
    `asyncio.wait` (a check, a done-callback added and removed for each): Python work per request that grows
    with the methods on the port. With this port's 26 methods that was 145,000 instructions of a ModelInfer's
    626,000 (callgrind, docs/performance.md); a generic handler costs one lookup instead."""

    def __init__(self, server: grpc.aio.Server, boundary: Boundary | None = None) -> None:
        self.server = server
        self.boundary = boundary or Boundary()
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        """Method → the handler registered for it and its guarded twin."""
        self._services: set[str] = set()
        """Services a generic handler was added for."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        wrapped = tuple(_GuardedGenericHandler(h, self.guard) for h in handlers)
        self._services.update(name for h in wrapped if (name := h.service_name()))
        self.server.add_generic_rpc_handlers(wrapped)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """Served by a generic handler instead (the class docstring says why): the one added for `service` already
        (generated code adds both), else one made here."""
        if service not in self._services:
            self.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))

    def guard(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`guarded(handler)`, built once per method and handler."""
        known = self._guarded.get(method)
        if known is None or known[0] is not handler:
            known = self._guarded[method] = (handler, guarded(handler, method, self.boundary))
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
    guarding(server).add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


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
