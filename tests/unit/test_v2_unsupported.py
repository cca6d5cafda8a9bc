"""V2 methods deepserve does not implement answer UNIMPLEMENTED saying what to use instead, without the
generated base class's NotImplementedError (which grpc logs as an error with a traceback)."""

from __future__ import annotations

import grpc
import pytest

from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from service.grpc.v2 import ALTERNATIVES, SERVICE, InferenceServicer

UNSUPPORTED = [m.name for m in SERVICE.methods if m.name in ALTERNATIVES]


class Context:
    aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()


def test_no_method_of_the_service_falls_back_to_the_generated_base() -> None:
    base = pb_grpc.GRPCInferenceServiceServicer
    inherited = [m.name for m in SERVICE.methods if getattr(InferenceServicer, m.name) is getattr(base, m.name)]
    assert inherited == []
    assert set(UNSUPPORTED) == set(ALTERNATIVES)  # every alternative names a method of the service


@pytest.mark.parametrize("name", UNSUPPORTED)
async def test_unsupported_methods_are_unimplemented_with_an_alternative(name: str) -> None:
    context = Context()
    with pytest.raises(grpc.aio.AbortError):
        await getattr(InferenceServicer, name)(object(), object(), context)
    assert context.aborted == (
        grpc.StatusCode.UNIMPLEMENTED,
        f"{name} is not supported by deepserve; {ALTERNATIVES[name]}",
    )
