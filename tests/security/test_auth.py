"""Bearer tokens with scopes against a real server: the token-by-scope matrix on every RPC group, per-token
concurrency limits, reloading the tokens file, model control none/explicit, and a log that never holds a
token or a digest."""

from __future__ import annotations

import io
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.grpc._generated.deepserve.v1 import text_generator_pb2 as tg
from service.grpc._generated.deepserve.v1 import text_generator_pb2_grpc as tg_grpc
from service.logs import JsonFormatter
from tests.conftest import RunningServer, start_server
from tests.security.auth_calls import (
    BURST_LIMIT,
    CREDENTIALS,
    RPCS,
    SCOPES,
    TOKENS,
    WHEN_ALLOWED,
    Code,
    Metadata,
    digest,
    infer_request,
    status,
    tokens_file,
    v2_call,
)
from tests.tiny_models import make_repository
from tests.tiny_task_models import make_task_repository
from tests.waiting import eventually


@pytest.fixture(scope="module")
def log() -> Iterator[io.StringIO]:
    """Every log line of this module's servers, at DEBUG, as the server writes them (JSON with extras)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(make_task_repository(tmp_path_factory.mktemp("models")), ("add_sub", "fp16_double"))


@pytest.fixture(scope="module")
def server(repo: Path, log: io.StringIO, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    path = tokens_file(tmp_path_factory.mktemp("auth") / "tokens.yaml")
    running = start_server(repo, auth_tokens_file=path, model_control_mode="explicit")
    yield running
    running.stop()


def expected(rpc: str, scope: str | None, credential: str) -> Code:
    if scope is None:
        return Code.OK
    if credential not in SCOPES:
        return Code.UNAUTHENTICATED
    if scope not in SCOPES[credential]:
        return Code.PERMISSION_DENIED
    return WHEN_ALLOWED.get(rpc, Code.OK)


@pytest.mark.parametrize("credential", list(CREDENTIALS))
@pytest.mark.parametrize("rpc", list(RPCS))
def test_token_scope_matrix(channel: grpc.Channel, rpc: str, credential: str) -> None:
    scope, call = RPCS[rpc]
    code, message = status(call, channel, CREDENTIALS[credential])
    assert code == expected(rpc, scope, credential), message
    if code is Code.UNAUTHENTICATED:
        assert message == {
            "none": "no credentials: send the metadata `authorization: Bearer <token>`",
            "malformed": "malformed authorization metadata: send exactly one `authorization: Bearer <token>`",
        }.get(credential, "the bearer token is not valid for this server")
    if code is Code.PERMISSION_DENIED:
        assert message == f"token {credential!r} lacks the {scope!r} scope, which /{_service(rpc)}/{rpc} needs"


def _service(rpc: str) -> str:
    return {
        "Classify": "deepserve.v1.ImageClassifier",
        "Analyze": "deepserve.v1.SentimentAnalyzer",
        "Generate": "deepserve.v1.TextGenerator",
    }.get(rpc, "inference.GRPCInferenceService")


def test_two_authorization_values_are_malformed(channel: grpc.Channel) -> None:
    md = (*CREDENTIALS["reader"], *CREDENTIALS["both"])
    assert status(RPCS["ModelMetadata"][1], channel, md)[0] is Code.UNAUTHENTICATED


def test_the_scheme_is_case_insensitive(channel: grpc.Channel) -> None:
    md = (("authorization", f"bearer {TOKENS['reader']}"),)
    assert status(RPCS["ModelMetadata"][1], channel, md)[0] is Code.OK


def test_refused_requests_are_not_parsed(channel: grpc.Channel) -> None:
    """A caller without a token learns nothing from the request's shape: not even that it does not parse."""
    garbage = b"\xff\xff\xff"
    method = channel.unary_unary("/deepserve.v1.SentimentAnalyzer/Analyze")
    with pytest.raises(grpc.RpcError) as info:
        method(garbage, timeout=10)
    assert info.value.code() is Code.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        method(garbage, metadata=CREDENTIALS["reader"], timeout=10)
    assert info.value.code() is Code.INVALID_ARGUMENT


# ---- per-token concurrency -----------------------------------------------------------------------------
BURST = (("authorization", f"Bearer {TOKENS['burst']}"),)


