"""KServe V2 REST (the Open Inference Protocol over HTTP, with Triton's binary data extension): thin handlers.

Each one takes the request apart (`codec`), calls the registry or a model's pipeline, the same ones gRPC's
`inference.GRPCInferenceService` calls, and answers JSON. Failures raise domain errors, which the boundary
(`server.py`) answers through the one HTTP table (`errors.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service import __version__
from service.errors import DeepserveError, InvalidInputError, PayloadTooLargeError
from service.http import codec
from service.http.errors import error_response
from service.metrics import UNKNOWN_MODEL, RequestRecorder
from service.pipeline import ModelPipeline
from service.registry import ModelRegistry

API = "http_v2"
"""The `api` label of these requests in the metrics."""
EXTENSIONS = ["binary_tensor_data"]


class V2Api:
    def __init__(
        self, registry: ModelRegistry, recorder: RequestRecorder, is_ready: Callable[[], bool], max_body_bytes: int
    ) -> None:
        self.registry = registry
        self.recorder = recorder
        self.is_ready = is_ready
        self.max_body_bytes = max_body_bytes

    async def server_live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def server_ready(self, request: Request) -> Response:
        ready = bool(self.is_ready())
        return JSONResponse({"ready": ready}, status_code=200 if ready else HTTPStatus.SERVICE_UNAVAILABLE)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "deepserve", "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        pipeline = self._get(request)
        return JSONResponse(codec.model_metadata(pipeline.name, self._versions(pipeline.name), pipeline.config))

    async def model_ready(self, request: Request) -> Response:
        """200 `{"name", "ready": true}`; a model that is not ready is answered as the error table says of why:
        404 unknown, 503 loading or failed."""
        pipeline = self._get(request)
        return JSONResponse({"name": pipeline.name, "ready": True})

    async def model_infer(self, request: Request) -> Response:
        start = time.perf_counter()
        pipeline: ModelPipeline | None = None
        request_id = ""
        try:
            pipeline = self._get(request)  # the model first, so bad requests are still counted under their model
            body = await read_body(request, self.max_body_bytes)
            decoded = codec.decode_infer_request(
                body, _header_length(request), pipeline.name, pipeline.version, pipeline.limits
            )
            request_id = decoded.request.id
            pipeline.in_flight.value += 1
            try:
                result = await pipeline.infer(decoded.request)
            finally:
                pipeline.in_flight.value -= 1
            content, headers = codec.encode_infer_response(result, decoded.binary)
            response: Response = Response(content, headers=headers)
        except Exception as err:  # noqa: BLE001 - every failure gets a status
            response = error_response(err, request_id)
        seconds = time.perf_counter() - start
        code = str(response.status_code)
        if pipeline is None:
            self.recorder.record(UNKNOWN_MODEL, "", API, code, seconds)
        else:
            self.recorder.record(pipeline.name, pipeline.version, API, code, seconds)
            pipeline.observer.request_done(seconds, response.status_code == HTTPStatus.OK)
        return response

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
