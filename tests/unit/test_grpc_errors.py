"""The one table from domain errors to gRPC statuses, and what a user sees for unexpected failures."""

from __future__ import annotations

import grpc
import pytest

from service import errors
from service.grpc.errors import GENERIC_INTERNAL, STATUS, status_of


def test_every_error_code_has_a_status() -> None:
    assert set(STATUS) == set(errors.ErrorCode)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidInputError("bad dtype"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.ModelNotFoundError("unknown model"), grpc.StatusCode.NOT_FOUND),
        (errors.UnavailableError("draining"), grpc.StatusCode.UNAVAILABLE),
        (errors.ModelLoadError("model 'm': bad config"), grpc.StatusCode.UNAVAILABLE),
        (errors.QueueFullError("queue full: model 'm'"), grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceededError("deadline passed"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.PayloadTooLargeError("too large"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnauthenticatedError("no credentials"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDeniedError("token 'x' lacks the 'admin' scope"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.QuotaExceededError("token 'x' already has 2 requests in flight"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NotEnabledError("model control is off"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InferenceError("model 'm' failed to run this batch"), grpc.StatusCode.INTERNAL),
    ],
)
def test_domain_errors_keep_their_message(error: errors.DeepserveError, status: grpc.StatusCode) -> None:
    assert status_of(error) == (status, error.message)


def test_unexpected_errors_are_internal_and_generic() -> None:
    status, message = status_of(KeyError("secret /etc/path"), request_id="req-7")
    assert status is grpc.StatusCode.INTERNAL
    assert message == GENERIC_INTERNAL + " (request id req-7)"
    assert "secret" not in message
    assert status_of(RuntimeError("x")) == (grpc.StatusCode.INTERNAL, GENERIC_INTERNAL)
