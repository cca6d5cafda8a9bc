"""KServe V2 REST (the Open Inference Protocol over HTTP, with Triton's binary data extension): thin handlers.

Each one takes the request apart (`codec`), calls the registry or a model's pipeline, the same ones gRPC's
`inference.GRPCInferenceService` calls, and answers JSON. Failures raise domain errors, which the boundary
(`server.py`) answers through the one HTTP table (`errors.py`); it also counts every request (`Call`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import __version__
from service.accounting import Call
from service.errors import DeepserveError, InvalidInputError, NotEnabledError, PayloadTooLargeError, quoted
from service.http import codec
from service.pipeline import ModelPipeline
from service.registry import MODEL_CONTROL_OFF, ModelRegistry, load_parameters_refused

log = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]


class V2Api:
    def __init__(
        self, registry: ModelRegistry, is_ready: Callable[[], bool], max_body_bytes: int, model_control: bool = False
    ) -> None:
        self.registry = registry
        self.is_ready = is_ready
        self.max_body_bytes = max_body_bytes
        self.model_control = model_control
        """Load and unload allowed (--model-control-mode explicit); otherwise 403."""

    async def server_live(self, request: Request, call: Call) -> Response:
        return JSONResponse({"live": True})

    async def server_ready(self, request: Request, call: Call) -> Response:
        ready = bool(self.is_ready())
        return JSONResponse({"ready": ready}, status_code=200 if ready else HTTPStatus.SERVICE_UNAVAILABLE)

    async def server_metadata(self, request: Request, call: Call) -> Response:
        return JSONResponse({"name": "deepserve", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request, call: Call) -> Response:
        pipeline = self._get(request)
        return JSONResponse(codec.model_metadata(pipeline.name, self._versions(pipeline.name), pipeline.config))

    async def model_config(self, request: Request, call: Call) -> Response:
        """Triton's model configuration extension: the JSON of what gRPC's `ModelConfig` returns."""
        pipeline = self._get(request)
        return JSONResponse(codec.model_config(pipeline.name, self._versions(pipeline.name), pipeline.config))

    async def model_ready(self, request: Request, call: Call) -> Response:
        """200 `{"name", "ready": true}`; a model that is not ready is answered as the error table says of why:
        404 unknown, 503 loading or failed."""
        pipeline = self._get(request)
        return JSONResponse({"name": pipeline.name, "ready": True})

    async def model_infer(self, request: Request, call: Call) -> Response:
        pipeline = self._get(request)
        body = await read_body(request, self.max_body_bytes)
        length = _header_length(request)
        decoded = codec.decode_infer_request(body, length, pipeline.name, pipeline.version, pipeline.limits)
        call.request_id = decoded.request.id
        content, headers = codec.encode_infer_response(await pipeline.infer(decoded.request), decoded.binary)
        return Response(content, headers=headers)

    async def model_stats(self, request: Request, call: Call) -> Response:
        """Triton's statistics extension: every loaded version, or those of the model (and version) in the path."""
        name, version = request.path_params.get("name", ""), request.path_params.get("version", "")
        if name:
            self.registry.get(name, version)  # 404 for an unknown model or version, 503 for one not loaded
        stats = [
            codec.model_statistics(p.name, p.version, p.observer.stats)
            for p in self.registry.loaded()
            if (not name or p.name == name) and (not version or p.version == version)
        ]
        return JSONResponse({"model_stats": stats})

    async def repository_index(self, request: Request, call: Call) -> Response:
        """Triton's model repository extension: every model of the repository with its state (`{"ready": true}`:
        only those that serve)."""
        doc = await self._optional_json(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInputError("'ready' must be true or false")
        return JSONResponse(
            [
                {"name": e.name, "version": e.version, "state": e.state.value, "reason": e.reason}
                for e in self.registry.index()
                if not ready or e.state.value == "READY"
            ]
        )

    async def model_load(self, request: Request, call: Call) -> Response:
        name = self._controlled("load", request)
        parameters = (await self._optional_json(request)).get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInputError("'parameters' must be a JSON object")
        if parameters:  # Triton's `config` and `file:<path>` overrides, or anything else
            raise InvalidInputError(load_parameters_refused(list(parameters)))
        await self.registry.load(name)
        return Response(status_code=HTTPStatus.OK)  # an empty body, as Triton answers

    async def model_unload(self, request: Request, call: Call) -> Response:
        name = self._controlled("unload", request)
        await self._optional_json(request)  # parameters (Triton's unload_dependents) change nothing here
        await self.registry.unload(name)
        return Response(status_code=HTTPStatus.OK)

    def _controlled(self, action: str, request: Request) -> str:
        """Refuse model control unless it is on (403); log who asked."""
        if not self.model_control:
            raise NotEnabledError(MODEL_CONTROL_OFF)
        name = str(request.path_params["name"])
        client = request.client
        peer = f"{client.host}:{client.port}" if client else ""
        log.info(f"model {action} requested", extra={"model": quoted(name), "peer": peer, "api": "http"})
        return name

    async def _optional_json(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, self.max_body_bytes)
        if not body.strip():
            return {}
        doc = codec.parse_json(body, "the request body")
        if not isinstance(doc, dict):
            raise InvalidInputError("the request body must be a JSON object")
        return doc

    def _get(self, request: Request) -> ModelPipeline:
        params = request.path_params
        return self.registry.get(params["name"], params.get("version", ""))

    def _versions(self, name: str) -> list[str]:
        return sorted((p.version for p in self.registry.loaded() if p.name == name), key=int)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over `limit` bytes: by its Content-Length
    before anything is read, or while it arrives (chunked). Compressed bodies are refused."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise InvalidInputError(f"Content-Encoding {encoding!r} is not supported; send the body uncompressed")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared)} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit} bytes", limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> DeepserveError:
    return PayloadTooLargeError(
        f"the request body has {size}; this server accepts at most {limit} (--max-message-bytes); split the request"
    )


def _header_length(request: Request) -> int | None:
    value = request.headers.get(codec.HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InvalidInputError(f"Inference-Header-Content-Length must be a number of bytes, got {value[:32]!r}")
    return int(value)
