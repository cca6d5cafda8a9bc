"""Parsing a request's bytes without raising: `Unparsable` says why a request does not parse, in words a
client can act on. The message names the field, element and byte when a text field is not UTF-8 (found by
parsing the request again as its "bytes twin": the same message with every string field declared bytes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

log = logging.getLogger(__name__)


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


def lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """A deserializer that returns `Unparsable` instead of raising (with the field detail for messages)."""
    cls = getattr(deserializer, "__self__", None)
    if isinstance(cls, type) and issubclass(cls, Message) and deserializer == cls.FromString:
        return parser(cls)

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - whatever the deserializer raises, the request does not parse
            return Unparsable("the request could not be parsed")

    return parse


def _bytes_twin(descriptor: Any) -> type[Message] | None:
    """The message class with string fields as bytes, in its own pool with the files it imports (also
    twinned). Map keys stay strings (protobuf allows no bytes keys). None if the twin cannot be built."""
    pool = descriptor_pool.DescriptorPool()
    try:
        _add_twin(pool, descriptor.file, set())
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))
    except Exception:  # without a twin, the message says less but is still right
        log.debug("no bytes twin", extra={"type": descriptor.full_name}, exc_info=True)
        return None


def _add_twin(pool: descriptor_pool.DescriptorPool, file: Any, added: set[str]) -> None:
    if file.name in added:
        return
    added.add(file.name)
    for dependency in file.dependencies:
        _add_twin(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    stack = list(proto.message_type)
    while stack:
        message = stack.pop()
        stack.extend(message.nested_type)
        for field in message.field:
            if field.type == field.TYPE_STRING and not (message.options.map_entry and field.name == "key"):
                field.type = field.TYPE_BYTES
    pool.Add(proto)


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
