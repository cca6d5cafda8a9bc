"""Domain errors → gRPC status codes: the one table (DESIGN.md), and the boundary that applies it."""

from __future__ import annotations

import logging

import grpc

from service.errors import DeepserveError, ErrorCode

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorCode.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}
GENERIC_INTERNAL = "internal error; it was logged on the server"


def status_of(err: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """The status and the user-facing message for an exception raised while serving a request."""
    if isinstance(err, DeepserveError):
        code = STATUS[err.code]
        if code is grpc.StatusCode.INTERNAL:
            log.error("request failed", extra={"request_id": request_id, "error": err.message})
        else:  # the caller's mistake or the server's load: one line at debug level, so overload cannot flood logs
            log.debug("request refused", extra={"request_id": request_id, "code": code.name, "error": err.message})
        return code, err.message
    log.error("unexpected error", extra={"request_id": request_id}, exc_info=err)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL + (f" (request id {request_id})" if request_id else "")


def cancelled_status(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why gRPC cancelled a handler: its deadline passed (the client sees DEADLINE_EXCEEDED), or the client
    cancelled or went away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
