"""Shared by the security tests: a plaintext channel to the module's `server` fixture (each test module starts the
server it needs), a certificate authority, a one-model repository and a first server certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import RunningServer
from tests.security.certs import CertAuthority, Issued
from tests.tiny_models import make_repository


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("models"), ("add_sub",))


@pytest.fixture
def first(ca: CertAuthority) -> Issued:
    return ca.server("first")
