"""The opening check of every task request: how many items (images, texts) it carries."""

from __future__ import annotations

from collections.abc import Sized

from service.errors import InvalidInputError


def check_item_count(items: Sized, kind: str, max_items: int) -> None:
    """At least one item, and at most the model's `limits.max_items`; `kind` names them in the message."""
    if not len(items):
        raise InvalidInputError(f"the request has no {kind}; send at least one")
    if len(items) > max_items:
        raise InvalidInputError(
            f"{len(items)} {kind} in one request; send at most {max_items} per request (limits.max_items)"
        )
