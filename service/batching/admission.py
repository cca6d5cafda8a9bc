"""What every `submit` checks before it queues a request, the same for the dynamic batcher and the
generation scheduler: the model is not shutting down, its queue has room, the deadline has not passed."""

from __future__ import annotations

from typing import Protocol

from service.errors import DeadlineExceededError, QueueFullError, UnavailableError


class Rejections(Protocol):
    def rejected(self, reason: str) -> None: ...


def admit(
    name: str,
    observer: Rejections,
    *,
    closed: bool,
    waiting: int,
    limit: tuple[str, int],
    deadline: float | None,
    now: float,
    backlog: int | None = None,
) -> None:
    """Raise the error a request that cannot be queued gets. `waiting` requests are queued; those of them
    that count against `limit` (the setting's name and value) are `backlog`, all unless told."""
    if closed:
        raise UnavailableError(f"model '{name}' is shutting down; retry on another replica")
    setting, most = limit
    if (waiting if backlog is None else backlog) >= most:
        observer.rejected("queue_full")
        raise QueueFullError(
            f"queue full: model '{name}' already has {waiting} requests waiting ({setting} {most}); retry with backoff"
        )
    if deadline is not None and deadline <= now:
        observer.rejected("deadline")
        raise DeadlineExceededError(f"deadline passed before the request to '{name}' was queued")
