"""Bearer tokens with scopes: the tokens file, looking a token up, reloading the file, per-token concurrency.

No gRPC here: `service/grpc/auth.py` reads the `authorization` header, picks the scope a method needs
(its one table) and maps the errors raised here through the one error table.

The file (`--auth-tokens-file`) holds SHA-256 digests, never tokens:

    tokens:
      - name: ci-reader                 # logged with refusals and admin calls (the token never is)
        sha256: 9f86d081884c7d65...      # printf %s "$TOKEN" | sha256sum
        scopes: [infer]                  # infer | admin
        max_concurrent_requests: 8       # optional; past it, RESOURCE_EXHAUSTED

A mistake in the file (unknown key, bad digest, duplicate name or digest, unknown scope) is an error that
names the entry (`tokens[2] (name 'x')`) and never echoes a digest: someone may have pasted the token itself.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from service.errors import ConfigError, PermissionDeniedError, QuotaExceededError, UnauthenticatedError
from service.files import signature

log = logging.getLogger(__name__)

RELOAD_CHECK_SECONDS = 1.0
"""The tokens file is looked at (one stat) at most this often, on the request path."""
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
NO_TOKEN = "no credentials: send the metadata `authorization: Bearer <token>`"
MALFORMED = "malformed authorization metadata: send exactly one `authorization: Bearer <token>`"
UNKNOWN_TOKEN = "the bearer token is not valid for this server"


class Scope(str, enum.Enum):
    INFER = "infer"
    """Inference, metadata, config, statistics and index calls, and the task APIs."""
    ADMIN = "admin"
    """Model load and unload (when the server runs with --model-control-mode explicit)."""


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
    """Who holds the token; logged instead of the token."""
    sha256: str
    """Hex SHA-256 digest of the token (64 characters, either case)."""
    scopes: Annotated[tuple[Scope, ...], Field(min_length=1)]
    max_concurrent_requests: Annotated[int, Field(ge=1)] | None = None
    """Calls with this token in flight at once; None: no limit of its own."""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        if not HEX_DIGEST.fullmatch(value):  # the message must not echo the value (it may be the token itself)
            raise ValueError(
                'must be the hex SHA-256 digest of the token, 64 characters 0-9a-f (printf %s "$TOKEN" | sha256sum)'
            )
        return value.lower()


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tokens: tuple[TokenEntry, ...]

    @model_validator(mode="after")
    def _distinct(self) -> TokensFile:
        names: dict[str, int] = {}
        digests: dict[str, int] = {}
        for i, entry in enumerate(self.tokens):
            if entry.name in names:
                raise ValueError(f"{_entry(i, entry.name)}: the name is already used by tokens[{names[entry.name]}]")
            if entry.sha256 in digests:
                first = digests[entry.sha256]
                raise ValueError(
                    f"{_entry(i, entry.name)}: the same sha256 as tokens[{first}] (name {self.tokens[first].name!r}); "
                    "give each client its own token"
                )
            names[entry.name], digests[entry.sha256] = i, i
        return self


def _entry(index: int, name: object) -> str:
    return f"tokens[{index}]" + (f" (name {name!r})" if isinstance(name, str) else "")


def parse_tokens(data: object) -> TokensFile:
    """Validate the parsed YAML; a `ConfigError` names the entry and the key."""
    if not isinstance(data, dict):
        raise ConfigError("the tokens file must be a mapping with a `tokens` list")
    try:
        return TokensFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError("; ".join(_describe(e, data) for e in err.errors())) from None


def _describe(error: ErrorDetails, data: dict) -> str:
    loc = error["loc"]
    if len(loc) >= 2 and loc[0] == "tokens" and isinstance(loc[1], int):
        entries = data.get("tokens")
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        where = _entry(loc[1], entry.get("name") if isinstance(entry, dict) else None)
        key = ".".join(str(p) for p in loc[2:])
    else:
        where, key = "", ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        problem = f"unknown key `{key}` (remove it or check its spelling)"
    elif error["type"] == "enum":
        problem = f"`{key}`: unknown scope; the scopes are {', '.join(s.value for s in Scope)}"
    elif key:
        problem = f"`{key}`: {error['msg'].removeprefix('Value error, ')}"
    else:
        problem = error["msg"].removeprefix("Value error, ")
    return f"{where}: {problem}" if where else problem


def read_tokens_file(path: Path) -> TokensFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"cannot read the tokens file {path}: {err.strerror or err}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"the tokens file {path} is not valid YAML: {err}") from None
    try:
        return parse_tokens(data)
    except ConfigError as err:
        raise ConfigError(f"the tokens file {path}: {err}") from None


class Tokens:
    """The entries of one version of the file, with their digests as bytes."""

    def __init__(self, file: TokensFile) -> None:
        self.entries = file.tokens
        self._digests = [(bytes.fromhex(e.sha256), e) for e in file.tokens]

    def identify(self, token: str) -> TokenEntry | None:
        """The entry whose digest is the token's, comparing with every entry in constant time.

        Timing: the presented token is hashed once (SHA-256 time depends only on its length, which the client
        chose), then its digest is compared with every configured digest by `hmac.compare_digest`, without
        stopping at a match, so the time depends on the number of entries only: not on which entry matched,
        whether one did, or how many leading bytes agree. A dict keyed by digest would also be safe in practice
        (a timing leak there could only reveal bytes of a digest, and a digest does not lead to its token), but
        this loop needs no such argument and costs well under a microsecond per entry."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for candidate, entry in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = entry
        return found

    def __len__(self) -> int:
        return len(self.entries)


