"""Domain errors → gRPC status codes: the one table (DESIGN.md), and the boundary that applies it."""

from __future__ import annotations

import logging
import traceback

import grpc

from service.errors import DeepserveError, ErrorCode

log = logging.getLogger(__name__)

STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.QUOTA_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.NOT_ENABLED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}
DEADLINE_SLACK_S = 0.05
GENERIC_INTERNAL = "internal error; it was logged on the server"
MAX_ID_SHOWN = 64


def status_of(err: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """The status and the user-facing message for an exception raised while serving a request.

    The finished frames in its traceback are cleared (after logging): an exception that went through a
    future or a thread sits in a reference cycle with those frames, which would keep the request's data
    (a 60 MB text) alive until the cycle collector happens to run."""
    try:
        return _status_of(err, request_id)
    finally:
        traceback.clear_frames(err.__traceback__)


def _status_of(err: BaseException, request_id: str) -> tuple[grpc.StatusCode, str]:
    if isinstance(err, DeepserveError):
        code = STATUS[err.code]
        if code is grpc.StatusCode.INTERNAL:
            log.error("request failed", extra={"request_id": request_id, "error": err.message})
            return code, _with_id(err.message, request_id)
        # the caller's mistake or the server's load: one line at debug level, so overload cannot flood logs
        log.debug("request refused", extra={"request_id": request_id, "code": code.name, "error": err.message})
        return code, err.message
    log.error("unexpected error", extra={"request_id": request_id}, exc_info=err)
    return grpc.StatusCode.INTERNAL, _with_id(GENERIC_INTERNAL, request_id)


def _with_id(message: str, request_id: str) -> str:
    """An INTERNAL message with the request's id, which the log line carries too. Cut short: the client chose it,
    and a message past gRPC's metadata limit would reach the client as another error."""
    if not request_id:
        return message
    shown = request_id if len(request_id) <= MAX_ID_SHOWN else f"{request_id[:MAX_ID_SHOWN]}…"
    return f"{message} (request id {shown})"


def fail(context: grpc.aio.ServicerContext, err: BaseException, request_id: str = "") -> str:
    """End the call with the status for `err` once the handler returns (it then returns None); returns the
    status name. Unlike `context.abort`, which raises, this leaves no exception that holds the handler's
    frame, and with it the request (a 60 MB text), in a reference cycle after the call ends."""
    status, message = status_of(err, request_id)
    context.set_code(status)
    context.set_details(message)
    return status.name


def cancelled_status(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why gRPC cancelled a handler: its deadline passed (the client sees DEADLINE_EXCEEDED), or the client
    cancelled or went away. A client's own deadline timer fires a little before the server's copy of the
    deadline (which starts when the request arrives), and the client then resets the stream: a cancel
    that close to the deadline is the deadline."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
