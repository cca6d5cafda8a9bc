"""Certificate rotation without a restart: the files change, the next new connection gets the new certificate,
connections already open keep working, and a broken or half-written set keeps the last good certificate."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from service.grpc.tls import DynamicCredentials
from service.tls import CertificateFiles
from tests.conftest import RunningServer, start_server
from tests.security.certs import CertAuthority, Issued, broken_pairs, replace_server_files, write_each_broken_pair
from tests.security.tls_clients import channel, presented_certificate, refused, server_live


@pytest.fixture
def server(repo: Path, first: Issued, tmp_path: Path) -> Iterator[RunningServer]:
    cert, key = first.write(tmp_path, "server")
    running = start_server(repo, tls_cert_file=cert, tls_key_file=key)
    yield running
    running.stop()


def _serial(server: RunningServer) -> int:
    return presented_certificate(server.app.port).serial_number


@pytest.mark.parametrize("in_place", [True, False], ids=["overwritten", "renamed-over"])
def test_new_connections_get_the_new_certificate_and_open_ones_keep_working(
    server: RunningServer, ca: CertAuthority, first: Issued, tmp_path: Path, in_place: bool
) -> None:
    assert _serial(server) == first.serial
    with channel(server.address, ca.cert) as opened:
        assert server_live(opened)
        second = ca.server("second")
        replace_server_files(tmp_path, second, in_place)
        assert _serial(server) == second.serial  # the first new connection after the files changed
        assert server_live(opened)  # the connection opened before keeps its session
        assert refused(server.address, ca.cert) is None


def test_rotation_to_a_certificate_from_another_ca(server: RunningServer, ca: CertAuthority, tmp_path: Path) -> None:
    other = CertAuthority("the next CA")
    replace_server_files(tmp_path, other.server(), in_place=False)
    assert refused(server.address, other.cert) is None
    assert refused(server.address, ca.cert) is grpc.StatusCode.UNAVAILABLE


def test_a_broken_or_half_written_pair_keeps_the_last_good_certificate(
    server: RunningServer, ca: CertAuthority, first: Issued, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    second = ca.server("second")

    def still_serves(problem: str) -> None:
        assert _serial(server) == first.serial, problem
        assert refused(server.address, ca.cert) is None, problem

    with caplog.at_level(logging.WARNING, logger="service.tls"):
        write_each_broken_pair(tmp_path, broken_pairs(first, second), caplog, still_serves)
        cert.write_bytes(second.cert)
        key.unlink()  # removed before the new one is written
        assert _serial(server) == first.serial
    key.write_bytes(second.key)
    assert _serial(server) == second.serial


def test_mutual_tls_client_ca_rotates_too(repo: Path, ca: CertAuthority, tmp_path: Path) -> None:
    cert, key = ca.server().write(tmp_path, "server")
    client_ca = ca.write(tmp_path, "clients")
    running = start_server(repo, tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=client_ca)
    try:
        assert refused(running.address, ca.cert, ca.client()) is None
        new_clients = CertAuthority("new client CA")
        client_ca.write_bytes(new_clients.cert)
        assert refused(running.address, ca.cert, ca.client()) is grpc.StatusCode.UNAVAILABLE
        assert refused(running.address, ca.cert, new_clients.client()) is None
    finally:
        running.stop()


def test_files_are_read_again_only_when_their_stat_changes(ca: CertAuthority, tmp_path: Path) -> None:
    first = ca.server("first")
    cert, key = first.write(tmp_path, "server")
    files = CertificateFiles(cert, key)
    served = files.current
    assert files.refresh() is served
    cert.write_bytes(first.cert)  # rewritten with the same contents: read again, nothing new to serve
    assert files.refresh() is served
    assert files.reloads == 0
    ca.server("second").write(tmp_path, "server")
    reloaded = files.refresh()
    assert reloaded is not served and reloaded.cert != served.cert
    assert files.refresh() is reloaded
    assert files.reloads == 1


def test_grpc_gets_a_rotation_another_port_saw_first(ca: CertAuthority, tmp_path: Path) -> None:
    """Both ports share one `CertificateFiles`: the HTTP port's handshake may be the one that reads the new files."""
    files = CertificateFiles(*ca.server("first").write(tmp_path, "server"))
    grpc_side = DynamicCredentials(files)
    assert grpc_side.fetch() is None
    ca.server("second").write(tmp_path, "server")
    files.refresh()  # as the HTTP port's handshake does
    assert grpc_side.fetch() is not None
    assert grpc_side.fetch() is None


def test_an_unchanged_check_costs_microseconds(ca: CertAuthority, tmp_path: Path) -> None:
    """`refresh` runs before every new connection's handshake, holding the GIL."""
    files = CertificateFiles(*ca.server().write(tmp_path, "server"), ca.write(tmp_path))
    start = time.perf_counter()
    for _ in range(1000):
        files.refresh()
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 1e-3, f"{per_call * 1e6:.0f} µs per unchanged check"