class TokenStore:
    """The tokens of `path`, read again when the file changes (checked at most every `check_seconds`, when a
    request asks). A file that does not read or validate on reload keeps the last good tokens and logs an
    ERROR; at start-up it is a `ConfigError`."""

    def __init__(
        self, path: Path, check_seconds: float = RELOAD_CHECK_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self.clock = clock
        self._signature = signature(path)
        self._tokens = Tokens(read_tokens_file(path))
        self._checked = clock()
        log.info("auth tokens loaded", extra={"path": str(path), "tokens": [e.name for e in self._tokens.entries]})

    def current(self) -> Tokens:
        now = self.clock()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            self._reload_if_changed()
        return self._tokens

    def _reload_if_changed(self) -> None:
        seen = signature(self.path)
        if seen == self._signature:
            return
        self._signature = seen  # a broken file is reported once, not at every check
        try:
            tokens = Tokens(read_tokens_file(self.path))
        except ConfigError as err:
            log.error("auth tokens file not reloaded; the last good tokens stay in force", extra={"error": str(err)})
            return
        before = {e.name for e in self._tokens.entries}
        self._tokens = tokens
        after = {e.name for e in tokens.entries}
        log.info(
            "auth tokens reloaded",
            extra={
                "path": str(self.path),
                "tokens": sorted(after),
                "added": sorted(after - before),
                "removed": sorted(before - after),
            },
        )


class InFlight:
    """Calls in flight per token name, against each token's `max_concurrent_requests`. The count is by name, so
    it carries over a reload (the new limit applies to new calls). One event loop: no lock."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def enter(self, entry: TokenEntry) -> None:
        limit = entry.max_concurrent_requests
        count = self._counts.get(entry.name, 0)
        if limit is not None and count >= limit:
            raise QuotaExceededError(
                f"token {entry.name!r} already has {count} requests in flight (its max_concurrent_requests is "
                f"{limit}); retry when one has finished"
            )
        self._counts[entry.name] = count + 1

    def leave(self, name: str) -> None:
        count = self._counts.get(name, 0) - 1
        if count > 0:
            self._counts[name] = count
        else:
            self._counts.pop(name, None)

    def count(self, name: str) -> int:
        return self._counts.get(name, 0)


def bearer_token(values: list[str]) -> str:
    """The token from the `authorization` metadata values; `UnauthenticatedError` when there is none or it
    does not read as `Bearer <token>` (the scheme is case-insensitive, RFC 7235)."""
    if not values:
        raise UnauthenticatedError(NO_TOKEN)
    if len(values) > 1:
        raise UnauthenticatedError(MALFORMED)
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
        raise UnauthenticatedError(MALFORMED)
    return token


def identify(tokens: Tokens, values: list[str]) -> TokenEntry:
    """The entry of the token in the `authorization` metadata values; `UnauthenticatedError` when there is no
    token, it is malformed, or it is not known."""
    entry = tokens.identify(bearer_token(values))
    if entry is None:
        raise UnauthenticatedError(UNKNOWN_TOKEN)
    return entry


def require(entry: TokenEntry, scope: Scope, method: str) -> None:
    """`PermissionDeniedError` unless the token holds `scope`."""
    if scope not in entry.scopes:
        raise PermissionDeniedError(f"token {entry.name!r} lacks the {scope.value!r} scope, which {method} needs")
