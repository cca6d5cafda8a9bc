"""Request parsing that answers invalid UTF-8 in a text field with INVALID_ARGUMENT naming the field.

proto3 `string` fields must hold UTF-8, and the protobuf runtime refuses to parse a message whose strings
do not; grpc.aio would then answer UNKNOWN "Unexpected <class '...DecodeError'>: Error parsing message",
which tells the client nothing it can act on. Here a request that fails to parse comes through as
`Unparsable`, with a message found by parsing it again as its "bytes twin" (the same message with every
string field declared bytes) and naming the field, the element and the offending byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message


@dataclass(frozen=True, slots=True)
class Unparsable:
    """Stands in for a request that could not be parsed; `message` says why, for the client."""

    message: str


def parser(cls: type[Message]) -> Callable[[bytes], Message | Unparsable]:
    twin = _bytes_twin(cls.DESCRIPTOR)

    def parse(data: bytes) -> Message | Unparsable:
        try:
            return cls.FromString(data)
        except DecodeError:
            return Unparsable(_explain(data, cls.DESCRIPTOR, twin))

    return parse


def add_service(server: grpc.aio.Server, servicer: object, service: ServiceDescriptor, module: ModuleType) -> None:
    """Register `servicer`'s methods for `service` (like the generated `add_*_to_server`, with `parser`)."""
    handlers = {}
    for method in service.methods:
        request, response = getattr(module, method.input_type.name), getattr(module, method.output_type.name)
        factory = (
            grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=parser(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _bytes_twin(descriptor: Any) -> type[Message] | None:
    """The message class with string fields as bytes (None for files with imports: not needed so far)."""
    if descriptor.file.dependencies:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    descriptor.file.CopyToProto(proto)
    stack = list(proto.message_type)
    while stack:
        message = stack.pop()
        stack.extend(message.nested_type)
        for field in message.field:
            if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))


def _explain(data: bytes, descriptor: Any, twin: type[Message] | None) -> str:
    invalid = f"the request is not a valid {descriptor.full_name} message"
    if twin is None:
        return f"{invalid} (or one of its text fields is not valid UTF-8)"
    try:
        message = twin.FromString(data)
    except DecodeError:
        return invalid
    for field in descriptor.fields:
        if field.type != FieldDescriptor.TYPE_STRING:
            continue
        values = getattr(message, field.name)
        for i, value in enumerate(values if field.is_repeated else [values]):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as err:
                name = f"{field.name}[{i}]" if field.is_repeated else field.name
                return (
                    f"{name} is not valid UTF-8 (byte 0x{value[err.start : err.start + 1].hex()} at offset "
                    f"{err.start}); send text encoded as UTF-8"
                )
    return f"{invalid} (a text field in a nested message is not valid UTF-8)"
