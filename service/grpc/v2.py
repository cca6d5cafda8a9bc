"""`inference.GRPCInferenceService` (Open Inference Protocol v2 + Triton extensions): thin adapters.

Each method converts protobuf to domain values, calls the registry/pipeline, converts back. They raise domain
errors; the request boundary (`boundary.py`) answers them through the one table and counts every call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import MethodDescriptor

from service import __version__
from service.errors import InvalidInputError, NotEnabledError, quoted
from service.grpc import convert
from service.grpc._generated.inference import grpc_service_pb2 as pb
from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc
from service.grpc.auth import caller
from service.pipeline import ModelPipeline
from service.registry import MODEL_CONTROL_OFF, ModelRegistry, load_parameters_refused

log = logging.getLogger(__name__)
EXTENSIONS = ["model_repository", "model_configuration", "statistics", "classification_tasks"]
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SHARED_MEMORY = "send the tensors in the request itself (raw_input_contents)"
ALTERNATIVES = {
    "ModelStreamInfer": "use ModelInfer, one call per request (calls on one channel run concurrently)",
    "SystemSharedMemoryStatus": SHARED_MEMORY,
    "SystemSharedMemoryRegister": SHARED_MEMORY,
    "SystemSharedMemoryUnregister": SHARED_MEMORY,
    "CudaSharedMemoryStatus": SHARED_MEMORY,
    "CudaSharedMemoryRegister": SHARED_MEMORY,
    "CudaSharedMemoryUnregister": SHARED_MEMORY,
    "TraceSetting": "request, queue and compute times are in the Prometheus metrics (/metrics on the metrics port)",
    "LogSettings": "set the log level when the server starts (deepserve serve --log-level)",
}
"""What to use instead of the Triton methods deepserve does not implement."""


S = TypeVar("S", bound=type)


def refuses_unsupported(cls: S) -> S:
    """Every method of the V2 service that `cls` does not define answers UNIMPLEMENTED, saying what to use
    instead (the generated base class would raise NotImplementedError, which grpc logs as an error)."""
    base = pb_grpc.GRPCInferenceServiceServicer
    for method in SERVICE.methods:
        if getattr(cls, method.name, None) in (None, getattr(base, method.name, None)):
            setattr(cls, method.name, _unsupported(method))
    return cls


def _unsupported(method: MethodDescriptor) -> Callable[..., Any]:
    alternative = ALTERNATIVES.get(method.name)
    message = f"{method.name} is not supported by deepserve" + (f"; {alternative}" if alternative else "")

    async def refuse(self: object, request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

    refuse.__name__ = refuse.__qualname__ = method.name
    return refuse


@refuses_unsupported
class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, registry: ModelRegistry, is_ready: object, model_control: bool = False) -> None:
        self.registry = registry
        self._is_ready = is_ready
        self.model_control = model_control
        """RepositoryModelLoad/Unload allowed (--model-control-mode explicit); otherwise FAILED_PRECONDITION."""

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self._is_ready()))  # type: ignore[operator]

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.registry.is_ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="deepserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        pipeline = self._get(request.name, request.version)
        return convert.model_metadata(pipeline.name, self._versions(pipeline.name), pipeline.config)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        pipeline = self._get(request.name, request.version)
        config = convert.model_config(pipeline.name, self._versions(pipeline.name), pipeline.config)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        if request.name:
            self._get(request.name, request.version)
        pipelines = [
            p
            for p in self.registry.loaded()
            if (not request.name or p.name == request.name) and (not request.version or p.version == request.version)
        ]
        return pb.ModelStatisticsResponse(
            model_stats=[convert.model_statistics(p.name, p.version, p.observer.stats) for p in pipelines]
        )

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        entries = self.registry.index()
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=e.name, version=e.version, state=e.state.value, reason=e.reason)
                for e in entries
                if not request.ready or e.state.value == "READY"
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        self._controlled("load", request.model_name, context)
        if request.parameters:  # Triton's `config` and `file:<path>` overrides, or anything else
            raise InvalidInputError(load_parameters_refused(list(request.parameters)))
        await self.registry.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        self._controlled("unload", request.model_name, context)
        await self.registry.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> bytes:
        pipeline = self.registry.get(request.model_name, request.model_version)
        decoded = convert.decode_infer_request(request, context.time_remaining(), pipeline.limits)
        return convert.serialize_infer_response(await pipeline.infer(decoded))  # bytes: sent as they are

    # ---- helpers --------------------------------------------------------------------------------
    def _versions(self, name: str) -> list[str]:
        return sorted((p.version for p in self.registry.loaded() if p.name == name), key=int)

    def _get(self, name: str, version: str) -> ModelPipeline:
        if not name:
            raise InvalidInputError("the request names no model")
        return self.registry.get(name, version)

    def _controlled(self, action: str, model: str, context: grpc.aio.ServicerContext) -> None:
        """Refuse model control unless it is on; log who asked (the token's name when tokens are configured)."""
        if not self.model_control:
            raise NotEnabledError(MODEL_CONTROL_OFF)
        log.info(
            f"model {action} requested", extra={"model": quoted(model), "token": caller.get(), "peer": context.peer()}
        )
