"""The one table from domain errors to gRPC statuses, and what a user sees for unexpected failures."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from service import errors
from service.grpc.errors import DEADLINE_SLACK_S, GENERIC_INTERNAL, STATUS, gone_by_deadline, status_of


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


class Remaining:
    """What `gone_by_deadline` reads of a grpc.aio ServicerContext: the call's time left (None: no deadline)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def time_remaining(self) -> float | None:
        return self.seconds


@pytest.mark.parametrize("remaining", [None, 1.0, DEADLINE_SLACK_S + 0.01])
def test_a_call_with_time_left_or_no_deadline_is_answered_at_once(remaining: float | None) -> None:
    start = time.monotonic()
    asyncio.run(gone_by_deadline(Remaining(remaining)))  # type: ignore[arg-type]
    assert time.monotonic() - start < DEADLINE_SLACK_S / 2


def test_a_call_past_its_deadline_waits_for_grpc_to_end_it() -> None:
    """gRPC ends the call at its deadline and cancels the handler: that cancellation ends the wait, and the
    handler sends no status of its own into the ended call."""

    async def ended_by_grpc() -> bool:
        waiting = asyncio.ensure_future(gone_by_deadline(Remaining(0.0)))  # type: ignore[arg-type]
        await asyncio.sleep(DEADLINE_SLACK_S / 5)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return True

    assert asyncio.run(ended_by_grpc())
    start = time.monotonic()
    asyncio.run(gone_by_deadline(Remaining(0.0)))  # type: ignore[arg-type]
    assert DEADLINE_SLACK_S <= time.monotonic() - start < 10 * DEADLINE_SLACK_S  # gRPC never ended it: answer
