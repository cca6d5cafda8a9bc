"""Server reflection over the stubs' private descriptor pool, so grpcurl can list and describe everything.

Two gaps of grpcio-reflection's servicer are closed here:
- the pool it is given must hold every advertised service's file, the health and reflection services'
  included (their stubs register in protobuf's global pool, ours in `_generated/_pool.py`);
- protobuf's upb pool (`FindFileContainingSymbol`) knows services, messages, fields and enums but not
  methods, so `describe deepserve.v1.TextGenerator.Generate` was "Symbol not found": a method is
  resolved to the file of its service.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from service.grpc._generated import _pool

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class ReflectionServicer(reflection.aio.ReflectionServicer):
    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return super()._file_containing_symbol(request, _method_to_service(self._pool, fully_qualified_name))


def _method_to_service(pool: DescriptorPool, symbol: str) -> str:
    """`symbol`, or the service's name when it names a method (`package.Service.Method`)."""
    service, _, method = symbol.rpartition(".")
    try:
        return service if method in pool.FindServiceByName(service).methods_by_name else symbol
    except KeyError:
        return symbol


def add_reflection(server: Any, services: list[str]) -> None:
    """Register reflection on `server` (a `grpc.aio.Server` or a stand-in with the same `add_generic_rpc_handlers`),
    describing `services`, the health service and itself."""
    for file in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        _add_to_pool(file)
    names = [*services, HEALTH_SERVICE, reflection.SERVICE_NAME]
    # what reflection.enable_server_reflection does for an aio server (it would not take the stand-in)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(ReflectionServicer(names, pool=_pool.POOL), server)


def _add_to_pool(file: FileDescriptor) -> None:
    try:
        _pool.POOL.FindFileByName(file.name)
    except KeyError:
        _pool.POOL.AddSerializedFile(file.serialized_pb)
