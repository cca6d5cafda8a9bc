"""The HTTP port's routes, described once: `OPERATIONS` is the table `server.build_app` builds its routes from and
the OpenAPI 3.1 document (`/openapi.json`) is generated from, with the request and response schemas below, the
scopes of `auth.SCOPES` and the statuses of the one error table (`errors.STATUS`). A route added to the app without
a description here cannot exist; the tests validate the document and every real answer against its schema.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from service import __version__
from service.auth import Scope
from service.batching.sequences import FinishReason
from service.errors import ErrorCode
from service.http.auth import SCOPES, UNLISTED
from service.http.errors import STATUS
from service.http.tasks import MAX_TIMEOUT_MS
from service.types import ModelState

OPENAPI_VERSION = "3.1.0"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"application/json": content}


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
            **_json(
                ref("InferRequest"),
                {"inputs": [{"name": "token_ids", "shape": [1, 4], "datatype": "INT64", "data": [[5, 6, 7, 8]]}]},
            ),
            "application/octet-stream": {"schema": BINARY},
        },
    }
    infer_ok = {
        "description": "the outputs; as binary data (`application/octet-stream`, with `Inference-Header-Content-"
        "Length`) when the request asked for `binary_data` outputs",
        "content": {**_json(ref("InferResponse")), "application/octet-stream": {"schema": BINARY}},
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
            _ok("one entry per version", _json(ref("ModelStatisticsResponse"))),
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
            _ok("the model's metadata", _json(ref("ModelMetadata"))),
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
            _ok("the model's configuration", _json(ref("ModelConfig"))),
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
            _ok("ready", _json(ref("ModelReady"))),
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
TIMEOUT_DESCRIPTION = (
    "milliseconds this request may take, as a gRPC deadline: its time in the queue, and a generation to its end "
    "(504 when it passes; in a stream, an `error` event after the text so far)"
)
TIMEOUT_SCHEMA: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_MS}
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
        _ok("the server's metadata", _json(ref("ServerMetadata"))),
    ),
    Operation(
        "/v2/health/live",
        "get",
        "server_live",
        V2,
        "Liveness",
        "200 once the server runs; needs no token.",
        _ok("live", _json(ref("Live"))),
    ),
    Operation(
        "/v2/health/ready",
        "get",
        "server_ready",
        V2,
        "Readiness",
        "200 while every model the server is meant to serve is loaded (strict readiness); 503 before, and "
        "while draining. Needs no token.",
        {**_ok("ready", _json(ref("Ready"))), "503": {"description": "not ready", "content": _json(ref("Ready"))}},
    ),
    # before /v2/models/{name}, as in Triton: a model named "stats" has no metadata route over HTTP
    Operation(
        "/v2/models/stats",
        "get",
        "model_stats",
        V2,
        "Statistics of every loaded model version",
        "Triton's statistics extension: counts, and cumulative durations in nanoseconds.",
        _ok("one entry per loaded version", _json(ref("ModelStatisticsResponse"))),
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
            _json({"type": "array", "items": ref("RepositoryIndexEntry")}),
        ),
        (ErrorCode.INVALID_INPUT, ErrorCode.TOO_LARGE),
        body={"required": False, "content": _json(ref("RepositoryIndexRequest"), {"ready": True})},
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
            {"required": False, "content": _json(ref("RepositoryModelRequest"))},
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
        _ok("the labels of each image, in order", _json(ref("ClassifyResponse"))),
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
        _ok("one sentiment per text", _json(ref("SentimentResponse"))),
        RUN_ERRORS,
        (),
        {"required": True, "content": _json(ref("SentimentRequest"), {"texts": ["What a wonderful day"]})},
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
                **_json(ref("GenerateResponse")),
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
            "content": _json(ref("GenerateRequest"), {"prompt": "import os", "max_new_tokens": 16, "stream": True}),
        },
    ),
)
"""Every API route of the HTTP port (`/openapi.json` and `/docs` themselves are not listed)."""

ERROR_MEANING: dict[ErrorCode, str] = {
    ErrorCode.INVALID_INPUT: "invalid input",
    ErrorCode.NOT_FOUND: "unknown model or version",
    ErrorCode.UNAVAILABLE: "model loading or failed, or the server draining",
    ErrorCode.QUEUE_FULL: "queue full",
    ErrorCode.DEADLINE_EXCEEDED: "the request's deadline passed (V2: `timeout` while queued; tasks: `timeout_ms`)",
    ErrorCode.TOO_LARGE: "body over --max-message-bytes",
    ErrorCode.UNAUTHENTICATED: "no or unknown token",
    ErrorCode.PERMISSION_DENIED: "token without the scope",
    ErrorCode.QUOTA_EXCEEDED: "the token's max_concurrent_requests reached",
    ErrorCode.NOT_ENABLED: "turned off by the server's settings",
    ErrorCode.INTERNAL: "unexpected error (details in the server's log)",
}
TOKEN_ERRORS = (ErrorCode.UNAUTHENTICATED, ErrorCode.PERMISSION_DENIED, ErrorCode.QUOTA_EXCEEDED)

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
PARAMETERS: Schema = {"type": "object", "additionalProperties": {"type": ["string", "number", "integer", "boolean"]}}
TENSOR_DATA: Schema = {
    "description": "row-major values, flat or nested; BYTES as strings",
    "type": ["array", "number", "integer", "boolean", "string"],
}


def _object(properties: dict[str, Schema], required: list[str], description: str = "") -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "required": required}
    if description:
        schema["description"] = description
    return schema


STRING, INTEGER, NUMBER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
MODEL_NAME = {"model_name": STRING, "model_version": STRING}
STAT_KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
FINISHED: dict[str, Schema] = {
    "finish_reason": {"type": "string", "enum": [r.value for r in FinishReason]},
    "prompt_tokens": COUNT,
    "generated_tokens": COUNT,
    "prompt_truncated": BOOLEAN,
    **MODEL_NAME,
}


def _tensor(description: str) -> Schema:
    """A V2 tensor in a request or a response: the same fields either way."""
    return _object(
        {
            "name": STRING,
            "shape": {"type": "array", "items": COUNT},
            "datatype": {"type": "string", "enum": DATATYPES},
            "parameters": PARAMETERS,
            "data": TENSOR_DATA,
        },
        ["name", "shape", "datatype"],
        description,
    )


SCHEMAS: dict[str, Schema] = {
    "Error": _object({"error": STRING}, ["error"], "every error's body, with the status from the one HTTP table"),
    "Live": _object({"live": BOOLEAN}, ["live"]),
    "Ready": _object({"ready": BOOLEAN}, ["ready"]),
    "ModelReady": _object({"name": STRING, "ready": BOOLEAN}, ["name", "ready"]),
    "ServerMetadata": _object(
        {"name": STRING, "version": STRING, "extensions": {"type": "array", "items": STRING}},
        ["name", "version", "extensions"],
    ),
    "TensorMetadata": _object(
        {
            "name": STRING,
            "datatype": {"type": "string", "enum": DATATYPES},
            "shape": {"type": "array", "items": INTEGER},
        },
        ["name", "datatype", "shape"],
    ),
    "ModelMetadata": _object(
        {
            "name": STRING,
            "versions": {"type": "array", "items": STRING},
            "platform": STRING,
            "inputs": {"type": "array", "items": ref("TensorMetadata")},
            "outputs": {"type": "array", "items": ref("TensorMetadata")},
        },
        ["name", "versions", "platform", "inputs", "outputs"],
    ),
    "ConfigTensor": _object(
        {
            "name": STRING,
            "data_type": {"type": "string", "enum": [f"TYPE_{d}" for d in DATATYPES if d != "BYTES"] + ["TYPE_STRING"]},
            "dims": {"type": "array", "items": INTEGER},
        },
        ["name", "data_type", "dims"],
    ),
    "ModelConfig": _object(
        {
            "name": STRING,
            "platform": STRING,
            "backend": STRING,
            "version_policy": _object(
                {"specific": _object({"versions": {"type": "array", "items": INTEGER}}, ["versions"])}, ["specific"]
            ),
            "max_batch_size": COUNT,
            "input": {"type": "array", "items": ref("ConfigTensor")},
            "output": {"type": "array", "items": ref("ConfigTensor")},
            "instance_group": {
                "type": "array",
                "items": _object(
                    {"name": STRING, "count": COUNT, "kind": {"type": "string", "enum": ["KIND_CPU"]}},
                    ["name", "count", "kind"],
                ),
            },
            "default_model_filename": STRING,
            "dynamic_batching": _object(
                {
                    "preferred_batch_size": {"type": "array", "items": INTEGER},
                    "max_queue_delay_microseconds": COUNT,
                    "default_queue_policy": _object(
                        {
                            "max_queue_size": COUNT,
                            "default_timeout_microseconds": COUNT,
                            "allow_timeout_override": BOOLEAN,
                        },
                        ["max_queue_size"],
                    ),
                },
                ["preferred_batch_size", "max_queue_delay_microseconds", "default_queue_policy"],
                "present when the model batches dynamically",
            ),
        },
        [
            "name",
            "platform",
            "backend",
            "version_policy",
            "max_batch_size",
            "input",
            "output",
            "instance_group",
            "default_model_filename",
        ],
        "Triton's model configuration (the JSON of inference.ModelConfig)",
    ),
    "InferInput": _tensor("`data`, or the parameter `binary_data_size` (binary data extension)"),
    "InferRequestedOutput": _object(
        {"name": STRING, "parameters": PARAMETERS},
        ["name"],
        "parameter `binary_data`: answer this output as binary data",
    ),
    "InferRequest": _object(
        {
            "id": STRING,
            "parameters": PARAMETERS,
            "inputs": {"type": "array", "items": ref("InferInput"), "minItems": 1},
            "outputs": {"type": "array", "items": ref("InferRequestedOutput")},
        },
        ["inputs"],
        "parameters: `timeout` (µs in the queue at most), `binary_data_output`",
    ),
    "InferOutput": _tensor("`data` (flat, row-major), or the parameter `binary_data_size`"),
    "InferResponse": _object(
        {**MODEL_NAME, "id": STRING, "outputs": {"type": "array", "items": ref("InferOutput")}},
        ["model_name", "model_version", "outputs"],
    ),
    "Label": _object({"label": STRING, "probability": NUMBER, "index": COUNT}, ["label", "probability", "index"]),
    "ClassifyResponse": _object(
        {
            **MODEL_NAME,
            "classifications": {
                "type": "array",
                "items": _object({"labels": {"type": "array", "items": ref("Label")}}, ["labels"]),
            },
        },
        ["model_name", "model_version", "classifications"],
        "one entry per image, in order",
    ),
    "SentimentRequest": _object(
        {
            "texts": {"type": "array", "items": STRING, "minItems": 1},
            "model": {**STRING, "description": "default: the server's sentiment model"},
            "version": {**STRING, "description": "default: the newest loaded"},
            "timeout_ms": {**TIMEOUT_SCHEMA, "description": TIMEOUT_DESCRIPTION},
        },
        ["texts"],
    ),
    "Sentiment": _object(
        {
            "label": STRING,
            "probability": NUMBER,
            "tokens": COUNT,
            "truncated": BOOLEAN,
            "scores": {
                "type": "array",
                "items": _object({"label": STRING, "probability": NUMBER}, ["label", "probability"]),
            },
        },
        ["label", "probability", "tokens", "truncated", "scores"],
    ),
    "SentimentResponse": _object(
        {**MODEL_NAME, "sentiments": {"type": "array", "items": ref("Sentiment")}},
        ["model_name", "model_version", "sentiments"],
        "one entry per text, in order",
    ),
    "GenerateRequest": _object(
        {
            "prompt": {"type": "string", "minLength": 1, "description": "longer than the context: its last tokens"},
            "max_new_tokens": {**COUNT, "description": "0 (default): the model's default"},
            "temperature": {
                "type": "number",
                "minimum": 0,
                "maximum": 10,
                "description": "0: greedy; default: the model's (generation.default_temperature)",
            },
            "top_k": {**COUNT, "description": "sample among the k most probable tokens; 0: no limit"},
            "top_p": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "description": "nucleus sampling; default: the model's (generation.default_top_p)",
            },
            "seed": {**COUNT, "description": "the same seed, prompt and parameters give the same text"},
            "repetition_penalty": {
                "type": "number",
                "minimum": 1,
                "maximum": 10,
                "description": "tokens already generated get their logits divided by it (multiplied when negative); "
                "1: none; default: the model's (generation.default_repetition_penalty)",
            },
            "stop": {
                "type": ["string", "array"],
                "items": STRING,
                "maxItems": 8,
                "description": "stop when the text contains one of these (not returned)",
            },
            "model": {**STRING, "description": "default: the server's text_generation model"},
            "version": {**STRING, "description": "default: the newest loaded"},
            "stream": {"type": "boolean", "default": False, "description": "answer with Server-Sent Events"},
            "timeout_ms": {**TIMEOUT_SCHEMA, "description": TIMEOUT_DESCRIPTION},
        },
        ["prompt"],
    ),
    "RepositoryIndexRequest": _object(
        {"ready": {"type": "boolean", "default": False, "description": "only the versions that serve"}}, []
    ),
    "RepositoryIndexEntry": _object(
        {
            "name": STRING,
            "version": STRING,
            "state": {"type": "string", "enum": [s.value for s in ModelState]},
            "reason": STRING,
        },
        ["name", "version", "state", "reason"],
    ),
    "RepositoryModelRequest": _object({"parameters": PARAMETERS}, []),
    "StatisticDuration": _object({"count": COUNT, "ns": COUNT}, ["count", "ns"]),
    "ModelStatistics": _object(
        {
            "name": STRING,
            "version": STRING,
            "last_inference": {**COUNT, "description": "milliseconds since the epoch"},
            "inference_count": COUNT,
            "execution_count": COUNT,
            "inference_stats": _object({k: ref("StatisticDuration") for k in STAT_KINDS}, list(STAT_KINDS)),
            "batch_stats": {
                "type": "array",
                "items": _object(
                    {"batch_size": COUNT, **{k: ref("StatisticDuration") for k in STAT_KINDS[3:]}},
                    ["batch_size", *STAT_KINDS[3:]],
                ),
            },
        },
        ["name", "version", "last_inference", "inference_count", "execution_count", "inference_stats", "batch_stats"],
    ),
    "ModelStatisticsResponse": _object(
        {"model_stats": {"type": "array", "items": ref("ModelStatistics")}}, ["model_stats"]
    ),
    "GenerateResponse": _object({"text": STRING, **FINISHED}, ["text", *FINISHED]),
    "GenerationDelta": _object({"text": STRING}, ["text"], "`event: delta`: new text to append"),
    "GenerationFinished": _object(FINISHED, list(FINISHED), "`event: finished`, the last event"),
    "GenerationStreamError": _object(
        {"error": STRING, "status": INTEGER},
        ["error", "status"],
        "`event: error`: the generation failed after the stream began",
    ),
}
for _schema in SCHEMAS.values():  # every object here is closed, as the handlers refuse unknown fields
    _schema["additionalProperties"] = False


def _errors(op: Operation, auth: bool) -> dict[str, Any]:
    codes = [*op.errors, ErrorCode.INTERNAL]
    if auth and SCOPES.get(op.handler, UNLISTED) is not None:
        codes += TOKEN_ERRORS
    by_status: dict[int, list[str]] = {}
    for code in codes:
        meanings = by_status.setdefault(int(STATUS[code]), [])
        if ERROR_MEANING[code] not in meanings:
            meanings.append(ERROR_MEANING[code])
    return {
        str(status): {"description": "; ".join(meanings), "content": _json(ref("Error"))}
        for status, meanings in sorted(by_status.items())
    }


def _operation(op: Operation, auth: bool) -> dict[str, Any]:
    scope = SCOPES.get(op.handler, UNLISTED)
    doc: dict[str, Any] = {"operationId": op.id, "tags": [op.tag], "summary": op.summary, "description": op.description}
    if op.parameters:
        doc["parameters"] = list(op.parameters)
    if op.body is not None:
        doc["requestBody"] = op.body
    doc["responses"] = {**op.responses, **_errors(op, auth)}
    if auth:
        doc["security"] = [] if scope is None else [{"bearer": [scope.value]}]
    doc["x-scope"] = None if scope is None else scope.value
    return doc


@functools.cache
def document(auth: bool) -> dict[str, Any]:
    """The OpenAPI document; `auth`: whether the server checks tokens (then operations say which scope they need,
    and list 401/403/429)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, auth)
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "deepserve",
            "version": __version__,
            "description": "KServe V2 REST (the Open Inference Protocol; `tritonclient.http` works unchanged) and "
            "task endpoints on ONNX Runtime models. The same models answer gRPC on the gRPC port. Errors are "
            '`{"error": "<message>"}`.',
        },
        "tags": [
            {"name": TASKS, "description": "images, texts and prompts in; labels and generated text out"},
            {"name": V2, "description": "tensors in and out: the Open Inference Protocol over HTTP"},
        ],
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "a token from the server's --auth-tokens-file; scopes: "
                + ", ".join(s.value for s in Scope),
            },
        }
    return doc
