"""Domain errors → gRPC status codes: the one table (DESIGN.md), and the boundary that applies it."""

from __future__ import annotations

import asyncio

import grpc

from service.errors import GENERIC_INTERNAL, ErrorCode, explain

__all__ = ["GENERIC_INTERNAL", "STATUS", "cancelled_status", "fail", "gone_by_deadline", "status_of"]

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


def status_of(err: BaseException, request_id: str = "") -> tuple[grpc.StatusCode, str]:
    """The status and the user-facing message for an exception raised while serving a request (`explain`)."""
    code, message = explain(err, request_id)
    return STATUS[code], message


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


async def gone_by_deadline(context: grpc.aio.ServicerContext) -> None:
    """A handler that failed with DEADLINE_EXCEEDED at its deadline: wait for gRPC to end the call itself (its
    deadline timer, or the client's reset after the client's own timer), up to `DEADLINE_SLACK_S` past the deadline;
    this coroutine is then cancelled, and the client has its DEADLINE_EXCEEDED. Answering at the same moment races
    that end: a status sent into a call that gRPC's core has just ended fails there, and grpc.aio logs that failure
    as an ERROR with a traceback when it has not yet heard of the end (one to three such calls in a hundred under load).
    A call whose deadline is further off (a request refused early) is answered at once."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= DEADLINE_SLACK_S:
        await asyncio.sleep(remaining + DEADLINE_SLACK_S)
