"""Domain errors. Each carries an `ErrorCode`; `service/grpc/errors.py` maps codes to gRPC statuses and
`service/http/errors.py` to HTTP statuses, one table per protocol; `explain` is what both say to the client.

Messages are written for the user who made the request: say what was wrong and how to fix it.
"""

from __future__ import annotations

import enum
import logging
import traceback

log = logging.getLogger(__name__)
GENERIC_INTERNAL = "internal error; it was logged on the server"
MAX_ID_SHOWN = 64


class ErrorCode(enum.Enum):
    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    QUEUE_FULL = "queue_full"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    TOO_LARGE = "too_large"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    QUOTA_EXCEEDED = "quota_exceeded"
    NOT_ENABLED = "not_enabled"
    INTERNAL = "internal"


class DeepserveError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(DeepserveError):
    code = ErrorCode.INVALID_INPUT


class ModelNotFoundError(DeepserveError):
    code = ErrorCode.NOT_FOUND


class UnavailableError(DeepserveError):
    """Model loading or not ready, or the server is draining."""

    code = ErrorCode.UNAVAILABLE


class QueueFullError(DeepserveError):
    code = ErrorCode.QUEUE_FULL


class DeadlineExceededError(DeepserveError):
    code = ErrorCode.DEADLINE_EXCEEDED


class PayloadTooLargeError(DeepserveError):
    code = ErrorCode.TOO_LARGE


class UnauthenticatedError(DeepserveError):
    """No credentials, credentials that do not parse, or a token the server does not know."""

    code = ErrorCode.UNAUTHENTICATED


class PermissionDeniedError(DeepserveError):
    """A known token without the scope the call needs."""

    code = ErrorCode.PERMISSION_DENIED


class QuotaExceededError(DeepserveError):
    """A token already has as many calls in flight as its `max_concurrent_requests` allows."""

    code = ErrorCode.QUOTA_EXCEEDED


class NotEnabledError(DeepserveError):
    """The server was not started with what the call needs (model control off): no credentials or retry
    changes the answer, only the server's settings."""

    code = ErrorCode.NOT_ENABLED


class InferenceError(DeepserveError):
    """The model failed on a batch; the details are logged, the user gets a generic message."""

    code = ErrorCode.INTERNAL


class ModelLoadError(DeepserveError):
    """A model could not be loaded: bad config, missing file, graph mismatch. Names the model and the fix."""

    code = ErrorCode.UNAVAILABLE


class ConfigError(Exception):
    """Server start-up configuration is wrong (e.g. --device cuda without CUDA)."""


class BindError(OSError):
    """A listening port that cannot be bound (in use, not allowed, an address not on this host). The message is
    one line naming the port and the setting (`ServerSettings` field) that chose it, as a flag and as its
    environment variable, so the user knows what to change."""

    def __init__(self, what: str, address: str, setting: str, reason: str) -> None:
        flag, env = f"--{setting.replace('_', '-')}", f"DEEPSERVE_{setting.upper()}"
        super().__init__(f"cannot bind {what} {address} ({reason}); choose another with {flag} or {env}")
        self.setting = setting


def quoted(value: str | bytes, limit: int = 64) -> str:
    """`value` quoted as Python would (`'name'`), for an error message that echoes what a client sent.

    Cut after `limit` characters with "…(N more characters)": a client string can be megabytes long, and a
    message that echoes it whole outgrows gRPC's metadata limit, so the client would get RESOURCE_EXHAUSTED
    instead of the error it deserves. Control characters come out escaped; bytes that are not UTF-8 as \\xNN.
    """
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}…({len(text) - limit} more characters)"


def explain(err: BaseException, request_id: str = "") -> tuple[ErrorCode, str]:
    """The code and the user-facing message for an exception raised while serving a request, whatever the protocol.

    The caller's mistakes and the server's load are logged as one line at debug level (overload cannot flood the
    log); internal errors at error level, unexpected exceptions with their traceback, and the client gets a generic
    message with the request's id. The finished frames in the traceback are cleared (after logging): an exception
    that went through a future or a thread sits in a reference cycle with those frames, which would keep the
    request's data (a 60 MB text) alive until the cycle collector happens to run."""
    try:
        return _explain(err, request_id)
    finally:
        traceback.clear_frames(err.__traceback__)


def _explain(err: BaseException, request_id: str) -> tuple[ErrorCode, str]:
    if isinstance(err, DeepserveError):
        if err.code is ErrorCode.INTERNAL:
            log.error("request failed", extra={"request_id": request_id, "error": err.message})
            return err.code, _with_id(err.message, request_id)
        log.debug("request refused", extra={"request_id": request_id, "code": err.code.value, "error": err.message})
        return err.code, err.message
    log.error("unexpected error", extra={"request_id": request_id}, exc_info=err)
    return ErrorCode.INTERNAL, _with_id(GENERIC_INTERNAL, request_id)


def _with_id(message: str, request_id: str) -> str:
    """An internal error's message with the request's id, which the log line carries too. Cut short: the client chose
    it, and a message past gRPC's metadata limit would reach the client as another error."""
    if not request_id:
        return message
    shown = request_id if len(request_id) <= MAX_ID_SHOWN else f"{request_id[:MAX_ID_SHOWN]}…"
    return f"{message} (request id {shown})"
