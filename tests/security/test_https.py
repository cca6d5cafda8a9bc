"""HTTPS on the HTTP port with real certificates: the gRPC port's files, tokens over it, mutual TLS, TLS 1.2 or newer,
and certificate rotation without a restart (the files change, the next new connection on either port gets the new
certificate, connections already open keep working, a broken set keeps the last good certificate)."""

from __future__ import annotations

import http.client
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as tc

from tests.conftest import FREE_PORT, RunningServer, start_server
from tests.http_tokens import TOKEN, tokens_file
from tests.security.certs import CertAuthority, Issued, broken_pairs, replace_server_files, write_each_broken_pair
from tests.security.tls_clients import handshake, presented_certificate, refused

RELOADED = "TLS certificate reloaded; new connections get it"
REFUSED = (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)
"""What a client sees of a connection the server would not take (the handshake, or the first read after it)."""


@pytest.fixture
def server(repo: Path, first: Issued, tmp_path: Path) -> Iterator[RunningServer]:
    cert, key = first.write(tmp_path, "server")
    running = start_server(
        repo, tls_cert_file=cert, tls_key_file=key, http_port=FREE_PORT, auth_tokens_file=tokens_file(tmp_path)
    )
    yield running
    running.stop()


def _port(server: RunningServer) -> int:
    assert server.app.http_port is not None
    return server.app.http_port


def _connection(
    port: int, ca: bytes, client: Issued | None = None, folder: Path | None = None
) -> http.client.HTTPSConnection:
    """A verifying HTTPS connection (not yet open) that trusts `ca`, presenting `client` under mutual TLS."""
    context = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        assert folder is not None
        context.load_cert_chain(*client.write(folder, "client"))
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)


def _get(connection: http.client.HTTPConnection, path: str, token: str | None = None) -> int:
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def _status(port: int, ca: bytes, path: str = "/v2/health/live", **client: object) -> int:
    """The status of GET `path` over a new verifying connection (raises what the client saw when it fails)."""
    connection = _connection(port, ca, **client)  # type: ignore[arg-type]
    try:
        return _get(connection, path)
    finally:
        connection.close()


def _serials(server: RunningServer) -> tuple[int, int, int]:
    """The certificate a new HTTPS connection gets, with and without SNI, then a new gRPC connection."""
    port = _port(server)
    return (
        presented_certificate(port, alpn="http/1.1").serial_number,
        presented_certificate(port, alpn="http/1.1", server_name=None).serial_number,
        presented_certificate(server.app.port).serial_number,
    )


def test_https_serves_v2_with_tokens_and_refuses_plain_http(
    server: RunningServer, ca: CertAuthority, tmp_path: Path
) -> None:
    ca_file = ca.write(tmp_path)
    client = tc.InferenceServerClient(f"localhost:{_port(server)}", ssl=True, ssl_options={"ca_certs": str(ca_file)})
    try:
        assert client.is_server_ready()
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            tensor = tc.InferInput(name, [1, 4], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            inputs.append(tensor)
        result = client.infer("add_sub", inputs, headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2, dtype=np.float32))
    finally:
        client.close()
    connection = _connection(_port(server), ca.cert)
    assert _get(connection, "/v2/models/add_sub") == 401  # the tokens hold over HTTPS
    assert _get(connection, "/v2/models/add_sub", TOKEN) == 200
    connection.close()
    plain = http.client.HTTPConnection("127.0.0.1", _port(server), timeout=10)
    with pytest.raises(REFUSED):
        _get(plain, "/v2/health/live")  # the port speaks only TLS
    plain.close()


@pytest.mark.parametrize("in_place", [True, False], ids=["overwritten", "renamed-over"])
def test_new_connections_on_both_ports_get_the_new_certificate_and_open_ones_keep_working(
    server: RunningServer,
    ca: CertAuthority,
    first: Issued,
    tmp_path: Path,
    in_place: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _serials(server) == (first.serial,) * 3
    opened = _connection(_port(server), ca.cert)
    assert _get(opened, "/v2/health/ready") == 200
    second = ca.server("second")
    with caplog.at_level(logging.INFO, logger="service.tls"):
        replace_server_files(tmp_path, second, in_place)
        assert _serials(server) == (second.serial,) * 3  # HTTPS took the new files first; gRPC gets them too
    assert [r.message for r in caplog.records if r.name == "service.tls"] == [RELOADED]  # one watcher, both ports
    assert server.app.certificates is not None and server.app.certificates.reloads == 1
    assert _get(opened, "/v2/health/ready") == 200  # the connection opened before keeps its session
    assert _status(_port(server), ca.cert) == 200  # a verifying client accepts the new certificate
    opened.close()


def test_rotation_to_a_certificate_from_another_ca(server: RunningServer, ca: CertAuthority, tmp_path: Path) -> None:
    other = CertAuthority("the next CA")
    replace_server_files(tmp_path, other.server(), in_place=False)
    assert _status(_port(server), other.cert) == 200
    with pytest.raises(ssl.SSLCertVerificationError):
        _status(_port(server), ca.cert)
    assert refused(server.address, other.cert) is None  # and gRPC, after HTTPS took the files first


def test_a_broken_or_half_written_pair_keeps_the_last_good_certificate(
    server: RunningServer, ca: CertAuthority, first: Issued, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    second = ca.server("second")
    problems = ("certificate written, key not yet", "key half written", "empty files")
    broken = {problem: pair for problem, pair in broken_pairs(first, second).items() if problem in problems}

    def still_serves(problem: str) -> None:
        assert presented_certificate(_port(server), alpn="http/1.1").serial_number == first.serial, problem
        assert _status(_port(server), ca.cert) == 200, problem

    with caplog.at_level(logging.WARNING, logger="service.tls"):
        write_each_broken_pair(tmp_path, broken, caplog, still_serves)
    second.write(tmp_path, "server")
    assert presented_certificate(_port(server), alpn="http/1.1").serial_number == second.serial


def test_mutual_tls_on_https_and_its_client_ca_rotates(repo: Path, ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.server().write(tmp_path, "server")
    client_ca = ca.write(tmp_path, "clients")
    running = start_server(
        repo, tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=client_ca, http_port=FREE_PORT
    )
    port = _port(running)
    try:
        assert _status(port, ca.cert, client=ca.client(), folder=tmp_path) == 200
        with pytest.raises(REFUSED):
            _status(port, ca.cert)  # no client certificate
        new_clients = CertAuthority("new client CA")
        with pytest.raises(REFUSED):
            _status(port, ca.cert, client=new_clients.client(), folder=tmp_path)
        client_ca.write_bytes(new_clients.cert)
        with pytest.raises(REFUSED):
            _status(port, ca.cert, client=ca.client(), folder=tmp_path)
        assert _status(port, ca.cert, client=new_clients.client(), folder=tmp_path) == 200
    finally:
        running.stop()


def test_tls_below_1_2_refused_on_https(server: RunningServer) -> None:
    assert handshake(_port(server), ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert handshake(_port(server), ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(_port(server), old)