def slow_stream(ch: grpc.Channel) -> grpc.Call:
    call = tg_grpc.TextGeneratorStub(ch).Generate(
        tg.GenerateRequest(prompt="the", max_new_tokens=2000, temperature=0.0, model_name="slow_lm"),
        metadata=BURST,
        timeout=60,
    )
    next(call)  # the stream is running: it counts
    return call  # type: ignore[no-any-return]


def test_max_concurrent_requests(server: RunningServer, channel: grpc.Channel) -> None:
    assert server.app.authorizer is not None
    in_flight = server.app.authorizer.in_flight
    analyze = RPCS["Analyze"][1]
    assert status(analyze, channel, BURST)[0] is Code.OK and in_flight.count("burst") == 0  # a unary call ends
    first, second = slow_stream(channel), slow_stream(channel)
    try:
        assert in_flight.count("burst") == BURST_LIMIT
        code, message = status(analyze, channel, BURST)
        assert code is Code.RESOURCE_EXHAUSTED
        assert message.startswith(f"token 'burst' already has {BURST_LIMIT} requests in flight")
        assert status(analyze, channel, CREDENTIALS["reader"])[0] is Code.OK  # other tokens are not held back
        first.cancel()  # a cancelled stream frees its place
        assert eventually(lambda: in_flight.count("burst") == 1, timeout=10.0)
        assert status(analyze, channel, BURST)[0] is Code.OK
    finally:
        first.cancel()
        second.cancel()
    assert eventually(lambda: in_flight.count("burst") == 0, timeout=10.0)


def test_a_stream_that_ends_frees_its_place(server: RunningServer, channel: grpc.Channel) -> None:
    assert server.app.authorizer is not None
    for _ in range(2 * BURST_LIMIT):  # sequential streams to the end never hit the limit
        request = tg.GenerateRequest(prompt="the", max_new_tokens=3, model_name="tiny_lm")
        replies = list(tg_grpc.TextGeneratorStub(channel).Generate(request, metadata=BURST, timeout=30))
        assert replies[-1].WhichOneof("event") == "finished"
    assert server.app.authorizer.in_flight.count("burst") == 0


def test_refused_and_failed_calls_free_their_place(server: RunningServer, channel: grpc.Channel) -> None:
    assert server.app.authorizer is not None
    for _ in range(2 * BURST_LIMIT):
        code, _ = status(v2_call("ModelInfer", infer_request("no_such_model")), channel, BURST)
        assert code is Code.NOT_FOUND
    assert server.app.authorizer.in_flight.count("burst") == 0


# ---- reloading the tokens file -------------------------------------------------------------------------
@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "models", ("add_sub",))


def metadata_status(address: str, token: str) -> Code:
    with grpc.insecure_channel(address) as ch:
        return status(RPCS["ModelMetadata"][1], ch, (("authorization", f"Bearer {token}"),))[0]


def test_token_file_reload(small_repo: Path, tmp_path: Path, log: io.StringIO) -> None:
    path = tokens_file(tmp_path / "tokens.yaml", ("reader", "ops"))
    running = start_server(small_repo, auth_tokens_file=path)
    try:
        fresh = f"fresh-{secrets.token_urlsafe(24)}"
        assert metadata_status(running.address, fresh) is Code.UNAUTHENTICATED
        tokens_file(path, ("ops",), extra={"fresh": fresh})  # adds one, removes reader
        assert eventually(lambda: metadata_status(running.address, fresh) is Code.OK, timeout=5)
        assert metadata_status(running.address, TOKENS["reader"]) is Code.UNAUTHENTICATED

        path.write_text("tokens: [{name: broken, sha256: 1234, scopes: [infer]}]\n")  # broken: keeps the last good
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert metadata_status(running.address, fresh) is Code.OK
            time.sleep(0.1)
        assert "auth tokens file not reloaded; the last good tokens stay in force" in log.getvalue()
        assert "tokens[0] (name 'broken'): `sha256`" in log.getvalue()

        tokens_file(path, ("reader",))  # repaired: applies again
        assert eventually(lambda: metadata_status(running.address, TOKENS["reader"]) is Code.OK, timeout=5)
        assert metadata_status(running.address, fresh) is Code.UNAUTHENTICATED
    finally:
        running.stop()


