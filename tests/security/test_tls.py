"""TLS and mutual TLS on the gRPC port with real certificates, and the plaintext health port beside it."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from service.app import App
from service.config import ServerSettings
from tests.conftest import RunningServer, start_server
from tests.security.certs import CertAuthority
from tests.security.tls_clients import channel, handshake, presented_certificate, refused, server_live

V2 = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def other_ca() -> CertAuthority:
    return CertAuthority("another CA")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, ca: CertAuthority) -> Path:
    folder = tmp_path_factory.mktemp("tls")
    ca.write(folder)
    ca.server().write(folder, "server")
    ca.client().write(folder, "client")
    return folder


@pytest.fixture(scope="module")
def tls_server(repo: Path, files: Path) -> Iterator[RunningServer]:
    running = start_server(repo, tls_cert_file=files / "server.crt", tls_key_file=files / "server.key", health_port=0)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(repo: Path, files: Path) -> Iterator[RunningServer]:
    running = start_server(
        repo, tls_cert_file=files / "server.crt", tls_key_file=files / "server.key", tls_client_ca_file=files / "ca.crt"
    )
    yield running
    running.stop()


def test_plaintext_refused_on_the_tls_port(tls_server: RunningServer) -> None:
    assert refused(tls_server.address) is grpc.StatusCode.UNAVAILABLE


def test_client_trusting_the_ca_accepted(tls_server: RunningServer, ca: CertAuthority) -> None:
    assert refused(tls_server.address, ca.cert) is None


def test_client_trusting_another_ca_refused(tls_server: RunningServer, other_ca: CertAuthority) -> None:
    assert refused(tls_server.address, other_ca.cert) is grpc.StatusCode.UNAVAILABLE


def test_expired_server_certificate_refused(repo: Path, ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.server(expired=True).write(tmp_path, "expired")
    running = start_server(repo, tls_cert_file=cert, tls_key_file=key)
    try:
        assert refused(running.address, ca.cert) is grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


def test_mutual_tls_client_without_certificate_refused(mtls_server: RunningServer, ca: CertAuthority) -> None:
    assert refused(mtls_server.address, ca.cert) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_client_certificate_from_another_ca_refused(
    mtls_server: RunningServer, ca: CertAuthority, other_ca: CertAuthority
) -> None:
    assert refused(mtls_server.address, ca.cert, other_ca.client()) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_client_with_a_good_certificate_accepted(mtls_server: RunningServer, ca: CertAuthority) -> None:
    assert refused(mtls_server.address, ca.cert, ca.client()) is None


def _add_sub(client: tc.InferenceServerClient) -> np.ndarray:
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    inputs = [tc.InferInput("INPUT0", [1, 4], "FP32"), tc.InferInput("INPUT1", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(a)
    result = client.infer("add_sub", inputs, client_timeout=10)
    return result.as_numpy("OUTPUT0")


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tritonclient_works_unchanged(request: pytest.FixtureRequest, files: Path, mutual: bool) -> None:
    server: RunningServer = request.getfixturevalue("mtls_server" if mutual else "tls_server")
    client_files = {"private_key": str(files / "client.key"), "certificate_chain": str(files / "client.crt")}
    client = tc.InferenceServerClient(
        server.address, ssl=True, root_certificates=str(files / "ca.crt"), **(client_files if mutual else {})
    )
    try:
        assert client.is_server_live()
        assert client.is_model_ready("add_sub")
        np.testing.assert_array_equal(_add_sub(client), np.arange(4, dtype=np.float32).reshape(1, 4) * 2)
    finally:
        client.close()


def _health(address: str, service: str, ca: bytes | None = None) -> int:
    with channel(address, ca) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def test_health_port_answers_plaintext_while_the_main_port_is_tls(tls_server: RunningServer, ca: CertAuthority) -> None:
    health = f"127.0.0.1:{tls_server.app.health_port}"
    assert tls_server.app.health_port not in (None, 0, tls_server.app.port)
    for service in ("", V2):
        assert _health(health, service) == SERVING
        assert _health(tls_server.address, service, ca.cert) == SERVING
    with pytest.raises(grpc.RpcError) as info:
        _health(health, "no.Such")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_health_port_reports_what_the_main_port_reports(tls_server: RunningServer, ca: CertAuthority) -> None:
    health = f"127.0.0.1:{tls_server.app.health_port}"
    tls_server.call(tls_server.app.health.set(V2, NOT_SERVING))
    try:
        assert _health(health, V2) == NOT_SERVING
        assert _health(tls_server.address, V2, ca.cert) == NOT_SERVING
    finally:
        tls_server.call(tls_server.app.health.set(V2, SERVING))
    assert _health(health, V2) == SERVING


def test_health_port_serves_nothing_else(tls_server: RunningServer) -> None:
    with channel(f"127.0.0.1:{tls_server.app.health_port}") as ch:
        with pytest.raises(grpc.RpcError) as info:
            server_live(ch)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(ch).get_services()
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_health_port_starts_and_stops_with_the_app(repo: Path) -> None:
    running = start_server(repo, health_port=0)
    health = f"127.0.0.1:{running.app.health_port}"
    assert _health(health, "") == SERVING
    running.stop()
    assert refused(health) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_handshake_presents_the_configured_certificate(mtls_server: RunningServer, files: Path) -> None:
    presented = presented_certificate(mtls_server.app.port, (files / "client.crt", files / "client.key"))
    assert presented.public_bytes(Encoding.PEM) == (files / "server.crt").read_bytes()


def test_tls_below_1_2_refused(tls_server: RunningServer) -> None:
    assert handshake(tls_server.app.port, ssl.TLSVersion.TLSv1_3, ["h2"]) == "TLSv1.3"
    assert handshake(tls_server.app.port, ssl.TLSVersion.TLSv1_2, ["h2"]) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(tls_server.app.port, old, ["h2"])


async def test_health_port_in_use_is_a_clear_error(repo: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = ServerSettings(
            model_repository=repo,
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            http_port=0,
            health_port=taken.getsockname()[1],
        )
        with pytest.raises(OSError, match=r"^cannot bind health port 127\.0\.0\.1:\d+ \(in use\); .* --health-port "):
            App(settings)
