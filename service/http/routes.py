"""The HTTP port's routes, described once (a declarative table): `OPERATIONS` is what `server.build_app` builds its
routes from and what `/openapi.json` describes (`openapi.document`). A route added to the app without a description
here cannot exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.errors import ErrorCode
from service.http.schemas import TIMEOUT_DESCRIPTION, TIMEOUT_SCHEMA, Schema, json_content, ref

BINARY: Schema = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    handler: str
    """The handler's name on `V2Api` or `TaskRoutes`; also the route's name in `auth.SCOPES`."""
    tag: str
    summary: str
    description: str
    responses: dict[str, Any]
    """The success response(s): status → OpenAPI response object."""
    errors: tuple[ErrorCode, ...] = ()
    """What the route can fail with besides the token checks (added when tokens are on) and 500 (always)."""
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None
    """The OpenAPI request body object."""
    operation_id: str = ""

    @property
    def id(self) -> str:
        return self.operation_id or self.handler


V2, TASKS = "KServe V2", "Tasks"
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "description": "model name"}
VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
    "description": "model version",
}
MODEL_ERRORS = (ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE)
RUN_ERRORS = (
    ErrorCode.INVALID_INPUT,
    ErrorCode.TOO_LARGE,
    ErrorCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE,
    ErrorCode.QUEUE_FULL,
    ErrorCode.DEADLINE_EXCEEDED,
)


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": description, "content": content}}


def _model_ops(prefix: str, versioned: bool) -> list[Operation]:
    params = (NAME, VERSION) if versioned else (NAME,)
    which = "the given version of a model" if versioned else "a model (its newest loaded version)"
    suffix = "_version" if versioned else ""
    infer_body = {
        "required": True,
        "description": "JSON tensors; or Triton's binary data extension: the JSON header (its length in the "
        "`Inference-Header-Content-Length` header), then each input with a `binary_data_size` parameter, in order.",
        "content": {
            **json_content(
                ref("InferRequest"),
                {"inputs": [{"name": "token_ids", "shape": [1, 4], "datatype": "INT64", "data": [[5, 6, 7, 8]]}]},
            ),
            "application/octet-stream": {"schema": BINARY},
        },
    }
    infer_ok = {
        "description": "the outputs; as binary data (`application/octet-stream`, with `Inference-Header-Content-"
        "Length`) when the request asked for `binary_data` outputs",
        "content": {**json_content(ref("InferResponse")), "application/octet-stream": {"schema": BINARY}},
    }
    header = {
        "name": "Inference-Header-Content-Length",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "binary data extension: bytes of JSON at the start of the body",
    }
    return [
        Operation(
            f"{prefix}/stats",
            "get",
            "model_stats",
            V2,
            f"Statistics of {which}" if versioned else "Statistics of a model's loaded versions",
            "Triton's statistics extension: counts, and cumulative durations in nanoseconds.",
            _ok("one entry per version", json_content(ref("ModelStatisticsResponse"))),
            MODEL_ERRORS,
            params,
            operation_id=f"model{suffix}_stats",
        ),
        Operation(
            prefix,
            "get",
            "model_metadata",
            V2,
            f"Metadata of {which}",
            "Inputs and outputs with datatypes and shapes (-1: variable; the batch dimension first when the "
            "model batches), and the versions loaded.",
            _ok("the model's metadata", json_content(ref("ModelMetadata"))),
            MODEL_ERRORS,
            params,
            operation_id=f"model{suffix}_metadata",
        ),
        Operation(
            f"{prefix}/config",
            "get",
            "model_config",
            V2,
            f"Configuration of {which}",
            "Triton's model configuration extension: the JSON of what gRPC's `ModelConfig` returns (the model's "
            "inputs and outputs with their dims, without the batch dimension; `max_batch_size`; dynamic batching; "
            "instances), as `tritonclient.http`'s `get_model_config` and perf_analyzer read it.",
            _ok("the model's configuration", json_content(ref("ModelConfig"))),
            MODEL_ERRORS,
            params,
            operation_id=f"model{suffix}_config",
        ),
        Operation(
            f"{prefix}/ready",
            "get",
            "model_ready",
            V2,
            f"Whether {which} is ready",
            "200 when it serves; otherwise the error that says why (404 unknown, 503 loading or failed).",
            _ok("ready", json_content(ref("ModelReady"))),
            MODEL_ERRORS,
            params,
            operation_id=f"model{suffix}_ready",
        ),
        Operation(
            f"{prefix}/infer",
            "post",
            "model_infer",
            V2,
            f"Run {which}",
            "Inputs are batched with other requests. The `timeout` parameter (µs) bounds the time in the queue.",
            {"200": infer_ok},
            RUN_ERRORS,
            (*params, header),
            infer_body,
            operation_id=f"model{suffix}_infer",
        ),
    ]


MODEL_QUERY = (
    {
        "name": "model",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "model name; default: the server's image_classification model",
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "model version; default: the newest loaded",
    },
)
TIMEOUT_MS = {
    "name": "timeout_ms",
    "in": "query",
    "required": False,
    "schema": TIMEOUT_SCHEMA,
    "description": TIMEOUT_DESCRIPTION,
}
TOP_K = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "labels per image, most probable first; 0 (default): 5, or every class if fewer",
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v2",
        "get",
        "server_metadata",
        V2,
        "Server metadata",
        "Name, version and protocol extensions.",
        _ok("the server's metadata", json_content(ref("ServerMetadata"))),
    ),
    Operation(
        "/v2/health/live",
        "get",
        "server_live",
        V2,
        "Liveness",
        "200 once the server runs; needs no token.",
        _ok("live", json_content(ref("Live"))),
    ),
    Operation(
        "/v2/health/ready",
        "get",
        "server_ready",
        V2,
        "Readiness",
        "200 while every model the server is meant to serve is loaded (strict readiness); 503 before, and "
        "while draining. Needs no token.",
        {
            **_ok("ready", json_content(ref("Ready"))),
            "503": {"description": "not ready", "content": json_content(ref("Ready"))},
        },
    ),
    # before /v2/models/{name}, as in Triton: a model named "stats" has no metadata route over HTTP
    Operation(
        "/v2/models/stats",
        "get",
        "model_stats",
        V2,
        "Statistics of every loaded model version",
        "Triton's statistics extension: counts, and cumulative durations in nanoseconds.",
        _ok("one entry per loaded version", json_content(ref("ModelStatisticsResponse"))),
        operation_id="all_model_stats",
    ),
    Operation(
        "/v2/repository/index",
        "post",
        "repository_index",
        V2,
        "The models of the repository and their states",
        'Triton\'s model repository extension; `{"ready": true}` lists only the versions that serve. The body '
        "may be empty.",
        _ok(
            "one entry per model version (or per model that failed to load)",
            json_content({"type": "array", "items": ref("RepositoryIndexEntry")}),
        ),
        (ErrorCode.INVALID_INPUT, ErrorCode.TOO_LARGE),
        body={"required": False, "content": json_content(ref("RepositoryIndexRequest"), {"ready": True})},
    ),
    *[
        Operation(
            f"/v2/repository/models/{{name}}/{action}",
            "post",
            f"model_{action}",
            V2,
            f"{action.capitalize()} a model",
            f"Triton's model repository extension: {what} Only with `--model-control-mode explicit` (else 403); "
            "the `admin` scope when the server checks tokens. Answers 200 with an empty body.",
            {"200": {"description": f"{action}ed"}},
            (
                ErrorCode.INVALID_INPUT,
                ErrorCode.NOT_ENABLED,
                ErrorCode.NOT_FOUND,
                ErrorCode.UNAVAILABLE,
                ErrorCode.TOO_LARGE,
            ),
            (NAME,),
            {"required": False, "content": json_content(ref("RepositoryModelRequest"))},
        )
        for action, what in [
            (
                "load",
                "(re)load the model's versions from the repository; a failed reload keeps the old version "
                "serving. `parameters` (Triton's config and file overrides) are refused.",
            ),
            ("unload", "stop serving the model once its requests in flight have finished."),
        ]
    ],
    *_model_ops("/v2/models/{name}", versioned=False),
    *_model_ops("/v2/models/{name}/versions/{version}", versioned=True),
    Operation(
        "/v1/classify",
        "post",
        "classify",
        TASKS,
        "Classify images",
        "One image as the body, or several as `multipart/form-data` file parts (in order; a `top_k` field may "
        "come along). PNG, JPEG, BMP, GIF or WebP; decoded, resized and normalised the way the model says.",
        _ok("the labels of each image, in order", json_content(ref("ClassifyResponse"))),
        RUN_ERRORS,
        (TOP_K, *MODEL_QUERY, TIMEOUT_MS),
        {
            "required": True,
            "content": {
                "image/*": {"schema": BINARY},
                "application/octet-stream": {"schema": BINARY},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {"type": "array", "items": BINARY, "minItems": 1},
                            "top_k": {"type": "integer", "minimum": 0},
                        },
                    }
                },
            },
        },
    ),
    Operation(
        "/v1/sentiment",
        "post",
        "sentiment",
        TASKS,
        "Analyze the sentiment of texts",
        "One answer per text, in order: the most probable label and every label's probability. The "
        "Content-Type is not looked at (`curl -d` works).",
        _ok("one sentiment per text", json_content(ref("SentimentResponse"))),
        RUN_ERRORS,
        (),
        {"required": True, "content": json_content(ref("SentimentRequest"), {"texts": ["What a wonderful day"]})},
    ),
    Operation(
        "/v1/generate",
        "post",
        "generate",
        TASKS,
        "Generate text",
        'The continuation of a prompt, whole; or, with `"stream": true`, as Server-Sent Events: an '
        "`event: delta` (`GenerationDelta`) per piece of text as it is generated, then one `event: finished` "
        "(`GenerationFinished`), or `event: error` (`GenerationStreamError`) should it fail after the stream "
        "began. A client that disconnects cancels the generation.",
        _ok(
            "the generated text, or its stream",
            {
                **json_content(ref("GenerateResponse")),
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-events": {
                        "delta": ref("GenerationDelta"),
                        "finished": ref("GenerationFinished"),
                        "error": ref("GenerationStreamError"),
                    },
                },
            },
        ),
        RUN_ERRORS,
        (),
        {
            "required": True,
            "content": json_content(
                ref("GenerateRequest"), {"prompt": "import os", "max_new_tokens": 16, "stream": True}
            ),
        },
    ),
)
"""Every API route of the HTTP port (`/openapi.json` and `/docs` themselves are not listed)."""
