"""Our inference protos must stay wire compatible with the stubs shipped in `tritonclient`.

tritonclient's generated modules declare the same `inference.*` symbols as ours, and one process can only register
them once in protobuf's default descriptor pool. So tritonclient's `*_pb2` modules are never imported here: their
serialized descriptors are read from the source files into a private pool.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor

from service.grpc._generated.inference import grpc_service_pb2, model_config_pb2

tritonclient = pytest.importorskip("tritonclient")

# Open Inference Protocol (KServe v2) core RPCs, and the Triton extensions tritonclient calls on us.
V2_RPCS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")
EXT_RPCS = (
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
)
ROUND_TRIP = ("ModelInferRequest", "ModelInferResponse", "ModelConfigResponse", "ModelStreamInferResponse")


def _serialized_file(path: Path) -> bytes:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "AddSerializedFile":
            return node.args[0].value
    raise LookupError(f"no serialized descriptor in {path}")


TRITON = descriptor_pool.DescriptorPool()
for _name in ("model_config_pb2.py", "service_pb2.py"):  # dependency first
    _path = Path(tritonclient.__file__).parent / "grpc" / _name
    TRITON.Add(descriptor_pb2.FileDescriptorProto.FromString(_serialized_file(_path)))


def _walk(file: FileDescriptor) -> tuple[list[Descriptor], list[EnumDescriptor]]:
    messages, enums = [], list(file.enum_types_by_name.values())
    stack = list(file.message_types_by_name.values())
    while stack:
        msg = stack.pop()
        messages.append(msg)
        enums.extend(msg.enum_types)
        stack.extend(msg.nested_types)
    return messages, enums


def _signature(field: FieldDescriptor) -> tuple:
    typ = field.message_type or field.enum_type
    type_name = typ.full_name if typ else None
    oneof = field.containing_oneof.name if field.containing_oneof else None
    return (field.number, field.type, field.is_repeated, field.has_presence, type_name, oneof)


OURS = [_walk(model_config_pb2.DESCRIPTOR), _walk(grpc_service_pb2.DESCRIPTOR)]


@pytest.mark.parametrize("msg", [m for ms, _ in OURS for m in ms], ids=lambda m: m.full_name)
def test_message_matches_triton(msg: Descriptor) -> None:
    theirs = TRITON.FindMessageTypeByName(msg.full_name)
    assert msg.GetOptions().map_entry == theirs.GetOptions().map_entry
    for field in msg.fields:
        assert field.name in theirs.fields_by_name, f"{field.full_name} not in tritonclient"
        assert _signature(field) == _signature(theirs.fields_by_name[field.name]), field.full_name


@pytest.mark.parametrize("enum", [e for _, es in OURS for e in es], ids=lambda e: e.full_name)
def test_enum_matches_triton(enum: EnumDescriptor) -> None:
    theirs = TRITON.FindEnumTypeByName(enum.full_name)
    assert {v.name: v.number for v in enum.values} == {v.name: v.number for v in theirs.values}


def test_service_matches_triton() -> None:
    ours = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = TRITON.FindServiceByName("inference.GRPCInferenceService")
    assert ours.full_name == theirs.full_name
    assert set(ours.methods_by_name) >= {*V2_RPCS, *EXT_RPCS}
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        for attr in ("client_streaming", "server_streaming"):
            assert getattr(method, attr) == getattr(other, attr), method.name
        assert method.input_type.full_name == other.input_type.full_name, method.name
        assert method.output_type.full_name == other.output_type.full_name, method.name


def _scalar(field: FieldDescriptor):
    if field.enum_type is not None:
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b"\x00\xffraw"
    return {
        FieldDescriptor.CPPTYPE_STRING: "s",
        FieldDescriptor.CPPTYPE_BOOL: True,
        FieldDescriptor.CPPTYPE_FLOAT: 1.5,
        FieldDescriptor.CPPTYPE_DOUBLE: 2.25,
    }.get(field.cpp_type, 7)


def _populate(msg):
    """Set every field (first member of each oneof), two elements per repeated field, one entry per map."""
    for field in msg.DESCRIPTOR.fields:
        if field.containing_oneof is not None and field.containing_oneof.fields[0].name != field.name:
            continue
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            key = _scalar(key_f)
            if val_f.message_type is not None:
                _populate(value[key])
            else:
                value[key] = _scalar(val_f)
        elif field.message_type is not None and field.is_repeated:
            for _ in range(2):
                _populate(value.add())
        elif field.message_type is not None:
            value.SetInParent()
            _populate(value)
        elif field.is_repeated:
            value.extend([_scalar(field)] * 2)
        else:
            setattr(msg, field.name, _scalar(field))
    return msg


@pytest.mark.parametrize("name", [*ROUND_TRIP, "ModelMetadataResponse", "ModelStatisticsResponse"])
@pytest.mark.parametrize("direction", ["triton_to_ours", "ours_to_triton"])
def test_round_trip(name: str, direction: str) -> None:
    ours_cls = getattr(grpc_service_pb2, name)
    triton_cls = message_factory.GetMessageClass(TRITON.FindMessageTypeByName(f"inference.{name}"))
    src_cls, dst_cls = (triton_cls, ours_cls) if direction == "triton_to_ours" else (ours_cls, triton_cls)
    src = _populate(src_cls())
    dst = dst_cls.FromString(src.SerializeToString())
    assert text_format.MessageToString(dst) == text_format.MessageToString(src)
    assert dst.SerializeToString(deterministic=True) == src.SerializeToString(deterministic=True)
