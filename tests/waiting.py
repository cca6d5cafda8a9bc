"""Waiting, in tests, for something the server does in the background (a metric, a freed slot, a reload)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Whether `condition()` became true within `timeout` seconds (it is asked once more at the end)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
