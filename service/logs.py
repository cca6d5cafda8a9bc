"""Structured logging: one JSON object per line, with the `extra` fields of each event."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)
REFUSAL_LOG_SECONDS = 10.0
"""At most one WARNING per method (and key) this often for refused requests."""
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        event.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RefusalLog:
    """Logs refused requests as at most one WARNING per method (and `key`) every `seconds`; the next line counts
    the ones left out. Methods are the server's own and keys a bounded set (token names), so the state stays as
    small as the service list times the keys."""

    @dataclass(slots=True)
    class _Method:
        logged_at: float
        left_out: int = 0

    def __init__(
        self,
        seconds: float = REFUSAL_LOG_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        message: str = "refused a request that does not parse (INVALID_ARGUMENT)",
        logger: logging.Logger | None = None,
    ) -> None:
        self.seconds = seconds
        self.clock = clock
        self.message = message
        self.log = logger or log
        self._methods: dict[tuple[str, str], RefusalLog._Method] = {}

    def __call__(self, method: str, reason: str, key: str = "", **fields: object) -> None:
        now = self.clock()
        state = self._methods.get((method, key))
        if state is not None and now - state.logged_at < self.seconds:
            state.left_out += 1
            return
        left_out = state.left_out if state is not None else 0
        self._methods[method, key] = RefusalLog._Method(now)
        self.log.warning(
            self.message,
            extra={
                "method": method,
                "reason": reason,
                **fields,
                "not_logged": left_out,
                "window_seconds": self.seconds,
            },
        )
