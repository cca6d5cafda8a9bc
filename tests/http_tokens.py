"""The tokens file of the HTTP tests: a `reader` (scope infer, one request at a time) and an `ops` token."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import yaml

TOKEN = secrets.token_urlsafe(24)
"""The reader's: scope infer, `max_concurrent_requests: 1`."""
OPS = secrets.token_urlsafe(24)
"""Scope admin only."""


def tokens_file(folder: Path) -> Path:
    path = folder / "tokens.yaml"
    entries = [
        {
            "name": "reader",
            "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "scopes": ["infer"],
            "max_concurrent_requests": 1,
        },
        {"name": "ops", "sha256": hashlib.sha256(OPS.encode()).hexdigest(), "scopes": ["admin"]},
    ]
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return path
