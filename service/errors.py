"""Domain errors. Each carries an `ErrorCode`; `service/grpc/errors.py` maps codes to gRPC statuses.

Messages are written for the user who made the request: say what was wrong and how to fix it.
"""

from __future__ import annotations

import enum


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
