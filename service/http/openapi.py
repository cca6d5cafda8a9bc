"""The OpenAPI 3.1 document of the HTTP port (`/openapi.json`), generated from the route table (`routes.OPERATIONS`),
the schemas (`schemas.SCHEMAS`), the scopes of `auth.SCOPES` and the statuses of the one error table
(`errors.STATUS`); the tests validate the document and every real answer against its schema.
"""

from __future__ import annotations

import functools
from typing import Any

from service import __version__
from service.auth import Scope
from service.errors import ErrorCode
from service.http.auth import SCOPES, UNLISTED
from service.http.errors import STATUS
from service.http.routes import OPERATIONS, TASKS, V2, Operation
from service.http.schemas import SCHEMAS, json_content, ref

OPENAPI_VERSION = "3.1.0"
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
        str(status): {"description": "; ".join(meanings), "content": json_content(ref("Error"))}
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
