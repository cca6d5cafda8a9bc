"""Domain errors → HTTP statuses: the one table for HTTP (`service/grpc/errors.py` has gRPC's), and the JSON
body every error is answered with: `{"error": "<message>"}`, as Triton and KServe answer."""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse

from service.errors import ErrorCode, explain

STATUS: dict[ErrorCode, HTTPStatus] = {
    ErrorCode.INVALID_INPUT: HTTPStatus.BAD_REQUEST,
    ErrorCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.QUEUE_FULL: HTTPStatus.SERVICE_UNAVAILABLE,  # as on gRPC (UNAVAILABLE) and in Triton: retry elsewhere
    ErrorCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    ErrorCode.TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    ErrorCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    ErrorCode.QUOTA_EXCEEDED: HTTPStatus.TOO_MANY_REQUESTS,  # this token's own limit: retry later, not elsewhere
    ErrorCode.NOT_ENABLED: HTTPStatus.FORBIDDEN,  # the server's settings refuse it; no retry changes that
    ErrorCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
}
CLIENT_CLOSED = "499"
"""The status a request is counted under when its client went away before the answer was sent (nginx's)."""
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="deepserve"'}
"""Sent with 401, as RFC 6750 asks."""


def error_response(err: BaseException, request_id: str = "") -> JSONResponse:
    """The response for an exception raised while serving a request (logged as `explain` does)."""
    code, message = explain(err, request_id)
    status = STATUS[code]
    headers = CHALLENGE if status is HTTPStatus.UNAUTHORIZED else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)
