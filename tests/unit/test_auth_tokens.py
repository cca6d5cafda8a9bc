"""The tokens file (`service/auth.py`): validation that names the entry, lookup by digest, the bearer header,
reloading with the last good tokens kept, per-token in-flight counts; and the method → scope table."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import yaml
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from service.auth import (
    MALFORMED,
    NO_TOKEN,
    UNKNOWN_TOKEN,
    InFlight,
    Scope,
    Tokens,
    TokenStore,
    bearer_token,
    identify,
    parse_tokens,
    read_tokens_file,
    require,
)
from service.errors import ConfigError, PermissionDeniedError, QuotaExceededError, UnauthenticatedError
from service.grpc.auth import SCOPES, UNLISTED, scope_of
from service.grpc.tasks import SERVICES as TASK_SERVICES
from service.grpc.v2 import SERVICE as V2

SECRET = "s3cret-token-value"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def entry(name: str, token: str, *scopes: str, **more: object) -> dict:
    return {"name": name, "sha256": digest(token), "scopes": list(scopes or ("infer",)), **more}


def config_error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_tokens(data)
    return str(info.value)


def test_a_valid_file_parses() -> None:
    tokens = parse_tokens(
        {"tokens": [entry("ci", SECRET, "infer", max_concurrent_requests=8), entry("ops", "x", "admin")]}
    )
    assert [(e.name, e.scopes, e.max_concurrent_requests) for e in tokens.tokens] == [
        ("ci", (Scope.INFER,), 8),
        ("ops", (Scope.ADMIN,), None),
    ]


def test_digests_are_accepted_in_either_case() -> None:
    data = {"tokens": [{**entry("ci", SECRET), "sha256": digest(SECRET).upper()}]}
    assert parse_tokens(data).tokens[0].sha256 == digest(SECRET)


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"tokens": [entry("ci", SECRET, bogus=1)]}, ["tokens[0] (name 'ci')", "unknown key `bogus`"]),
        (
            {"tokens": [entry("a", "1"), entry("ci", SECRET, "root")]},
            ["tokens[1] (name 'ci')", "unknown scope", "infer, admin"],
        ),
        (
            {"tokens": [{**entry("ci", SECRET), "sha256": "abc"}]},
            ["tokens[0] (name 'ci')", "`sha256`", "64 characters"],
        ),
        ({"tokens": [{**entry("ci", SECRET), "sha256": "g" * 64}]}, ["tokens[0] (name 'ci')", "`sha256`"]),
        ({"tokens": [entry("ci", "1"), entry("ci", "2")]}, ["tokens[1] (name 'ci')", "already used by tokens[0]"]),
        (
            {"tokens": [entry("a", SECRET), entry("b", SECRET)]},
            ["tokens[1] (name 'b')", "same sha256 as tokens[0]", "(name 'a')"],
        ),
        (
            {"tokens": [entry("ci", SECRET, max_concurrent_requests=0)]},
            ["tokens[0] (name 'ci')", "`max_concurrent_requests`"],
        ),
        ({"tokens": [{**entry("ci", SECRET), "scopes": []}]}, ["tokens[0] (name 'ci')", "`scopes`"]),
        ({"tokens": [{"sha256": digest(SECRET), "scopes": ["infer"]}]}, ["tokens[0]", "`name`"]),
        ({"tokens": [entry("has space", SECRET)]}, ["tokens[0] (name 'has space')", "`name`"]),
        ({"tokenz": []}, ["unknown key `tokenz`"]),
        ([], ["must be a mapping with a `tokens` list"]),
    ],
)
def test_mistakes_name_the_entry(data: object, fragments: list[str]) -> None:
    message = config_error(data)
    for fragment in fragments:
        assert fragment in message, message


def test_a_token_pasted_as_its_digest_is_not_echoed() -> None:
    message = config_error({"tokens": [{**entry("ci", SECRET), "sha256": SECRET}]})
    assert SECRET not in message and "sha256sum" in message


def test_no_digest_in_duplicate_messages() -> None:
    assert digest(SECRET) not in config_error({"tokens": [entry("a", SECRET), entry("b", SECRET)]})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    with pytest.raises(ConfigError, match="cannot read the tokens file"):
        read_tokens_file(path)
    path.write_text("tokens: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        read_tokens_file(path)
    path.write_text(yaml.safe_dump({"tokens": [entry("ci", SECRET, "wizard")]}))
    with pytest.raises(ConfigError, match=r"tokens.yaml: tokens\[0\] \(name 'ci'\)"):
        read_tokens_file(path)


def test_identify_finds_the_entry_by_digest() -> None:
    tokens = Tokens(parse_tokens({"tokens": [entry("a", "token-a"), entry("b", "token-b")]}))
    assert tokens.identify("token-b").name == "b"  # type: ignore[union-attr]
    assert tokens.identify("token-a").name == "a"  # type: ignore[union-attr]
    assert tokens.identify("token-c") is None
    assert tokens.identify(digest("token-a")) is None  # the digest is not a token


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], NO_TOKEN),
        (["Basic dXNlcjpwYXNz"], MALFORMED),
        (["Bearer"], MALFORMED),
        (["Bearer "], MALFORMED),
        (["Bearer a b"], MALFORMED),
        (["Bearer a", "Bearer b"], MALFORMED),
        ([SECRET], MALFORMED),
    ],
)
def test_bad_headers_are_unauthenticated(values: list[str], message: str) -> None:
    with pytest.raises(UnauthenticatedError) as info:
        bearer_token(values)
    assert info.value.message == message


def test_the_scheme_is_case_insensitive() -> None:
    assert bearer_token([f"bearer {SECRET}"]) == bearer_token([f"BEARER  {SECRET} "]) == SECRET


def test_identify_then_require_the_scope() -> None:
    tokens = Tokens(parse_tokens({"tokens": [entry("reader", "r", "infer"), entry("ops", "o", "admin")]}))
    reader = identify(tokens, ["Bearer r"])
    assert reader.name == "reader"
    require(reader, Scope.INFER, "/m")
    with pytest.raises(UnauthenticatedError, match=UNKNOWN_TOKEN):
        identify(tokens, ["Bearer nope"])
    with pytest.raises(PermissionDeniedError) as info:
        require(reader, Scope.ADMIN, "/svc/RepositoryModelLoad")
    assert info.value.message == "token 'reader' lacks the 'admin' scope, which /svc/RepositoryModelLoad needs"


def test_in_flight_limit_per_token() -> None:
    tokens = parse_tokens({"tokens": [entry("ci", "c", max_concurrent_requests=2), entry("free", "f")]}).tokens
    limited, free = tokens
    in_flight = InFlight()
    in_flight.enter(limited)
    in_flight.enter(limited)
    with pytest.raises(QuotaExceededError) as info:
        in_flight.enter(limited)
    assert info.value.message.startswith("token 'ci' already has 2 requests in flight")
    for _ in range(100):
        in_flight.enter(free)
    in_flight.leave("ci")
    in_flight.enter(limited)
    assert in_flight.count("ci") == 2
    in_flight.leave("ci")
    in_flight.leave("ci")
    assert in_flight.count("ci") == 0 and "ci" not in in_flight._counts  # no state left for idle tokens


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, *entries: dict) -> None:
    path.write_text(yaml.safe_dump({"tokens": list(entries)}))


def test_store_reloads_a_changed_file_at_most_once_a_check(tmp_path: Path) -> None:
    path, clock = tmp_path / "tokens.yaml", Clock()
    write(path, entry("old", "old-token"))
    store = TokenStore(path, check_seconds=1.0, clock=clock)
    write(path, entry("new", "new-token"), entry("other", "other-token"))
    assert store.current().identify("new-token") is None  # not looked at again yet
    clock.now = 1.0
    assert store.current().identify("new-token") is not None
    assert store.current().identify("old-token") is None


def test_store_keeps_the_last_good_tokens_when_the_file_breaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, clock = tmp_path / "tokens.yaml", Clock()
    write(path, entry("ci", SECRET))
    store = TokenStore(path, check_seconds=1.0, clock=clock)
    for breakage in ("tokens: [\n", yaml.safe_dump({"tokens": [entry("ci", SECRET, "root")]}), None):
        if breakage is None:
            path.unlink()
        else:
            path.write_text(breakage)
        clock.now += 1.0
        with caplog.at_level(logging.ERROR):
            assert store.current().identify(SECRET) is not None
        assert "auth tokens file not reloaded" in caplog.text
        caplog.clear()
    write(path, entry("ci2", "fresh"))
    clock.now += 1.0
    assert store.current().identify("fresh") is not None and store.current().identify(SECRET) is None


def test_store_refuses_a_broken_file_at_start(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    write(path, entry("ci", SECRET, "wizard"))
    with pytest.raises(ConfigError, match=r"tokens\[0\] \(name 'ci'\)"):
        TokenStore(path)


def test_every_method_on_the_port_has_its_scope_in_the_table() -> None:
    """The table names each service or method explicitly: the `admin` default is for RPCs added later."""
    services = {
        V2.full_name: [m.name for m in V2.methods],
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name: ["Check", "Watch"],
        reflection.SERVICE_NAME: ["ServerReflectionInfo"],
        **{name: ["Any"] for name in TASK_SERVICES},
    }
    for service, methods in services.items():
        for method in methods:
            path = f"/{service}/{method}"
            assert path in SCOPES or service in SCOPES, path


def test_scope_decisions() -> None:
    v2 = f"/{V2.full_name}"
    open_ = [
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        f"{v2}/ServerLive",
        f"{v2}/ServerReady",
    ]
    infer = [
        f"{v2}/{m}"
        for m in (
            "ModelInfer",
            "ModelReady",
            "ServerMetadata",
            "ModelMetadata",
            "ModelConfig",
            "ModelStatistics",
            "RepositoryIndex",
        )
    ]
    infer += [f"/{s}/Any" for s in TASK_SERVICES]
    assert [scope_of(m) for m in open_] == [None] * len(open_)
    assert {scope_of(m) for m in infer} == {Scope.INFER}
    assert scope_of(f"{v2}/RepositoryModelLoad") is scope_of(f"{v2}/RepositoryModelUnload") is Scope.ADMIN
    assert scope_of("/deepserve.v2.NewService/Thing") is UNLISTED is Scope.ADMIN