def test_file_replaced_through_a_symlink(small_repo: Path, tmp_path: Path) -> None:
    """How Kubernetes updates a mounted Secret: the file is a symlink, and a new target is swapped in."""
    first, second, link = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "tokens.yaml"
    tokens_file(first, ("reader",))
    tokens_file(second, ("both",))
    link.symlink_to(first)
    running = start_server(small_repo, auth_tokens_file=link)
    try:
        assert metadata_status(running.address, TOKENS["reader"]) is Code.OK
        swap = tmp_path / "swap"
        swap.symlink_to(second)
        swap.replace(link)
        assert eventually(lambda: metadata_status(running.address, TOKENS["both"]) is Code.OK, timeout=5)
        assert metadata_status(running.address, TOKENS["reader"]) is Code.UNAUTHENTICATED
    finally:
        running.stop()


# ---- model control -------------------------------------------------------------------------------------
def control_calls(address: str, md: Metadata) -> list[tuple[Code, str]]:
    with grpc.insecure_channel(address) as ch:
        return [status(RPCS[rpc][1], ch, md) for rpc in ("RepositoryModelLoad", "RepositoryModelUnload")]


def test_model_control_is_off_by_default(small_repo: Path) -> None:
    running = start_server(small_repo)
    try:
        make_repository(small_repo, ("fp16_double",))
        for code, message in control_calls(running.address, ()):
            assert code is Code.FAILED_PRECONDITION
            assert "model control is off" in message and "--model-control-mode explicit" in message
        assert not running.app.registry.is_ready("fp16_double", "")
        assert running.app.registry.is_ready("add_sub", "")
    finally:
        running.stop()


def test_model_control_off_with_tokens(small_repo: Path, tmp_path: Path) -> None:
    """Credentials are checked first (a caller without them learns nothing of the settings); then the mode."""
    running = start_server(small_repo, auth_tokens_file=tokens_file(tmp_path / "tokens.yaml"))
    try:
        assert [c for c, _ in control_calls(running.address, ())] == [Code.UNAUTHENTICATED] * 2
        assert [c for c, _ in control_calls(running.address, CREDENTIALS["reader"])] == [Code.PERMISSION_DENIED] * 2
        assert [c for c, _ in control_calls(running.address, CREDENTIALS["ops"])] == [Code.FAILED_PRECONDITION] * 2
    finally:
        running.stop()


def test_explicit_without_tokens_warns_and_allows(small_repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        running = start_server(small_repo, model_control_mode="explicit")
    try:
        make_repository(small_repo, ("fp16_double",))
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "model-control-mode" in r.message]
        assert warnings and "anyone who can reach the port can load and unload models" in warnings[0].message
        assert [c for c, _ in control_calls(running.address, ())] == [Code.OK, Code.OK]
    finally:
        running.stop()


def test_admin_calls_are_logged_with_the_token_name(channel: grpc.Channel, log: io.StringIO) -> None:
    assert status(RPCS["RepositoryModelLoad"][1], channel, CREDENTIALS["ops"])[0] is Code.OK
    lines = [line for line in log.getvalue().splitlines() if '"model load requested"' in line]
    assert lines and '"token": "ops"' in lines[-1] and "fp16_double" in lines[-1]


# ---- the log -------------------------------------------------------------------------------------------
def test_refusals_are_logged_by_token_name(log: io.StringIO) -> None:
    text = log.getvalue()
    assert '"refused a call: credentials"' in text
    assert '"token": "reader"' in text and '"status": "PERMISSION_DENIED"' in text
    assert '"token": "burst"' in text and '"status": "RESOURCE_EXHAUSTED"' in text


def test_the_log_never_holds_a_token_or_digest(log: io.StringIO) -> None:
    """Last in the module: every server above has logged into `log` by now."""
    text = log.getvalue()
    assert text
    secrets_ = [*TOKENS.values(), *(v for md in CREDENTIALS.values() for _, v in md)]
    for value in secrets_:
        for form in (value, value.split(" ", 1)[-1], digest(value.split(" ", 1)[-1])):
            assert form not in text, form
