"""Clients against a server with tokens, over plaintext and TLS: tritonclient with an `authorization` header,
the Python `TaskClient` with `token=`, and `deepserve sentiment --token` / `DEEPSERVE_TOKEN` as a subprocess."""

from __future__ import annotations

import hashlib
import secrets
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tc
import yaml
from tritonclient.utils import InferenceServerException

from service.client import ClientError, TaskClient
from tests.conftest import RunningServer, start_server
from tests.ops.servers import deepserve
from tests.security.certs import CertAuthority
from tests.tiny_models import make_repository
from tests.tiny_task_models import write_sentiment

TOKEN = f"reader-{secrets.token_urlsafe(24)}"
ADMIN = f"ops-{secrets.token_urlsafe(24)}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("auth-clients")
    ca = CertAuthority()
    ca.write(folder)
    ca.server().write(folder, "server")
    entries = [
        {"name": "reader", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "scopes": ["infer"]},
        {"name": "ops", "sha256": hashlib.sha256(ADMIN.encode()).hexdigest(), "scopes": ["admin"]},
    ]
    (folder / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    make_repository(folder / "models", ("add_sub",))
    write_sentiment(folder / "models")
    return folder


@pytest.fixture(scope="module")
def plain(files: Path) -> Iterator[RunningServer]:
    running = start_server(files / "models", auth_tokens_file=files / "tokens.yaml", model_control_mode="explicit")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tls(files: Path) -> Iterator[RunningServer]:
    running = start_server(
        files / "models",
        auth_tokens_file=files / "tokens.yaml",
        model_control_mode="explicit",
        tls_cert_file=files / "server.crt",
        tls_key_file=files / "server.key",
    )
    yield running
    running.stop()


def add_sub_inputs() -> list[tc.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = tc.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        inputs.append(tensor)
    return inputs


def check_tritonclient(client: tc.InferenceServerClient) -> None:
    reader, ops = {"authorization": f"Bearer {TOKEN}"}, {"authorization": f"Bearer {ADMIN}"}
    assert client.is_server_live() and client.is_server_ready()  # open
    result = client.infer("add_sub", add_sub_inputs(), headers=reader)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2, dtype=np.float32))
    assert client.get_model_metadata("add_sub", headers=reader).name == "add_sub"
    assert client.is_model_ready("add_sub", headers=reader)
    client.load_model("add_sub", headers=ops)
    for call, status in (
        (lambda: client.infer("add_sub", add_sub_inputs()), "StatusCode.UNAUTHENTICATED"),
        (lambda: client.load_model("add_sub", headers=reader), "StatusCode.PERMISSION_DENIED"),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == status


def test_tritonclient_with_an_authorization_header(plain: RunningServer) -> None:
    check_tritonclient(tc.InferenceServerClient(plain.address))


def test_tritonclient_with_tls_and_an_authorization_header(tls: RunningServer, files: Path) -> None:
    check_tritonclient(tc.InferenceServerClient(tls.address, ssl=True, root_certificates=str(files / "ca.crt")))


def test_task_client_sends_the_token(plain: RunningServer) -> None:
    with TaskClient(plain.address, token=TOKEN) as client:
        assert client.analyze(["a lovely day"]).model == "tiny_sentiment"
    for token, code in ((None, "UNAUTHENTICATED"), (ADMIN, "PERMISSION_DENIED"), ("nope", "UNAUTHENTICATED")):
        with TaskClient(plain.address, token=token) as client, pytest.raises(ClientError) as info:
            client.analyze(["a lovely day"])
        assert info.value.code.name == code


def test_task_client_with_tls_and_a_token(tls: RunningServer, files: Path) -> None:
    with TaskClient(tls.address, token=TOKEN, tls_ca_file=files / "ca.crt") as client:
        assert client.analyze(["a lovely day"]).model == "tiny_sentiment"
    with TaskClient(tls.address, token=TOKEN) as client, pytest.raises(ClientError) as info:  # plaintext: refused
        client.analyze(["a lovely day"])
    assert info.value.code.name == "UNAVAILABLE"


def test_task_client_warns_before_sending_a_token_in_clear_off_this_machine() -> None:
    with pytest.warns(UserWarning, match="without TLS"):
        TaskClient("infer.example.com:8001", token=TOKEN).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TaskClient("127.0.0.1:8001", token=TOKEN).close()
        TaskClient("dns:///localhost:8001", token=TOKEN).close()
        TaskClient("infer.example.com:8001").close()


@pytest.mark.parametrize("token", ["two words", "line\nbreak", ""])
def test_task_client_refuses_a_token_that_cannot_be_sent(token: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        TaskClient("127.0.0.1:8001", token=token)


def test_task_client_needs_the_key_with_a_client_certificate(files: Path) -> None:
    with pytest.raises(ValueError, match="needs its key"):
        TaskClient("127.0.0.1:8001", tls_cert_file=files / "server.crt")


def test_cli_with_token_and_tls(tls: RunningServer, files: Path) -> None:
    ca = ("--tls-ca-file", str(files / "ca.crt"))
    done = deepserve("sentiment", "--server", tls.address, *ca, "--token", TOKEN, "a lovely day")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\ta lovely day\n")
    done = deepserve("sentiment", "--server", tls.address, *ca, "a lovely day", env={"DEEPSERVE_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_cli_without_token(plain: RunningServer) -> None:
    done = deepserve("sentiment", "--server", plain.address, "a lovely day")
    assert done.returncode == 7
    assert "unauthenticated: no credentials" in done.stderr and "pass --token or set DEEPSERVE_TOKEN" in done.stderr


def test_cli_reports_unreadable_tls_files(tmp_path: Path) -> None:
    from service.cli import main

    missing = str(tmp_path / "nope.pem")
    assert main(["sentiment", "--tls-ca-file", missing, "x"]) == 2
